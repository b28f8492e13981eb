//! The program's memory, read and written so that a bad pointer becomes
//! `EFAULT`, as it does for the kernel, instead of a SIGSEGV in our code.
//!
//! The kernel checks every pointer a program hands to a system call; a
//! hook that reads the program's `sockaddr` (or writes an address back)
//! itself must not crash where the real call would have failed. So the
//! kernel checks ours too, two ways:
//!
//! - Small copies (at most [`PROBE_MAX`] bytes, the addresses and lengths
//!   of every datagram): each page they touch is first touched by the
//!   kernel in a system call that has no other effect, then we copy
//!   directly. A read is probed with `rt_sigprocmask` given an invalid
//!   `how` (the kernel copies the 8-byte mask in, `EFAULT` if it cannot,
//!   then refuses with `EINVAL`: nothing changes); a write with `getcpu`,
//!   which writes 4 bytes (the CPU number) inside the very range we then
//!   overwrite. Mapping and protection are per page, so a page the kernel
//!   could touch is one we can. About 0.1 µs a probe, where
//!   `process_vm_readv` costs 2 µs (it pins the pages of a "remote"
//!   process); errno is left as it was. What this cannot cover: another
//!   thread unmapping the buffer between the probe and the copy, a race
//!   the program loses either way (the kernel would answer `EFAULT`, we
//!   crash).
//! - Larger copies, and where a probe is refused (a seccomp filter):
//!   `process_vm_readv`/`process_vm_writev` on our own process (always
//!   permitted on oneself), one system call per copy. Where a sandbox
//!   refuses those too (`ENOSYS`, `EPERM`), plain memory access is used.

use libc::{c_void, iovec};

/// The kernel takes at most this many iovecs a side per call.
const IOV_MAX: usize = 1024;

/// Copies of at most this many bytes of the program's memory are probed
/// page by page, then done directly.
pub const PROBE_MAX: usize = 4096;

/// Pages are probed in steps of this many bytes: the smallest page size of
/// the architectures we build for (a larger page is only probed more often).
const STEP: usize = 4096;

#[derive(Debug, PartialEq)]
enum Probe {
    /// The kernel could read (write) there: so can we.
    Ok,
    /// It could not: `EFAULT`.
    Fault,
    /// The probe itself was refused (a seccomp filter): copy through the kernel.
    Unknown,
}

/// Whether the kernel can read the 8 bytes at `at`.
fn probe_read(at: usize) -> Probe {
    // SAFETY: rt_sigprocmask with an invalid `how` reads 8 bytes at `at`
    // through the kernel (EFAULT if it cannot) and then fails with EINVAL,
    // changing nothing; the old-mask pointer is null.
    let rc = unsafe { crate::real::syscall(libc::SYS_rt_sigprocmask, -1, at as libc::c_long, 0, 8, 0, 0) };
    match (rc, crate::ffi::errno()) {
        (-1, libc::EINVAL) => Probe::Ok,
        (-1, libc::EFAULT) => Probe::Fault,
        _ => Probe::Unknown,
    }
}

/// Whether the kernel can write the 4 bytes at `at` (it writes them: only
/// for bytes the caller overwrites next).
fn probe_write(at: usize) -> Probe {
    // SAFETY: getcpu (the system call, not the vDSO) writes one unsigned int
    // at `at` through the kernel (EFAULT if it cannot); the node and cache
    // pointers are null.
    let rc = unsafe { crate::real::syscall(libc::SYS_getcpu, at as libc::c_long, 0, 0, 0, 0, 0) };
    match (rc, crate::ffi::errno()) {
        (0, _) => Probe::Ok,
        (-1, libc::EFAULT) => Probe::Fault,
        _ => Probe::Unknown,
    }
}

/// Probes every page the program's ranges `remote` touch, each page once.
fn probe(remote: &[iovec], write: bool) -> Probe {
    let saved = crate::ffi::errno();
    let mut done = [usize::MAX; 8];
    let mut verdict = Probe::Ok;
    'ranges: for v in remote.iter().filter(|v| v.iov_len > 0) {
        let start = v.iov_base as usize;
        let Some(end) = start.checked_add(v.iov_len) else {
            verdict = Probe::Fault;
            break;
        };
        let mut page = start & !(STEP - 1);
        if page == 0 {
            // Null means "none" to both probes: the kernel copy decides.
            verdict = Probe::Unknown;
            break;
        }
        while page < end {
            if !done.contains(&page) {
                let (lo, hi) = (start.max(page), end.min(page + STEP));
                let answer = match write {
                    // Only bytes inside the range may be written; fewer
                    // than 4 of them on this page: through the kernel.
                    true if hi - lo < 4 => Probe::Unknown,
                    true => probe_write(lo),
                    false => probe_read(page),
                };
                if answer != Probe::Ok {
                    verdict = answer;
                    break 'ranges;
                }
                done.rotate_right(1);
                done[0] = page;
            }
            page += STEP;
        }
    }
    crate::ffi::set_errno(saved);
    verdict
}

