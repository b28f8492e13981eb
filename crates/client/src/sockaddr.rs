//! Conversions between C `sockaddr`s and `std::net::SocketAddr`.
//!
//! Shared with the supervisor through `socksify-client`.

use libc::{sa_family_t, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t, AF_INET, AF_INET6};
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The address family of `addr`, or `None` if too short to have one.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn family(addr: *const sockaddr, len: socklen_t) -> Option<i32> {
    if addr.is_null() || (len as usize) < size_of::<sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above).
    Some(unsafe { (*addr).sa_family } as i32)
}

/// Reads an `AF_INET`/`AF_INET6` address; `None` for other families or a
/// length too short for the family.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    // SAFETY: addr is null or `len` readable bytes (this function's contract).
    match unsafe { family(addr, len) }? {
        AF_INET if len as usize >= size_of::<sockaddr_in>() => {
            // SAFETY: long enough for a sockaddr_in; read_unaligned copes with any alignment.
            let sin = unsafe { std::ptr::read_unaligned(addr as *const sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        AF_INET6 if len as usize >= size_of::<sockaddr_in6>() => {
            // SAFETY: as above.
            let sin6 = unsafe { std::ptr::read_unaligned(addr as *const sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// `addr` as a C socket address of family `family`: an IPv4 address for an
/// `AF_INET6` socket becomes v4-mapped. `None` if it cannot be expressed
/// (IPv6 for an `AF_INET` socket).
pub fn encode(addr: &SocketAddr, family: i32) -> Option<(sockaddr_storage, socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
    let v6 = match (addr, family) {
        (SocketAddr::V4(v4), AF_INET) => {
            let sin = sockaddr_in {
                sin_family: AF_INET as sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut sockaddr_in, sin) };
            return Some((storage, size_of::<sockaddr_in>() as socklen_t));
        }
        (SocketAddr::V6(v6), AF_INET) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => return encode(&SocketAddr::new(v4.into(), v6.port()), AF_INET),
            None => return None,
        },
        (SocketAddr::V4(v4), _) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        (SocketAddr::V6(v6), _) => *v6,
    };
    let sin6 = sockaddr_in6 {
        sin6_family: AF_INET6 as sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo(),
        sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
    unsafe { std::ptr::write(&mut storage as *mut _ as *mut sockaddr_in6, sin6) };
    Some((storage, size_of::<sockaddr_in6>() as socklen_t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_maps_v4_for_v6_sockets() {
        for (text, fam) in [("192.0.2.1:80", AF_INET), ("[2001:db8::1]:443", AF_INET6)] {
            let sa: SocketAddr = text.parse().unwrap();
            let (st, len) = encode(&sa, fam).unwrap();
            // SAFETY: encode wrote `len` bytes into st.
            assert_eq!(unsafe { read(&st as *const _ as *const sockaddr, len) }, Some(sa));
        }
        let (st, len) = encode(&"192.0.2.1:80".parse().unwrap(), AF_INET6).unwrap();
        // SAFETY: encode wrote `len` bytes into st.
        let back = unsafe { read(&st as *const _ as *const sockaddr, len) }.unwrap();
        assert_eq!(back, "[::ffff:192.0.2.1]:80".parse().unwrap());
        assert!(encode(&"[2001:db8::1]:1".parse().unwrap(), AF_INET).is_none());
        // SAFETY: st holds more than 4 bytes.
        assert_eq!(unsafe { read(&st as *const _ as *const sockaddr, 4) }, None, "short length");
    }
}
