//! A socket filter (classic BPF, `SO_ATTACH_FILTER`) for a UDP socket with
//! an association: the kernel itself drops what [`crate::udp::datagram::classify`]
//! would drop, so a stray datagram never makes `poll`/`epoll` say
//! "readable" (a program that polls and then reads with a blocking
//! `recvfrom` would otherwise wait with no limit after we drop it).
//!
//! Admitted: datagrams from the relay (address and port) whose RFC 1928
//! header is well formed (reserved bytes zero, FRAG 0, a known ATYP, as long
//! as the ATYP says) and, for a socket connected through us, names its
//! peer; and, for an unconnected socket, datagrams from sources the program
//! may talk to directly (`SOCKSIFY_NO_PROXY` address rules, the proxy
//! itself, addresses of bypassed names). Everything else is dropped by the
//! kernel. What a filter cannot see (a relayed datagram naming a host name
//! we never sent to, a name that is not UTF-8) the shim still drops after
//! `poll`; only the relay can send those.
//!
//! For a UDP socket the filter sees the packet from the UDP header on
//! (offset 0: source port, 8: the payload); the IP header is reached
//! through the `SKF_NET_OFF` negative offsets.

use socksify_proto::cidr::Cidr;
use std::net::{IpAddr, SocketAddr};

/// What the filter of one socket admits.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Where relayed datagrams come from (canonical IP): the relay, and
    /// the shim's DNS responder, which wraps its answers the same way.
    pub relays: Vec<SocketAddr>,
    /// For a socket connected through us: its peer, and whether that is a
    /// fake address (then the relay may report the name's real address,
    /// and only the port is checked, as `classify` does).
    pub peer: Option<(SocketAddr, bool)>,
    /// Sources an unconnected socket hears directly: network and port.
    pub direct: Vec<(Cidr, Option<u16>)>,
}

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

// The opcodes used here (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LD_W_LEN: u16 = 0x80;
const ALU_AND_K: u16 = 0x54;
const ALU_ADD_K: u16 = 0x04;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JGT_X: u16 = 0x2d;
const RET_K: u16 = 0x06;
const MISC_TAX: u16 = 0x07;
const MISC_TXA: u16 = 0x87;
const NET_OFF: u32 = (-0x100000i32) as u32;
/// The kernel's limit on a classic filter's length.
pub const MAX_INSNS: usize = 4096;

/// Instructions with forward jumps to labels, resolved by [`Asm::finish`].
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    /// (index of a JA, label it jumps to)
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.code.len());
    }
    fn op(&mut self, code: u16, k: u32) {
        self.code.push(Insn { code, jt: 0, jf: 0, k });
    }
    fn goto(&mut self, label: usize) {
        self.fixups.push((self.code.len(), label));
        self.op(JMP_JA, 0);
    }
    /// If `A <code> k` does not hold, go to `label`.
    fn unless(&mut self, code: u16, k: u32, label: usize) {
        self.code.push(Insn { code, jt: 1, jf: 0, k });
        self.goto(label);
    }
    /// If `A <code> k` holds, go to `label`.
    fn when(&mut self, code: u16, k: u32, label: usize) {
        self.code.push(Insn { code, jt: 0, jf: 1, k });
        self.goto(label);
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label].expect("every label placed");
            self.code[at].k = (target - at - 1) as u32; // forward only
        }
        self.code
    }
}

/// The IP version field's value for `ip` (in the high nibble).
fn version(ip: &IpAddr) -> u32 {
    if ip.is_ipv4() {
        0x40
    } else {
        0x60
    }
}