/// Copies between our buffers `local` and the program's `remote` (pairs
/// of equal lengths), `EFAULT` if the program's side cannot be.
fn copy(local: &[iovec], remote: &[iovec], write: bool) -> Result<(), i32> {
    let want: usize = remote.iter().map(|v| v.iov_len).sum();
    if want <= PROBE_MAX {
        match probe(remote, write) {
            Probe::Ok => {
                direct(local, remote, write);
                return Ok(());
            }
            Probe::Fault => return Err(libc::EFAULT),
            Probe::Unknown => {}
        }
    }
    copy_by_kernel(local, remote, write)
}

/// Copies directly, for memory the kernel showed us is there.
fn direct(local: &[iovec], remote: &[iovec], write: bool) {
    for (l, r) in local.iter().zip(remote) {
        let (from, to) = if write { (l.iov_base, r.iov_base) } else { (r.iov_base, l.iov_base) };
        // SAFETY: the caller vouches for the local side; the remote side was
        // probed (or the kernel's own copy was refused, see copy_by_kernel).
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, l.iov_len.min(r.iov_len)) };
    }
}

/// Copies with `process_vm_readv`/`process_vm_writev` on our own process.
fn copy_by_kernel(local: &[iovec], remote: &[iovec], write: bool) -> Result<(), i32> {
    if local.len() > IOV_MAX {
        // Pairs of equal lengths (see callers): copy in chunks.
        for (l, r) in local.chunks(IOV_MAX).zip(remote.chunks(IOV_MAX)) {
            copy_by_kernel(l, r, write)?;
        }
        return Ok(());
    }
    let want: usize = remote.iter().map(|v| v.iov_len).sum();
    if want == 0 {
        return Ok(());
    }
    // SAFETY: getpid has no preconditions; the iovecs describe our own
    // buffers (local) and the program's (remote, checked by the kernel).
    let n = unsafe {
        let pid = libc::getpid();
        if write {
            libc::process_vm_writev(pid, local.as_ptr(), local.len() as _, remote.as_ptr(), remote.len() as _, 0)
        } else {
            libc::process_vm_readv(pid, local.as_ptr(), local.len() as _, remote.as_ptr(), remote.len() as _, 0)
        }
    };
    if n == want as isize {
        return Ok(());
    }
    if n >= 0 {
        return Err(libc::EFAULT); // a partial copy: part of it is not mapped
    }
    match crate::ffi::errno() {
        libc::ENOSYS | libc::EPERM => {
            // Not allowed here: copy directly (a bad pointer then crashes,
            // as it did before this module).
            direct(local, remote, write);
            Ok(())
        }
        _ => Err(libc::EFAULT),
    }
}

fn iov(ptr: *const c_void, len: usize) -> iovec {
    iovec { iov_base: ptr as *mut c_void, iov_len: len }
}

/// Plain data: every bit pattern is a valid value, so bytes read from the
/// program can be one ([`read_value`]) and one can be written as bytes.
///
/// # Safety
/// Only for types without padding-sensitive invariants, references,
/// `bool`s, enums or other types that have invalid bit patterns.
pub unsafe trait Plain: Copy {}

// SAFETY: integers: every bit pattern is a value.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for i32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for usize {}
// SAFETY: C structs of integers and raw pointers: any bit pattern is a value.
unsafe impl Plain for iovec {}
// SAFETY: as above.
unsafe impl Plain for libc::msghdr {}
// SAFETY: as above.
unsafe impl Plain for libc::mmsghdr {}
// SAFETY: as above.
unsafe impl Plain for libc::timeval {}
// SAFETY: as above.
unsafe impl Plain for libc::timespec {}
// SAFETY: as above (a u32 and a u64 union of integers and a pointer).
unsafe impl Plain for libc::epoll_event {}
// SAFETY: as above.
unsafe impl Plain for libc::pollfd {}

// The program's memory: every function below reads or writes through a
// pointer the program handed to the call being hooked. A bad pointer is
// `EFAULT`; what the functions cannot check is that the pointer is the
// program's own memory and not a Rust object of ours (writing there, or
// reading it while we change it, would break Rust's aliasing rules): that
// is each caller's promise, hence `unsafe fn`.

