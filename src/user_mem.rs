//! The program's memory, read and written so that a bad pointer becomes
//! `EFAULT`, as it does for the kernel, instead of a SIGSEGV in our code.
//!
//! The kernel checks every pointer a program hands to a system call; a
//! hook that reads the program's `sockaddr` (or writes an address back)
//! itself must not crash where the real call would have failed. The copy
//! is done by the kernel too: `process_vm_readv`/`process_vm_writev` on our
//! own process (always permitted on oneself), one system call per copy, on
//! slow paths only. Where a sandbox refuses those calls (`ENOSYS`, `EPERM`),
//! plain memory access is used instead.

use libc::{c_void, iovec};

/// The kernel takes at most this many iovecs a side per call.
const IOV_MAX: usize = 1024;

fn copy(local: &[iovec], remote: &[iovec], write: bool) -> Result<(), i32> {
    if local.len() > IOV_MAX {
        // Pairs of equal lengths (see callers): copy in chunks.
        for (l, r) in local.chunks(IOV_MAX).zip(remote.chunks(IOV_MAX)) {
            copy(l, r, write)?;
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
            for (l, r) in local.iter().zip(remote) {
                let (from, to) = if write { (l.iov_base, r.iov_base) } else { (r.iov_base, l.iov_base) };
                // SAFETY: the caller vouches for the local side; the remote side is the program's pointer.
                unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, l.iov_len.min(r.iov_len)) };
            }
            Ok(())
        }
        _ => Err(libc::EFAULT),
    }
}

fn iov(ptr: *const c_void, len: usize) -> iovec {
    iovec { iov_base: ptr as *mut c_void, iov_len: len }
}

/// Reads `out.len()` bytes at the program's `ptr`.
pub fn read(ptr: *const c_void, out: &mut [u8]) -> Result<(), i32> {
    copy(&[iov(out.as_ptr() as *const c_void, out.len())], &[iov(ptr, out.len())], false)
}

/// Reads one `T` (plain data) at the program's `ptr`.
pub fn read_value<T: Copy>(ptr: *const T) -> Result<T, i32> {
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the slice covers exactly the value's bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(value.as_mut_ptr() as *mut u8, std::mem::size_of::<T>()) };
    read(ptr as *const c_void, bytes)?;
    // SAFETY: every byte was written; T is plain data.
    Ok(unsafe { value.assume_init() })
}

/// Writes `data` to the program's `ptr`.
pub fn write(ptr: *mut c_void, data: &[u8]) -> Result<(), i32> {
    copy(&[iov(data.as_ptr() as *const c_void, data.len())], &[iov(ptr, data.len())], true)
}

/// Writes each `(to, bytes)` pair to the program's memory, in one system
/// call: a received datagram, its source address and that address's length.
pub fn write_all(pairs: &[(*mut c_void, &[u8])]) -> Result<(), i32> {
    let local: Vec<iovec> = pairs.iter().map(|(_, b)| iov(b.as_ptr() as *const c_void, b.len())).collect();
    let remote: Vec<iovec> = pairs.iter().map(|(to, b)| iov(*to, b.len())).collect();
    copy(&local, &remote, true)
}

/// The program's array of `n` iovecs at `ptr`, copied (empty if null).
pub fn read_iovs(ptr: *const iovec, n: usize) -> Result<Vec<iovec>, i32> {
    if ptr.is_null() || n == 0 {
        return Ok(Vec::new());
    }
    if n > IOV_MAX {
        return Err(libc::EMSGSIZE); // as the kernel answers for more than UIO_MAXIOV
    }
    let mut out = vec![iov(std::ptr::null(), 0); n];
    // SAFETY: the slice covers exactly the vector's bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * std::mem::size_of::<iovec>()) };
    read(ptr as *const c_void, bytes)?;
    Ok(out)
}

/// Writes one `T` (plain data) to the program's `ptr`.
pub fn write_value<T: Copy>(ptr: *mut T, value: T) -> Result<(), i32> {
    // SAFETY: a T's bytes, read as bytes.
    let bytes = unsafe { std::slice::from_raw_parts(&value as *const T as *const u8, std::mem::size_of::<T>()) };
    write(ptr as *mut c_void, bytes)
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
    use super::*;

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
}
