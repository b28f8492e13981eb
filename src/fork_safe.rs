//! A small mutex that survives `fork`.
//!
//! If one thread forks while another holds a lock, the child inherits the
//! lock held by a thread that does not exist there, and its next look-up
//! deadlocks. `pthread_atfork` handlers (registered on first use, not at
//! load) take every [`ForkSafeMutex`] before the fork and release them on
//! both sides, so the child starts with consistent, unlocked tables.
//! Critical sections are a hash-map operation long, so a spinning lock that
//! yields under contention is enough.
//!
//! A child of `vfork` (Python's `subprocess` uses it, and `posix_spawn`
//! works the same way) runs in its parent's memory until it execs, and no
//! fork handler runs for it: whatever it changes in our tables, it changes
//! for the parent. [`is_vfork_child`] tells it apart, so it can leave them
//! alone.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

pub struct ForkSafeMutex<T> {
    locked: AtomicBool,
    /// Whether the fork handlers know this lock yet (checked on every lock).
    registered: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `locked`.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}
// SAFETY: the value moves with the mutex, and T is Send.
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkSafeMutex { locked: AtomicBool::new(false), registered: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    pub fn lock(&'static self) -> Locked<'static, T> {
        if !self.registered.load(Ordering::Acquire) {
            register(&self.locked);
            self.registered.store(true, Ordering::Release);
        }
        acquire(&self.locked);
        Locked { mutex: self }
    }
}

/// A held [`ForkSafeMutex`]: the value behind it; dropping it unlocks.
pub struct Locked<'a, T> {
    mutex: &'a ForkSafeMutex<T>,
}

impl<T> Deref for Locked<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        self.mutex.locked.store(false, Ordering::Release);
    }
}

fn acquire(flag: &AtomicBool) {
    let mut spins = 0u32;
    while flag.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }
}

/// Every lock flag in use, so the fork handlers can take them all. A fixed
/// array: registration must not allocate. Room for every table and once-cell
/// (about twenty with an eight-hop chain) and then some.
const MAX_LOCKS: usize = 64;
static LOCKS: [std::sync::atomic::AtomicPtr<AtomicBool>; MAX_LOCKS] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; MAX_LOCKS];
static LOCK_COUNT: AtomicUsize = AtomicUsize::new(0);
static REGISTRY: ForkSafeMutex<()> = ForkSafeMutex::new(());
static ATFORK_REGISTERED: AtomicBool = AtomicBool::new(false);

fn register_fork_handlers() {
    // Not a std `Once`: a fork while another thread ran it would leave the
    // child waiting for that thread forever.
    if !ATFORK_REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are plain functions that only touch atomics
        // (and getpid).
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    }
}

fn register(flag: &'static AtomicBool) {
    register_fork_handlers();
    let ptr = flag as *const AtomicBool as *mut AtomicBool;
    let n = LOCK_COUNT.load(Ordering::Acquire);
    if LOCKS[..n].iter().any(|p| p.load(Ordering::Relaxed) == ptr) {
        return;
    }
    acquire(&REGISTRY.locked);
    let n = LOCK_COUNT.load(Ordering::Acquire);
    if !LOCKS[..n].iter().any(|p| p.load(Ordering::Relaxed) == ptr) {
        assert!(n < MAX_LOCKS, "more fork-safe locks than slots");
        LOCKS[n].store(ptr, Ordering::Relaxed);
        LOCK_COUNT.store(n + 1, Ordering::Release);
    }
    REGISTRY.locked.store(false, Ordering::Release);
}

/// Takes every registered lock, then the registry (which keeps the list
/// as it is until the fork is over), all or nothing: a lock that is busy
/// makes it give back every lock it took and try again. The locks are
/// taken in registration order, which need not be the order in which the
/// code nests them (a thread holding one table's lock may want another's,
/// and a [`ForkSafeOnce`] initializer registers a lock while holding its
/// own): waiting for a busy lock while holding others could deadlock with
/// such a thread, where backing off lets it finish. Never waits for a lock
/// while holding the registry, for the same reason.
extern "C" fn before_fork() {
    #[cfg(test)]
    tests::BEFORE_FORK_WAITS.store(true, Ordering::SeqCst);
    loop {
        let n = LOCK_COUNT.load(Ordering::Acquire);
        let mut taken = 0;
        while taken < n {
            // SAFETY: registered pointers are to statics.
            let lock = unsafe { &*LOCKS[taken].load(Ordering::Relaxed) };
            if lock.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
                break;
            }
            taken += 1;
        }
        if taken == n && REGISTRY.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            if LOCK_COUNT.load(Ordering::Acquire) == n {
                return; // every lock, and the registry: the fork may go on
            }
            REGISTRY.locked.store(false, Ordering::Release); // registered meanwhile: again
        }
        for slot in &LOCKS[..taken] {
            // SAFETY: as above; this thread took these in the loop above.
            unsafe { &*slot.load(Ordering::Relaxed) }.store(false, Ordering::Release);
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

extern "C" fn after_fork_child() {
    // The child has a copy of the memory: the tables in it are its own.
    // SAFETY: getpid has no preconditions.
    OWNER_PID.store(unsafe { libc::getpid() }, Ordering::Release);
    after_fork_parent();
}

extern "C" fn after_fork_parent() {
    for slot in &LOCKS[..LOCK_COUNT.load(Ordering::Acquire)] {
        // SAFETY: as above; this thread took every lock in before_fork.
        unsafe { &*slot.load(Ordering::Relaxed) }.store(false, Ordering::Release);
    }
    REGISTRY.locked.store(false, Ordering::Release);
}

/// The process whose memory our tables are in: the first to change them,
/// then each `fork` child (its handler runs in the copy). 0: not yet known.
static OWNER_PID: AtomicI32 = AtomicI32::new(0);

/// Whether this process runs in memory it does not own: a child between
/// `vfork` (or `posix_spawn`'s `clone(CLONE_VM)`) and `exec`, whose tables
/// are its parent's. Such a child must touch nothing but the kernel: it
/// closes its own copies of the fds, and the parent's sockets stay as they
/// were. Every change to the fd tables asks this first; it costs one
/// `getpid` (a system call: glibc does not cache it), on slow paths only.
pub fn is_vfork_child() -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    match OWNER_PID.load(Ordering::Acquire) {
        owner if owner == me => false,
        0 => {
            // The first change: this process owns the tables from now on,
            // and its fork children will own their copies.
            register_fork_handlers();
            OWNER_PID.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire).is_err_and(|owner| owner != me)
        }
        _ => true,
    }
}

