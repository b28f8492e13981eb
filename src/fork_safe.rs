//! A small mutex that survives `fork`.
//!
//! If one thread forks while another holds a lock, the child inherits the
//! lock held by a thread that does not exist there, and its next look-up
//! deadlocks. `pthread_atfork` handlers (registered on first use, not at
//! load) take every [`ForkSafeMutex`] before the fork and release them on
//! both sides, so the child starts with consistent, unlocked tables.
//! Critical sections are a hash-map operation long, so a spinning lock that
//! yields under contention is enough.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

pub struct ForkSafeMutex<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `locked`.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkSafeMutex { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    pub fn lock(&'static self) -> Guard<'static, T> {
        register(&self.locked);
        acquire(&self.locked);
        Guard { mutex: self }
    }
}

pub struct Guard<'a, T> {
    mutex: &'a ForkSafeMutex<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
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
/// array: registration must not allocate, and we have a handful of tables.
const MAX_LOCKS: usize = 16;
static LOCKS: [std::sync::atomic::AtomicPtr<AtomicBool>; MAX_LOCKS] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; MAX_LOCKS];
static LOCK_COUNT: AtomicUsize = AtomicUsize::new(0);
static REGISTRY: ForkSafeMutex<()> = ForkSafeMutex::new(());
static ATFORK: Once = Once::new();

fn register(flag: &'static AtomicBool) {
    ATFORK.call_once(|| {
        // SAFETY: the handlers are plain functions that only touch atomics.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    });
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

extern "C" fn before_fork() {
    acquire(&REGISTRY.locked);
    for slot in &LOCKS[..LOCK_COUNT.load(Ordering::Acquire)] {
        // SAFETY: registered pointers are to statics.
        acquire(unsafe { &*slot.load(Ordering::Relaxed) });
    }
}

extern "C" fn after_fork() {
    for slot in &LOCKS[..LOCK_COUNT.load(Ordering::Acquire)] {
        // SAFETY: as above; this thread took every lock in before_fork.
        unsafe { &*slot.load(Ordering::Relaxed) }.store(false, Ordering::Release);
    }
    REGISTRY.locked.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    static COUNTER: ForkSafeMutex<u64> = ForkSafeMutex::new(0);

    #[test]
    fn serializes_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).for_each(|_| *COUNTER.lock() += 1)))
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*COUNTER.lock(), 40_000);
    }
}