/// Goes to `fail` unless the packet's source address is in `net/prefix`.
fn match_source(a: &mut Asm, range: &Cidr, fail: usize) {
    let (net, prefix) = (range.addr(), range.prefix());
    a.op(LD_B_ABS, NET_OFF);
    a.op(ALU_AND_K, 0xf0);
    a.unless(JMP_JEQ_K, version(&net), fail);
    let (words, first): (Vec<u32>, u32) = match net {
        IpAddr::V4(v4) => (vec![u32::from(v4)], 12),
        IpAddr::V6(v6) => (v6.octets().chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect(), 8),
    };
    for (i, word) in words.iter().enumerate() {
        let bits = (prefix as i32 - 32 * i as i32).clamp(0, 32) as u32;
        if bits == 0 {
            break;
        }
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        a.op(LD_W_ABS, NET_OFF.wrapping_add(first + 4 * i as u32));
        if mask != u32::MAX {
            a.op(ALU_AND_K, mask);
        }
        a.unless(JMP_JEQ_K, word & mask, fail);
    }
}

/// Goes to `fail` unless the half-word at `offset` is `port`.
fn match_port(a: &mut Asm, offset: u32, port: u16, fail: usize) {
    a.op(LD_H_ABS, offset);
    a.unless(JMP_JEQ_K, port as u32, fail);
}

/// Goes to `fail` unless the 4 (IPv4) or 16 (IPv6) bytes at `offset` are `ip`.
fn match_bytes(a: &mut Asm, offset: u32, ip: &[u8], fail: usize) {
    for (i, c) in ip.chunks(4).enumerate() {
        a.op(LD_W_ABS, offset + 4 * i as u32);
        a.unless(JMP_JEQ_K, u32::from_be_bytes(c.try_into().unwrap()), fail);
    }
}

/// The filter program for `spec`.
pub fn program(spec: &Spec) -> Vec<Insn> {
    let mut a = Asm::default();
    let (not_relay, relayed, drop, accept) = (a.label(), a.label(), a.label(), a.label());
    // From a relay?
    for relay in &spec.relays {
        let next = a.label();
        match_source(&mut a, &Cidr::host(relay.ip()), next);
        match_port(&mut a, 0, relay.port(), next);
        a.goto(relayed);
        a.place(next);
    }
    a.goto(not_relay);
    a.place(relayed);
    // RSV 0 0, FRAG 0 (offset 8: the UDP payload).
    a.op(LD_W_ABS, 8);
    a.op(ALU_AND_K, 0xffff_ff00);
    a.unless(JMP_JEQ_K, 0, drop);
    // As long as its ATYP says: X = the UDP length.
    a.op(LD_W_LEN, 0);
    a.op(MISC_TAX, 0);
    let (v4, v6) = (a.label(), a.label());
    a.op(LD_B_ABS, 11);
    a.when(JMP_JEQ_K, 1, v4);
    a.when(JMP_JEQ_K, 4, v6);
    a.unless(JMP_JEQ_K, 3, drop);
    // ATYP 3: a name of 1..255 bytes, then the port.
    a.op(LD_B_ABS, 12);
    a.when(JMP_JEQ_K, 0, drop);
    a.op(ALU_ADD_K, 8 + 4 + 1 + 2);
    a.code.push(Insn { code: JMP_JGT_X, jt: 0, jf: 1, k: 0 });
    a.goto(drop);
    match spec.peer {
        None => {}
        Some((peer, true)) => {
            // A fake peer: the port after the name (X = name length).
            a.op(LD_B_ABS, 12);
            a.op(MISC_TAX, 0);
            a.op(LD_H_IND, 13);
            a.unless(JMP_JEQ_K, peer.port() as u32, drop);
        }
        Some((_, false)) => a.goto(drop), // a named source is not a numeric peer
    }
    a.goto(accept);
    // ATYP 1: 4 address bytes and the port.
    a.place(v4);
    a.op(MISC_TXA, 0);
    a.unless(JMP_JGE_K, 8 + 10, drop);
    if let Some((peer, fake)) = spec.peer {
        match (peer.ip(), fake) {
            (_, true) => {}
            (IpAddr::V4(ip), false) => match_bytes(&mut a, 12, &ip.octets(), drop),
            (IpAddr::V6(_), false) => a.goto(drop),
        }
        match_port(&mut a, 16, peer.port(), drop);
    }
    a.goto(accept);
    // ATYP 4: 16 address bytes and the port.
    a.place(v6);
    a.op(MISC_TXA, 0);
    a.unless(JMP_JGE_K, 8 + 22, drop);
    if let Some((peer, fake)) = spec.peer {
        match (peer.ip(), fake) {
            (_, true) => {}
            (IpAddr::V4(ip), false) => match_bytes(&mut a, 12, &ip.to_ipv6_mapped().octets(), drop),
            (IpAddr::V6(ip), false) => match_bytes(&mut a, 12, &ip.octets(), drop),
        }
        match_port(&mut a, 28, peer.port(), drop);
    }
    a.goto(accept);
    // Not from the relay: only sources an unconnected socket hears directly.
    a.place(not_relay);
    if spec.peer.is_none() {
        for (net, port) in &spec.direct {
            let next = a.label();
            match_source(&mut a, net, next);
            if let Some(port) = port {
                match_port(&mut a, 0, *port, next);
            }
            a.goto(accept);
            a.place(next);
        }
    }
    a.place(drop);
    a.op(RET_K, 0);
    a.place(accept);
    a.op(RET_K, u32::MAX);
    a.finish()
}