/// Reads `out.len()` bytes at the program's `ptr`.
///
/// # Safety
/// `ptr` is memory the program handed to the hooked call (it may be
/// unmapped: that is `EFAULT`), not memory a Rust reference of ours covers.
pub unsafe fn read(ptr: *const c_void, out: &mut [u8]) -> Result<(), i32> {
    copy(&[iov(out.as_ptr() as *const c_void, out.len())], &[iov(ptr, out.len())], false)
}

/// Reads one `T` at the program's `ptr`.
///
/// # Safety
/// As [`read`].
pub unsafe fn read_value<T: Plain>(ptr: *const T) -> Result<T, i32> {
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the slice covers exactly the value's bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(value.as_mut_ptr() as *mut u8, std::mem::size_of::<T>()) };
    // SAFETY: the caller's promise about ptr.
    unsafe { read(ptr as *const c_void, bytes) }?;
    // SAFETY: every byte was written, and any bytes are a T (Plain).
    Ok(unsafe { value.assume_init() })
}

/// Writes `data` to the program's `ptr`.
///
/// # Safety
/// As [`read`]: `ptr` is the program's buffer for the call's answer.
pub unsafe fn write(ptr: *mut c_void, data: &[u8]) -> Result<(), i32> {
    copy(&[iov(data.as_ptr() as *const c_void, data.len())], &[iov(ptr, data.len())], true)
}

/// Writes each `(to, bytes)` pair to the program's memory, in one system
/// call: a received datagram, its source address and that address's length.
///
/// # Safety
/// As [`write`], for every `to`.
pub unsafe fn write_all(pairs: &[(*mut c_void, &[u8])]) -> Result<(), i32> {
    let local: Vec<iovec> = pairs.iter().map(|(_, b)| iov(b.as_ptr() as *const c_void, b.len())).collect();
    let remote: Vec<iovec> = pairs.iter().map(|(to, b)| iov(*to, b.len())).collect();
    copy(&local, &remote, true)
}

/// The program's array of `n` iovecs at `ptr`, copied (empty if null).
///
/// # Safety
/// As [`read`].
pub unsafe fn read_iovs(ptr: *const iovec, n: usize) -> Result<Vec<iovec>, i32> {
    if ptr.is_null() || n == 0 {
        return Ok(Vec::new());
    }
    if n > IOV_MAX {
        return Err(libc::EMSGSIZE); // as the kernel answers for more than UIO_MAXIOV
    }
    let mut out = vec![iov(std::ptr::null(), 0); n];
    // SAFETY: the slice covers exactly the vector's bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * std::mem::size_of::<iovec>()) };
    // SAFETY: the caller's promise about ptr.
    unsafe { read(ptr as *const c_void, bytes) }?;
    Ok(out)
}

/// Writes one `T` to the program's `ptr`.
///
/// # Safety
/// As [`write`].
pub unsafe fn write_value<T: Plain>(ptr: *mut T, value: T) -> Result<(), i32> {
    // SAFETY: a Plain T's bytes, read as bytes.
    let bytes = unsafe { std::slice::from_raw_parts(&value as *const T as *const u8, std::mem::size_of::<T>()) };
    // SAFETY: the caller's promise about ptr.
    unsafe { write(ptr as *mut c_void, bytes) }
}

/// Whether `ptr` could point into the program's memory: not in the lowest
/// 64 KiB (which Linux does not map by default: `vm.mmap_min_addr`) nor
/// beyond user space. One comparison, for fast paths that must read a
/// pointer directly; a pointer that fails it is read with [`read`].
#[inline(always)]
pub fn plausible(ptr: *const c_void) -> bool {
    (ptr as usize).wrapping_sub(0x1_0000) < (1usize << 47) - 0x1_0000
}

#[cfg(test)]
mod tests {
    use super::{plausible, Plain, PROBE_MAX, STEP};
    use libc::c_void;

    // The tests' memory (our own mappings and locals, which no reference
    // covers while copied) stands for the program's.
    fn read(p: *const c_void, out: &mut [u8]) -> Result<(), i32> {
        // SAFETY: see above.
        unsafe { super::read(p, out) }
    }
    fn write(p: *mut c_void, data: &[u8]) -> Result<(), i32> {
        // SAFETY: see above.
        unsafe { super::write(p, data) }
    }
    fn write_all(pairs: &[(*mut c_void, &[u8])]) -> Result<(), i32> {
        // SAFETY: see above.
        unsafe { super::write_all(pairs) }
    }
    fn read_value<T: Plain>(p: *const T) -> Result<T, i32> {
        // SAFETY: see above.
        unsafe { super::read_value(p) }
    }
    fn write_value<T: Plain>(p: *mut T, v: T) -> Result<(), i32> {
        // SAFETY: see above.
        unsafe { super::write_value(p, v) }
    }

