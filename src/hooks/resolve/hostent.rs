//! Well-formed `hostent`s for the `gethostby*` answers we make ourselves:
//! in the caller's buffer for the `_r` variants (`ERANGE` when it is too
//! small), in a per-thread buffer for the others.

use libc::{c_char, c_int, hostent, AF_INET, AF_INET6};
use std::cell::UnsafeCell;
use std::mem::{align_of, size_of};
use std::net::IpAddr;

/// What a `hostent` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostData {
    pub name: String,
    pub aliases: Vec<String>,
    /// `AF_INET` or `AF_INET6`; every address is of this family.
    pub family: c_int,
    pub addrs: Vec<IpAddr>,
}

impl HostData {
    fn addr_len(&self) -> usize {
        if self.family == AF_INET6 {
            16
        } else {
            4
        }
    }

    /// Bytes of buffer [`write`] needs (with the worst alignment padding).
    pub fn needed(&self) -> usize {
        align_of::<*mut c_char>() + self.body_len()
    }

    /// Bytes after the alignment padding.
    fn body_len(&self) -> usize {
        let ptrs = (self.addrs.len() + 1 + self.aliases.len() + 1) * size_of::<*mut c_char>();
        let strings: usize = self.aliases.iter().map(|a| a.len() + 1).sum::<usize>() + self.name.len() + 1;
        ptrs + self.addrs.len() * self.addr_len() + strings
    }
}

/// Fills `ret`, putting everything it points to in `buf`; `Err(())` if
/// `buflen` is too small.
///
/// # Safety
/// `ret` is writable; `buf` has `buflen` writable bytes.
pub unsafe fn write(data: &HostData, ret: *mut hostent, buf: *mut c_char, buflen: usize) -> Result<(), ()> {
    if buf.is_null() {
        return Err(());
    }
    let buf = buf as *mut u8;
    let pad = buf.align_offset(align_of::<*mut c_char>());
    if pad.saturating_add(data.body_len()) > buflen {
        return Err(());
    }
    // SAFETY: needed() counted the padding, both arrays, the addresses and
    // every string, so every write below stays inside buf[..buflen].
    unsafe {
        let addr_list = buf.add(pad) as *mut *mut c_char;
        let aliases = addr_list.add(data.addrs.len() + 1);
        let mut cursor = aliases.add(data.aliases.len() + 1) as *mut u8;
        for (i, ip) in data.addrs.iter().enumerate() {
            let bytes: Vec<u8> = match (ip, data.family) {
                (IpAddr::V4(a), AF_INET) => a.octets().to_vec(),
                (IpAddr::V4(a), _) => a.to_ipv6_mapped().octets().to_vec(),
                (IpAddr::V6(a), _) => a.octets().to_vec(),
            };
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), cursor, bytes.len());
            *addr_list.add(i) = cursor as *mut c_char;
            cursor = cursor.add(data.addr_len());
        }
        *addr_list.add(data.addrs.len()) = std::ptr::null_mut();
        let mut put_str = |s: &str| {
            std::ptr::copy_nonoverlapping(s.as_ptr(), cursor, s.len());
            *cursor.add(s.len()) = 0;
            let at = cursor as *mut c_char;
            cursor = cursor.add(s.len() + 1);
            at
        };
        let name = put_str(&data.name);
        for (i, alias) in data.aliases.iter().enumerate() {
            *aliases.add(i) = put_str(alias);
        }
        *aliases.add(data.aliases.len()) = std::ptr::null_mut();
        ret.write(hostent {
            h_name: name,
            h_aliases: aliases,
            h_addrtype: data.family,
            h_length: data.addr_len() as c_int,
            h_addr_list: addr_list,
        });
    }
    Ok(())
}

struct ThreadHost {
    ent: hostent,
    buf: Vec<u64>,
}

thread_local! {
    static THREAD_HOST: UnsafeCell<ThreadHost> = const {
        UnsafeCell::new(ThreadHost {
            // SAFETY: all-zero is a valid hostent.
            ent: unsafe { std::mem::zeroed() },
            buf: Vec::new(),
        })
    };
}

/// `data` as a `hostent` in this thread's buffer, valid until this thread's
/// next call (the non-reentrant functions' contract). Null if the thread is
/// being torn down.
pub fn in_thread_buffer(data: &HostData) -> *mut hostent {
    THREAD_HOST
        .try_with(|cell| {
            // SAFETY: only this thread touches its own buffer, and not re-entrantly.
            let th = unsafe { &mut *cell.get() };
            let words = data.needed().div_ceil(8);
            if th.buf.len() < words {
                th.buf.resize(words, 0);
            }
            let len = th.buf.len() * 8;
            // SAFETY: th.ent is ours to write; th.buf holds `len` bytes.
            match unsafe { write(data, &mut th.ent, th.buf.as_mut_ptr() as *mut c_char, len) } {
                Ok(()) => &mut th.ent as *mut hostent,
                Err(()) => std::ptr::null_mut(),
            }
        })
        .unwrap_or(std::ptr::null_mut())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn writes_a_hostent_and_refuses_a_short_buffer() {
        let data = HostData {
            name: "name.test".into(),
            aliases: vec!["a".into(), "bb".into()],
            family: AF_INET6,
            addrs: vec!["fd50::1".parse().unwrap(), "198.18.0.1".parse().unwrap()],
        };
        // SAFETY: all-zero is a valid hostent (null pointers).
        let mut ent: hostent = unsafe { std::mem::zeroed() };
        let mut words = vec![0u64; data.needed() / 8 + 1];
        let buf = words.as_mut_ptr() as *mut c_char;
        let exact = data.needed() - align_of::<*mut c_char>();
        // SAFETY: buf holds words' bytes, more than exact - 1.
        assert!(unsafe { write(&data, &mut ent, buf, exact - 1) }.is_err(), "one byte short");
        // SAFETY: buf + 1 holds exact bytes (words has room for more).
        assert!(unsafe { write(&data, &mut ent, buf.add(1), exact) }.is_err(), "padding counts");
        // SAFETY: buf + 1 holds exact + 7 bytes (words has room for them).
        unsafe { write(&data, &mut ent, buf.add(1), exact + 7) }.unwrap();
        // SAFETY: write succeeded: h_name is a C string in words.
        assert_eq!(unsafe { CStr::from_ptr(ent.h_name) }.to_str().unwrap(), "name.test");
        assert_eq!((ent.h_addrtype, ent.h_length), (AF_INET6, 16));
        // SAFETY: h_aliases is a null-terminated array in words; indexes up to its null.
        let alias = |i| unsafe { *ent.h_aliases.add(i) };
        // SAFETY: alias(1) is a C string written by write.
        assert_eq!(unsafe { CStr::from_ptr(alias(1)) }.to_str().unwrap(), "bb");
        assert!(alias(2).is_null());
        // SAFETY: h_addr_list is a null-terminated array in words; indexes up to its null.
        let addr = |i| unsafe { *ent.h_addr_list.add(i) };
        // SAFETY: entry 1 is an AF_INET6 address: 16 bytes.
        let second = unsafe { std::slice::from_raw_parts(addr(1) as *const u8, 16) };
        assert_eq!(second, "::ffff:198.18.0.1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert!(addr(2).is_null());
        let p = in_thread_buffer(&data);
        // SAFETY: p is this thread's hostent, just filled; h_name is a C string.
        assert_eq!(unsafe { CStr::from_ptr((*p).h_name) }.to_str().unwrap(), "name.test");
    }
}