/// A value computed once, on first use, that survives `fork`.
///
/// `once_cell`'s and std's once-cells park other threads while one
/// initializes; a fork in that window leaves the child's cell "being
/// initialized" by a thread that does not exist there, forever. Here the
/// initializer runs under a [`ForkSafeMutex`], which a fork waits for.
pub struct ForkSafeOnce<T> {
    value: AtomicPtr<T>,
    init: ForkSafeMutex<()>,
}

impl<T> ForkSafeOnce<T> {
    pub const fn new() -> Self {
        ForkSafeOnce { value: AtomicPtr::new(std::ptr::null_mut()), init: ForkSafeMutex::new(()) }
    }

    /// The value, computing it with `make` if this is the first use. The
    /// value lives for the rest of the process.
    pub fn get_or_init(&'static self, make: impl FnOnce() -> T) -> &'static T {
        let ptr = self.value.load(Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: set once below from a leaked Box, never freed.
            return unsafe { &*ptr };
        }
        let _init = self.init.lock();
        let ptr = self.value.load(Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: as above.
            return unsafe { &*ptr };
        }
        let leaked: &'static T = Box::leak(Box::new(make()));
        self.value.store(leaked as *const T as *mut T, Ordering::Release);
        leaked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_runs_the_initializer_once() {
        static ONCE: ForkSafeOnce<u32> = ForkSafeOnce::new();
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> =
            (0..4).map(|_| std::thread::spawn(|| *ONCE.get_or_init(|| CALLS.fetch_add(1, Ordering::SeqCst) as u32 + 7))).collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    }

    /// Set by `before_fork` when it is about to wait for the data locks.
    pub(super) static BEFORE_FORK_WAITS: AtomicBool = AtomicBool::new(false);

    /// A once-cell's initializer that locks a mutex for the first time
    /// (registering it) while another thread forks: the forking thread
    /// waits for the initializer's lock, so registration must not wait for
    /// the forking thread.
    #[test]
    fn registering_inside_a_once_initializer_while_forking_does_not_deadlock() {
        static ONCE: ForkSafeOnce<u32> = ForkSafeOnce::new();
        static FIRST_USED_INSIDE: ForkSafeMutex<u32> = ForkSafeMutex::new(0);
        static INSIDE: AtomicBool = AtomicBool::new(false);
        let (done, finished) = std::sync::mpsc::channel();
        let done2 = done.clone();
        let initializer = std::thread::spawn(move || {
            let v = *ONCE.get_or_init(|| {
                INSIDE.store(true, Ordering::SeqCst);
                while !BEFORE_FORK_WAITS.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                *FIRST_USED_INSIDE.lock() += 1;
                5
            });
            let _ = done.send(v);
        });
        let forker = std::thread::spawn(move || {
            while !INSIDE.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            before_fork();
            after_fork_parent();
            let _ = done2.send(0);
        });
        // A bound for a deadlock, not a timing measurement: both threads
        // finish in microseconds unless they wait for each other.
        let bound = std::time::Duration::from_secs(120);
        let mut got = vec![finished.recv_timeout(bound).expect("deadlock"), finished.recv_timeout(bound).expect("deadlock")];
        got.sort();
        assert_eq!(got, [0, 5]);
        initializer.join().unwrap();
        forker.join().unwrap();
        assert_eq!(*FIRST_USED_INSIDE.lock(), 1);
    }

    #[test]
    fn two_dozen_locks_register_and_are_taken_around_a_fork() {
        static MANY: [ForkSafeMutex<u8>; 24] = [const { ForkSafeMutex::new(0) }; 24];
        for m in &MANY {
            *m.lock() += 1;
        }
        before_fork();
        assert!(MANY.iter().all(|m| m.locked.load(Ordering::SeqCst)), "every lock is held across the fork");
        after_fork_parent();
        assert!(MANY.iter().all(|m| *m.lock() == 1));
    }

    static COUNTER: ForkSafeMutex<u64> = ForkSafeMutex::new(0);

    #[test]
    fn serializes_threads() {
        let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(|| (0..10_000).for_each(|_| *COUNTER.lock() += 1))).collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*COUNTER.lock(), 40_000);
    }
}