    #[test]
    fn bad_pointers_are_efault_and_good_ones_copy() {
        assert_eq!(read_value(16 as *const u32), Err(libc::EFAULT));
        assert_eq!(write_value(16 as *mut u32, 7), Err(libc::EFAULT));
        let mut x = 5u64;
        assert_eq!(read_value(&x as *const u64), Ok(5));
        write_value(&mut x as *mut u64, 9).unwrap();
        assert_eq!(x, 9);
        assert!(!plausible(std::ptr::null()) && !plausible(16 as *const c_void) && !plausible(usize::MAX as *const c_void));
        assert!(plausible(&x as *const u64 as *const c_void));
    }

    /// Three pages: read-write, read-only, inaccessible.
    fn pages() -> *mut u8 {
        // SAFETY: a fresh anonymous mapping of our own, changed only here.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                3 * STEP,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let p = p as *mut u8;
            std::ptr::write_bytes(p, 7, 2 * STEP);
            assert_eq!(libc::mprotect(p.add(STEP) as *mut c_void, STEP, libc::PROT_READ), 0);
            assert_eq!(libc::mprotect(p.add(2 * STEP) as *mut c_void, STEP, libc::PROT_NONE), 0);
            p
        }
    }

    /// The probed path (small copies) answers as the kernel would, page by
    /// page, and leaves errno alone.
    #[test]
    fn probed_copies_fault_where_the_kernel_would() {
        let p = pages() as usize;
        let (rw, ro, none) = (p, p + STEP, p + 2 * STEP);
        let mut buf = [0u8; 64];
        crate::ffi::set_errno(1234);
        // Read: within a page, across the read-write/read-only boundary.
        assert_eq!(read((ro - 32) as *const c_void, &mut buf), Ok(()));
        assert_eq!(buf, [7u8; 64]);
        assert_eq!(crate::ffi::errno(), 1234, "errno untouched by a good copy");
        // Read: into the inaccessible page, or wholly in it.
        assert_eq!(read((none - 32) as *const c_void, &mut buf), Err(libc::EFAULT));
        assert_eq!(read(none as *const c_void, &mut buf[..4]), Err(libc::EFAULT));
        // Write: the read-write page takes it; the read-only one does not,
        // even when the range starts on a writable page.
        assert_eq!(write((ro - 100) as *mut c_void, &[9u8; 64]), Ok(()));
        // SAFETY: our own mapping's read-write page.
        assert_eq!(unsafe { std::slice::from_raw_parts((ro - 100) as *const u8, 64) }, [9u8; 64]);
        assert_eq!(write((ro - 32) as *mut c_void, &[9u8; 64]), Err(libc::EFAULT));
        assert_eq!(write(ro as *mut c_void, &[9u8; 8]), Err(libc::EFAULT));
        // SAFETY: our own mapping's read-only page, readable.
        assert_eq!(unsafe { std::slice::from_raw_parts(ro as *const u8, 8) }, [7u8; 8], "the read-only page is unchanged");
        assert_eq!(write_value(none as *mut u32, 5), Err(libc::EFAULT));
        // Several ranges in one write: all or EFAULT.
        let (a, b) = ([1u8; 16], [2u8; 4]);
        assert_eq!(write_all(&[(rw as *mut c_void, &a), ((rw + 64) as *mut c_void, &b)]), Ok(()));
        assert_eq!(write_all(&[(rw as *mut c_void, &a), (ro as *mut c_void, &b)]), Err(libc::EFAULT));
        assert_eq!(crate::ffi::errno(), 1234);
        // Beyond the probed size: through process_vm_readv, same answers.
        let mut big = vec![0u8; PROBE_MAX + 1];
        assert_eq!(read(rw as *const c_void, &mut big), Ok(()));
        assert_eq!(read((none - 8) as *const c_void, &mut big), Err(libc::EFAULT));
        // Null, which both probes take for "no pointer".
        assert_eq!(write_value(std::ptr::null_mut::<u32>(), 5), Err(libc::EFAULT));
        assert_eq!(read_value(std::ptr::null::<u64>()), Err(libc::EFAULT));
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(p as *mut c_void, 3 * STEP) };
    }
}