/// Attaches `prog` to socket `fd`, replacing the filter there.
pub fn attach(fd: libc::c_int, prog: &[Insn]) -> Result<(), i32> {
    if prog.len() > MAX_INSNS {
        return Err(libc::E2BIG);
    }
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SAFETY: Insn has sock_filter's layout; the kernel copies the program.
    let rc = unsafe {
        crate::real::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(crate::ffi::errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal classic-BPF interpreter for the opcodes above, over a
    /// packet given as its IP header (network offsets) and its UDP part.
    fn run(prog: &[Insn], net: &[u8], udp: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |k: u32, size: usize| -> Option<u32> {
            let (buf, off) = if k >= NET_OFF { (net, (k - NET_OFF) as usize) } else { (udp, k as usize) };
            let bytes = buf.get(off..off + size)?;
            Some(bytes.iter().fold(0u32, |v, b| v << 8 | *b as u32))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_W_ABS => match load(i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_ABS => match load(i.k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match load(i.k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_IND => match load(i.k + x, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_W_LEN => a = udp.len() as u32,
                ALU_AND_K => a &= i.k,
                ALU_ADD_K => a = a.wrapping_add(i.k),
                MISC_TAX => x = a,
                MISC_TXA => a = x,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += jump(a == i.k),
                JMP_JGE_K => pc += jump(a >= i.k),
                JMP_JGT_X => pc += jump(a > x),
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn ipv4_header(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[127, 0, 0, 1]);
        h
    }

    fn udp(src_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = src_port.to_be_bytes().to_vec();
        u.extend_from_slice(&[0x30, 0x39, 0, 0, 0, 0]);
        u.extend_from_slice(payload);
        u
    }

    const RELAY: [u8; 4] = [127, 0, 0, 9];

    fn spec(peer: Option<(SocketAddr, bool)>) -> Spec {
        Spec {
            relays: vec!["127.0.0.9:1080".parse().unwrap(), "127.0.0.10:53".parse().unwrap()],
            peer,
            direct: vec![(Cidr::parse("10.1.0.0/16").unwrap(), None), (Cidr::parse("::1").unwrap(), Some(53))],
        }
    }

    #[test]
    fn admits_well_formed_relayed_datagrams_only() {
        let p = program(&spec(None));
        let ok4 = [0, 0, 0, 1, 192, 0, 2, 1, 0, 7, b'h', b'i'];
        assert_eq!(run(&p, &ipv4_header(RELAY), &udp(1080, &ok4)), u32::MAX);
        let ok3 = [0, 0, 0, 3, 3, b'a', b'.', b'b', 0, 7];
        assert_eq!(run(&p, &ipv4_header(RELAY), &udp(1080, &ok3)), u32::MAX);
        let ok6 = [[0, 0, 0, 4].as_slice(), &[0; 16], &[0, 7]].concat();
        assert_eq!(run(&p, &ipv4_header(RELAY), &udp(1080, &ok6)), u32::MAX);
        for bad in [
            &[0, 0, 1, 1, 192, 0, 2, 1, 0, 7][..], // fragment
            &[0, 1, 0, 1, 192, 0, 2, 1, 0, 7],     // reserved
            &[0, 0, 0, 1, 192, 0],                 // truncated
            &[],                                   // empty
            &[0, 0, 0, 9, 1, 2, 3, 4, 0, 7],       // ATYP
            &[0, 0, 0, 3, 0, 0, 7],                // empty name
            &[0, 0, 0, 3, 20, b'a', b'b'],         // short name
            &ok6[..21],                            // short IPv6
        ] {
            assert_eq!(run(&p, &ipv4_header(RELAY), &udp(1080, bad)), 0, "{bad:?}");
        }
        // The DNS responder, the second source of wrapped datagrams.
        assert_eq!(run(&p, &ipv4_header([127, 0, 0, 10]), &udp(53, &ok4)), u32::MAX);
        assert_eq!(run(&p, &ipv4_header([127, 0, 0, 10]), &udp(53, &ok4[..6])), 0);
        // The relay's address with another port, or a stranger.
        assert_eq!(run(&p, &ipv4_header(RELAY), &udp(1081, &ok4)), 0);
        assert_eq!(run(&p, &ipv4_header([127, 0, 0, 5]), &udp(1080, &ok4)), 0);
    }

    #[test]
    fn admits_direct_sources_of_unconnected_sockets() {
        let p = program(&spec(None));
        assert_eq!(run(&p, &ipv4_header([10, 1, 200, 3]), &udp(5, b"x")), u32::MAX);
        assert_eq!(run(&p, &ipv4_header([10, 2, 0, 3]), &udp(5, b"x")), 0);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(run(&p, &v6, &udp(53, b"x")), u32::MAX);
        assert_eq!(run(&p, &v6, &udp(54, b"x")), 0, "the rule's port");
        // A connected socket hears the relay only.
        let connected = program(&spec(Some(("192.0.2.1:7".parse().unwrap(), false))));
        assert_eq!(run(&connected, &ipv4_header([10, 1, 200, 3]), &udp(5, b"x")), 0);
    }

    #[test]
    fn a_connected_socket_hears_its_peer_only() {
        let p = program(&spec(Some(("192.0.2.1:7".parse().unwrap(), false))));
        let from = |head: &[u8]| run(&p, &ipv4_header(RELAY), &udp(1080, &[head, b"x"].concat()));
        assert_eq!(from(&[0, 0, 0, 1, 192, 0, 2, 1, 0, 7]), u32::MAX);
        assert_eq!(from(&[[0, 0, 0, 4].as_slice(), &[0; 10], &[0xff, 0xff, 192, 0, 2, 1], &[0, 7]].concat()), u32::MAX, "v4-mapped");
        assert_eq!(from(&[0, 0, 0, 1, 192, 0, 2, 2, 0, 7]), 0);
        assert_eq!(from(&[0, 0, 0, 1, 192, 0, 2, 1, 0, 8]), 0);
        assert_eq!(from(&[0, 0, 0, 3, 1, b'a', 0, 7]), 0);
        // A fake peer: only the port is checked, whatever the ATYP.
        let p = program(&spec(Some(("198.18.0.5:7".parse().unwrap(), true))));
        let from = |head: &[u8]| run(&p, &ipv4_header(RELAY), &udp(1080, &[head, b"x"].concat()));
        assert_eq!(from(&[0, 0, 0, 3, 3, b'a', b'.', b'b', 0, 7]), u32::MAX);
        assert_eq!(from(&[0, 0, 0, 3, 3, b'a', b'.', b'b', 0, 8]), 0);
        assert_eq!(from(&[0, 0, 0, 1, 203, 0, 113, 9, 0, 7]), u32::MAX);
    }
}
