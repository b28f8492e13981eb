//! The in-process DNS responder of remote-DNS mode, sans-I/O: a query's
//! bytes in, what to do with them out.
//!
//! Programs with a resolver of their own (`dig`, `host`, node's c-ares,
//! dnspython) send DNS messages to the nameservers of `/etc/resolv.conf`
//! instead of calling `getaddrinfo`. The shim hands each such message to
//! [`respond`], which answers it the way the libc hooks answer a look-up:
//!
//! | question | answer |
//! | --- | --- |
//! | A / AAAA of a name the proxy resolves | the name's fake address ([`Names::forward`]) |
//! | A / AAAA of a name in `/etc/hosts` | the file's addresses (none of that family: NODATA) |
//! | PTR of a fake address | the name that holds it; NXDOMAIN if none does |
//! | anything about a name or address `SOCKSIFY_NO_PROXY` bypasses | [`Reply::Forward`] to the program's own nameserver |
//! | any other type (MX, TXT, SRV, NS, ANY, …), PTR of a real address, class other than IN, the root | [`Reply::Forward`] to an upstream resolver through the proxy when one is configured, else REFUSED |
//! | opcode other than QUERY | NOTIMP |
//! | QDCOUNT ≠ 1, a compressed or malformed question, more than one OPT | FORMERR |
//! | a response, or fewer than 12 bytes | dropped (nothing to answer, and answering responses could loop) |
//!
//! EDNS0 (RFC 6891): an OPT record in the query is answered with one
//! (our payload size, version 0, the DO bit copied as RFC 3225 says); a
//! version above 0 gets BADVERS. A UDP answer that does not fit the
//! client's size (512 bytes, or its EDNS size) is sent truncated (TC set,
//! no records), so the client retries over TCP.
//!
//! Parsing never panics on any input (`tests/parsers_never_panic.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record types we read or write.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

/// Response codes (RFC 1035 4.1.1, RFC 6891 for BADVERS).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// Extended (needs an OPT record to carry its upper bits).
    pub const BADVERS: u16 = 16;
}

pub const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
/// The largest DNS message over UDP without EDNS (RFC 1035 4.2.1).
pub const UDP_PLAIN_MAX: usize = 512;
/// The EDNS payload size we advertise and honour at most (the DNS flag
/// day 2020 value: no IP fragmentation on any common path).
pub const EDNS_PAYLOAD: u16 = 1232;
/// TTL of fake answers: short, since a fake address is only good while the
/// table holds its name.
pub const FAKE_TTL: u32 = 60;

/// The EDNS0 part of a query (its OPT record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub version: u8,
    pub udp_size: u16,
    pub dnssec_ok: bool,
}

/// A parsed query: one question, the header fields an answer echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    /// Recursion desired, checking disabled: copied into the answer.
    pub rd: bool,
    pub cd: bool,
    /// The question name in presentation form, no trailing dot, case as
    /// sent (`""` is the root). Labels hold only visible ASCII other than
    /// `.` (else the question is refused: no host name looks like that).
    pub name: Option<String>,
    pub qtype: u16,
    pub qclass: u16,
    /// The question as it was on the wire (QNAME QTYPE QCLASS), echoed
    /// byte for byte (DNS 0x20 clients check the case).
    question: Vec<u8>,
    pub edns: Option<Edns>,
}

/// Why a message is not a query we can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    /// Not a query at all (too short, or a response): no answer.
    Ignore,
    /// Answer with just a header and this code (FORMERR, NOTIMP).
    Reject(u16),
}

/// Reads a name at `at` without following compression pointers; returns
/// the labels and the offset after the name. `None` if malformed.
fn read_name(msg: &[u8], mut at: usize) -> Option<(Vec<&[u8]>, usize)> {
    let mut labels = Vec::new();
    let mut wire_len = 1;
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels, at));
        }
        if len & 0xc0 != 0 {
            return None; // a pointer or a reserved label type
        }
        wire_len += 1 + len;
        if wire_len > 255 {
            return None;
        }
        labels.push(msg.get(at..at + len)?);
        at += len;
    }
}

/// Skips a name that may end in a compression pointer (records after
/// the question); returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + len as usize,
            0xc0 => return msg.get(at + 1).map(|_| at + 2),
            _ => return None,
        }
    }
    None
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// The labels as a host name, if each is visible ASCII without a dot.
fn presentation(labels: &[&[u8]]) -> Option<String> {
    let ok = labels.iter().all(|l| l.iter().all(|&b| b.is_ascii_graphic() && b != b'.'));
    ok.then(|| labels.iter().map(|l| std::str::from_utf8(l).unwrap_or_default()).collect::<Vec<_>>().join("."))
}

impl Query {
    /// Parses a DNS query message (RFC 1035 4.1).
    pub fn parse(msg: &[u8]) -> Result<Query, QueryError> {
        if msg.len() < HEADER_LEN || msg[2] & 0x80 != 0 {
            return Err(QueryError::Ignore);
        }
        let opcode = (msg[2] >> 3) & 0x0f;
        if opcode != 0 {
            return Err(QueryError::Reject(rcode::NOTIMP));
        }
        let count = |i: usize| u16::from_be_bytes([msg[4 + 2 * i], msg[5 + 2 * i]]);
        let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
        let formerr = QueryError::Reject(rcode::FORMERR);
        if qd != 1 {
            return Err(formerr);
        }
        let (labels, at) = read_name(msg, HEADER_LEN).ok_or(formerr)?;
        let qtype = u16_at(msg, at).ok_or(formerr)?;
        let qclass = u16_at(msg, at + 2).ok_or(formerr)?;
        let question = msg[HEADER_LEN..at + 4].to_vec();
        let mut at = at + 4;
        let mut edns = None;
        // Records after the question: walk them all (a malformed one is
        // FORMERR), and take the OPT record of the additional section.
        for i in 0..(an as usize + ns as usize + ar as usize) {
            let name_at = at;
            at = skip_name(msg, at).ok_or(formerr)?;
            let rr_type = u16_at(msg, at).ok_or(formerr)?;
            let class = u16_at(msg, at + 2).ok_or(formerr)?;
            let ttl = msg.get(at + 4..at + 8).ok_or(formerr)?;
            let ttl = u32::from_be_bytes([ttl[0], ttl[1], ttl[2], ttl[3]]);
            let rdlen = u16_at(msg, at + 8).ok_or(formerr)? as usize;
            at += 10;
            msg.get(at..at + rdlen).ok_or(formerr)?;
            at += rdlen;
            if rr_type == rtype::OPT {
                // RFC 6891 6.1.1: in the additional section, owner the root, at most one.
                let additional = i >= an as usize + ns as usize;
                if !additional || msg[name_at] != 0 || edns.is_some() {
                    return Err(formerr);
                }
                edns = Some(Edns { version: (ttl >> 16) as u8, udp_size: class, dnssec_ok: ttl & 0x8000 != 0 });
            }
        }
        Ok(Query {
            id: u16::from_be_bytes([msg[0], msg[1]]),
            opcode,
            rd: msg[2] & 0x01 != 0,
            cd: msg[3] & 0x10 != 0,
            name: presentation(&labels),
            qtype,
            qclass,
            question,
            edns,
        })
    }

    /// The question's wire bytes (QNAME QTYPE QCLASS).
    pub fn question(&self) -> &[u8] {
        &self.question
    }

    /// The largest answer this query's client takes over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.udp_size.min(EDNS_PAYLOAD) as usize).max(UDP_PLAIN_MAX),
            None => UDP_PLAIN_MAX,
        }
    }
}

/// An answer record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// A host name (presentation form).
    Ptr(String),
}

/// How the answer travels: UDP answers must fit the client's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Writes `name` in wire form (no compression). Labels of a name we
/// answer with come from our own table: at most 63 bytes each is enforced
/// by cutting the answer short rather than panicking.
fn emit_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

/// A header-only answer to the message `msg` (FORMERR, NOTIMP), or
/// `None` if it has no header to answer.
pub fn reject(msg: &[u8], code: u16) -> Option<Vec<u8>> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&msg[..2]);
    out[2] = 0x80 | (msg[2] & 0x79); // QR, opcode and RD as sent
    out[3] = 0x80 | (code & 0x0f) as u8; // RA
    Some(out)
}

/// The answer to `q` with response code `code` and `records` (each of the
/// question's name, class IN, [`FAKE_TTL`]).
pub fn answer(q: &Query, code: u16, records: &[RData], transport: Transport) -> Vec<u8> {
    let build = |records: &[RData], truncated: bool| {
        let mut out = Vec::with_capacity(HEADER_LEN + q.question.len() + 64);
        out.extend_from_slice(&q.id.to_be_bytes());
        out.push(0x80 | (q.opcode << 3) | if truncated { 0x02 } else { 0 } | q.rd as u8);
        out.push(0x80 | if q.cd { 0x10 } else { 0 } | (code & 0x0f) as u8);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(q.edns.is_some() as u16).to_be_bytes());
        out.extend_from_slice(&q.question);
        for r in records {
            out.extend_from_slice(&[0xc0, HEADER_LEN as u8]); // the question's name
            let (ty, data) = match r {
                RData::A(a) => (rtype::A, a.octets().to_vec()),
                RData::Aaaa(a) => (rtype::AAAA, a.octets().to_vec()),
                RData::Ptr(name) => {
                    let mut d = Vec::new();
                    emit_name(name, &mut d);
                    (rtype::PTR, d)
                }
            };
            out.extend_from_slice(&ty.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&FAKE_TTL.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        if let Some(e) = q.edns {
            // OPT: root owner, our payload size, extended rcode, version 0, DO as asked.
            let ttl = (u32::from(code >> 4) << 24) | if e.dnssec_ok { 0x8000 } else { 0 };
            out.push(0);
            out.extend_from_slice(&rtype::OPT.to_be_bytes());
            out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        out
    };
    let full = build(records, false);
    if transport == Transport::Udp && full.len() > q.udp_limit() {
        return build(&[], true);
    }
    full
}

/// What the shim knows about a name or an address.
pub trait Names {
    /// Who answers for `name` (presentation form, case as sent).
    fn forward(&mut self, name: &str) -> NameAnswer;
    /// Who answers a reverse look-up of `ip`.
    fn reverse(&mut self, ip: IpAddr) -> ReverseAnswer;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameAnswer {
    /// A name the proxy resolves: its fake addresses.
    Fake(Ipv4Addr, Ipv6Addr),
    /// A name `/etc/hosts` lists (or `localhost`): its addresses there.
    Hosts(Vec<Ipv4Addr>, Vec<Ipv6Addr>),
    /// `SOCKSIFY_NO_PROXY` bypasses it: the program's nameserver answers.
    Bypassed,
    /// No fake address is free now (every one is held or recent): a
    /// temporary failure, SERVFAIL (the resolver hooks say `EAI_AGAIN`).
    Exhausted,
    /// No name can be this one: NXDOMAIN (the resolver hooks say
    /// `EAI_NONAME`).
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReverseAnswer {
    /// A fake address held by this name.
    Name(String),
    /// A fake address no name holds.
    Unknown,
    /// An address `SOCKSIFY_NO_PROXY` bypasses: the nameserver answers.
    Bypassed,
    /// A real address: only real DNS knows.
    Real,
}

/// Where a query that the shim cannot answer itself goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The nameserver the program sent it to (bypassed names and addresses).
    Nameserver,
    /// The upstream resolver reached through the proxy.
    Upstream,
}

/// What to do with a message sent to a nameserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Give the program these bytes as the nameserver's answer.
    Answer(Vec<u8>),
    /// Send the query, unchanged, along `Route` and give the program what
    /// comes back (or, if nothing does, [`servfail`]).
    Forward(Route),
    /// Nothing to answer.
    Drop,
}

/// The address a PTR name stands for (`4.3.2.1.in-addr.arpa`, 32
/// nibbles of `ip6.arpa`), if it names a whole address.
pub fn ptr_addr(name: &str) -> Option<IpAddr> {
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let mut octets = [0u8; 4];
        for (i, p) in parts.iter().rev().enumerate() {
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = lower.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for n in nibbles.iter().rev() {
        if n.len() != 1 {
            return None;
        }
        value = value << 4 | u128::from_str_radix(n, 16).ok()?;
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

/// Decides the reply to `msg`, a message a program sent to its nameserver.
/// `upstream`: whether queries we cannot fake have somewhere to go.
pub fn respond(msg: &[u8], names: &mut dyn Names, transport: Transport, upstream: bool) -> Reply {
    let q = match Query::parse(msg) {
        Ok(q) => q,
        Err(QueryError::Ignore) => return Reply::Drop,
        Err(QueryError::Reject(code)) => return reject(msg, code).map_or(Reply::Drop, Reply::Answer),
    };
    let cannot_fake = || if upstream { Reply::Forward(Route::Upstream) } else { Reply::Answer(answer(&q, rcode::REFUSED, &[], transport)) };
    if q.edns.is_some_and(|e| e.version > 0) {
        return Reply::Answer(answer(&q, rcode::BADVERS, &[], transport));
    }
    let Some(name) = q.name.as_deref().filter(|n| !n.is_empty() && q.qclass == CLASS_IN) else { return cannot_fake() };
    let reply = |records: Vec<RData>| Reply::Answer(answer(&q, rcode::NOERROR, &records, transport));
    if q.qtype == rtype::PTR {
        if let Some(ip) = ptr_addr(name) {
            return match names.reverse(ip) {
                ReverseAnswer::Name(n) => reply(vec![RData::Ptr(n)]),
                ReverseAnswer::Unknown => Reply::Answer(answer(&q, rcode::NXDOMAIN, &[], transport)),
                ReverseAnswer::Bypassed => Reply::Forward(Route::Nameserver),
                ReverseAnswer::Real => cannot_fake(),
            };
        }
    }
    match names.forward(name) {
        NameAnswer::Bypassed => Reply::Forward(Route::Nameserver),
        NameAnswer::Exhausted => Reply::Answer(answer(&q, rcode::SERVFAIL, &[], transport)),
        NameAnswer::NotFound => Reply::Answer(answer(&q, rcode::NXDOMAIN, &[], transport)),
        NameAnswer::Fake(v4, v6) => match q.qtype {
            rtype::A => reply(vec![RData::A(v4)]),
            rtype::AAAA => reply(vec![RData::Aaaa(v6)]),
            _ => cannot_fake(),
        },
        NameAnswer::Hosts(v4, v6) => match q.qtype {
            rtype::A => reply(v4.into_iter().map(RData::A).collect()),
            rtype::AAAA => reply(v6.into_iter().map(RData::Aaaa).collect()),
            _ => cannot_fake(),
        },
    }
}

/// SERVFAIL for `msg`: what the program gets when a forwarded query found
/// no answer in time.
pub fn servfail(msg: &[u8], transport: Transport) -> Option<Vec<u8>> {
    match Query::parse(msg) {
        Ok(q) => Some(answer(&q, rcode::SERVFAIL, &[], transport)),
        Err(QueryError::Ignore) => None,
        Err(QueryError::Reject(code)) => reject(msg, code),
    }
}

/// A forwarded answer made to fit a UDP client: as it is if small enough,
/// else header and question with TC set (the client retries over TCP).
pub fn fit_udp(query: &Query, response: Vec<u8>) -> Vec<u8> {
    if response.len() <= query.udp_limit() {
        return response;
    }
    let end = (HEADER_LEN + query.question.len()).min(response.len());
    let mut out = response[..end].to_vec();
    if out.len() >= HEADER_LEN {
        out[2] |= 0x02;
        out[6..HEADER_LEN].fill(0);
    }
    out
}

/// The nameservers of a `resolv.conf` text, in order; glibc's default
/// (the local host) when it names none.
pub fn resolv_conf_nameservers(text: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == "nameserver").then_some(())?;
            let addr = fields.next()?;
            // An IPv6 address may carry a zone (`fe80::1%eth0`).
            addr.split('%').next()?.parse::<IpAddr>().ok()
        })
        .collect();
    if out.is_empty() {
        out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype` with RD set; `opt`: an OPT record (version, size, DO).
    pub(crate) fn query(id: u16, name: &str, qtype: u16, opt: Option<(u8, u16, bool)>) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, opt.is_some() as u8]);
        emit_name(name, &mut m);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some((version, size, dnssec_ok)) = opt {
            m.push(0);
            m.extend_from_slice(&rtype::OPT.to_be_bytes());
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        }
        m
    }

    struct Table;
    impl Names for Table {
        fn forward(&mut self, name: &str) -> NameAnswer {
            match name.to_ascii_lowercase().as_str() {
                "local.test" => NameAnswer::Bypassed,
                "localhost" => NameAnswer::Hosts(vec![Ipv4Addr::LOCALHOST], vec![]),
                _ => NameAnswer::Fake(Ipv4Addr::new(198, 18, 0, 1), "fd50:c5f1:f1ed::1".parse().unwrap()),
            }
        }
        fn reverse(&mut self, ip: IpAddr) -> ReverseAnswer {
            match ip.to_string().as_str() {
                "198.18.0.1" | "fd50:c5f1:f1ed::1" => ReverseAnswer::Name("name.test".into()),
                "198.18.0.9" => ReverseAnswer::Unknown,
                "10.0.0.1" => ReverseAnswer::Bypassed,
                _ => ReverseAnswer::Real,
            }
        }
    }

    fn answered(msg: &[u8], upstream: bool) -> Vec<u8> {
        match respond(msg, &mut Table, Transport::Udp, upstream) {
            Reply::Answer(a) => a,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn header(a: &[u8]) -> (u16, u8, u16, u16, u16) {
        let c = |i: usize| u16::from_be_bytes([a[4 + 2 * i], a[5 + 2 * i]]);
        (u16::from_be_bytes([a[0], a[1]]), a[3] & 0x0f, c(1), c(2), c(3))
    }

    #[test]
    fn a_and_aaaa_of_a_proxied_name_are_fake() {
        let q = query(0x1234, "Name.Test", rtype::A, None);
        let a = answered(&q, false);
        assert_eq!(header(&a), (0x1234, 0, 1, 0, 0));
        assert_eq!(a[2], 0x81, "QR, RD copied, not truncated");
        assert_eq!(a[3] & 0x80, 0x80, "RA");
        assert_eq!(&a[12..q.len()], &q[12..], "question echoed byte for byte, case kept");
        assert_eq!(&a[a.len() - 4..], &[198, 18, 0, 1]);
        let rr = &a[q.len()..];
        assert_eq!(&rr[..12], &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        let a6 = answered(&query(7, "name.test", rtype::AAAA, None), false);
        assert_eq!(&a6[a6.len() - 16..], &"fd50:c5f1:f1ed::1".parse::<Ipv6Addr>().unwrap().octets());
    }

    #[test]
    fn hosts_names_and_nodata() {
        let a = answered(&query(1, "localhost", rtype::A, None), false);
        assert_eq!((header(&a).1, header(&a).2), (0, 1));
        let a = answered(&query(1, "localhost", rtype::AAAA, None), false);
        assert_eq!((header(&a).1, header(&a).2), (0, 0), "NODATA");
    }

    #[test]
    fn ptr_of_fake_gives_the_name_and_others_are_refused_or_forwarded() {
        let a = answered(&query(1, "1.0.18.198.in-addr.arpa", rtype::PTR, None), false);
        assert_eq!(header(&a).2, 1);
        assert!(a.ends_with(&[4, b'n', b'a', b'm', b'e', 4, b't', b'e', b's', b't', 0]));
        let nibbles: String = format!("{:032x}", u128::from("fd50:c5f1:f1ed::1".parse::<Ipv6Addr>().unwrap()))
            .chars()
            .rev()
            .map(|c| format!("{c}."))
            .collect();
        let v6 = format!("{nibbles}ip6.arpa");
        assert_eq!(header(&answered(&query(1, &v6, rtype::PTR, None), false)).2, 1);
        assert_eq!(header(&answered(&query(1, "9.0.18.198.in-addr.arpa", rtype::PTR, None), false)).1, rcode::NXDOMAIN as u8);
        assert_eq!(header(&answered(&query(1, "1.0.0.127.in-addr.arpa", rtype::PTR, None), false)).1, rcode::REFUSED as u8);
        assert_eq!(
            respond(&query(1, "1.0.0.127.in-addr.arpa", rtype::PTR, None), &mut Table, Transport::Udp, true),
            Reply::Forward(Route::Upstream)
        );
        assert_eq!(
            respond(&query(1, "1.0.0.10.in-addr.arpa", rtype::PTR, None), &mut Table, Transport::Udp, false),
            Reply::Forward(Route::Nameserver)
        );
    }

    #[test]
    fn types_we_cannot_fake_are_refused_or_go_upstream() {
        for t in [rtype::MX, rtype::TXT, rtype::SRV, rtype::NS, rtype::ANY] {
            let q = query(9, "name.test", t, None);
            assert_eq!(header(&answered(&q, false)), (9, rcode::REFUSED as u8, 0, 0, 0));
            assert_eq!(respond(&q, &mut Table, Transport::Udp, true), Reply::Forward(Route::Upstream));
        }
        assert_eq!(header(&answered(&query(9, "", rtype::NS, None), false)).1, rcode::REFUSED as u8, "the root");
    }

    #[test]
    fn an_exhausted_pool_is_a_temporary_failure() {
        struct Full;
        impl Names for Full {
            fn forward(&mut self, _: &str) -> NameAnswer {
                NameAnswer::Exhausted
            }
            fn reverse(&mut self, _: IpAddr) -> ReverseAnswer {
                ReverseAnswer::Real
            }
        }
        let Reply::Answer(a) = respond(&query(4, "name.test", rtype::A, None), &mut Full, Transport::Udp, false) else { panic!() };
        assert_eq!(header(&a), (4, rcode::SERVFAIL as u8, 0, 0, 0));
    }

    #[test]
    fn a_name_that_cannot_exist_is_nxdomain() {
        struct Nothing;
        impl Names for Nothing {
            fn forward(&mut self, _: &str) -> NameAnswer {
                NameAnswer::NotFound
            }
            fn reverse(&mut self, _: IpAddr) -> ReverseAnswer {
                ReverseAnswer::Real
            }
        }
        for qtype in [rtype::A, rtype::AAAA, rtype::MX] {
            let Reply::Answer(a) = respond(&query(5, "name.test", qtype, None), &mut Nothing, Transport::Udp, true) else { panic!() };
            assert_eq!(header(&a), (5, rcode::NXDOMAIN as u8, 0, 0, 0), "type {qtype}");
        }
    }

    #[test]
    fn bypassed_names_go_to_the_nameserver_whatever_the_type() {
        for t in [rtype::A, rtype::MX] {
            assert_eq!(respond(&query(1, "LOCAL.test", t, None), &mut Table, Transport::Udp, false), Reply::Forward(Route::Nameserver));
        }
    }

    #[test]
    fn edns_is_echoed_and_bad_versions_get_badvers() {
        let a = answered(&query(1, "name.test", rtype::A, Some((0, 4096, true))), false);
        assert_eq!((header(&a).2, header(&a).4), (1, 1));
        let opt = &a[a.len() - 11..];
        assert_eq!(opt, &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0], "root, OPT, 1232, rcode 0, version 0, DO copied");
        let a = answered(&query(1, "name.test", rtype::A, Some((1, 4096, false))), false);
        assert_eq!((header(&a).1, header(&a).2), (0, 0));
        assert_eq!(&a[a.len() - 11..], &[0, 0, 41, 0x04, 0xd0, 1, 0, 0, 0, 0, 0], "BADVERS = 16: upper bits 1 in the OPT");
    }

    #[test]
    fn malformed_queries() {
        let good = query(5, "name.test", rtype::A, None);
        assert_eq!(respond(&good[..11], &mut Table, Transport::Udp, false), Reply::Drop);
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(respond(&response, &mut Table, Transport::Udp, false), Reply::Drop, "never answer a response");
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(header(&answered(&two, false)), (5, rcode::FORMERR as u8, 0, 0, 0));
        let mut update = good.clone();
        update[2] = 5 << 3;
        assert_eq!(header(&answered(&update, false)).1, rcode::NOTIMP as u8);
        for k in 12..good.len() {
            assert_eq!(header(&answered(&good[..k], false)).1, rcode::FORMERR as u8, "prefix {k}");
        }
        let mut two_opts = query(5, "name.test", rtype::A, Some((0, 512, false)));
        let opt = two_opts[good.len()..].to_vec();
        two_opts.extend_from_slice(&opt);
        two_opts[11] = 2;
        assert_eq!(header(&answered(&two_opts, false)).1, rcode::FORMERR as u8);
        let mut odd = query(5, "a.b", rtype::A, None);
        odd[13] = b' ';
        assert_eq!(header(&answered(&odd, false)).1, rcode::REFUSED as u8, "a label no host name has");
    }

    #[test]
    fn udp_answers_that_do_not_fit_are_truncated() {
        struct Long;
        impl Names for Long {
            fn forward(&mut self, _: &str) -> NameAnswer {
                NameAnswer::Hosts((0..200).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect(), vec![])
            }
            fn reverse(&mut self, _: IpAddr) -> ReverseAnswer {
                ReverseAnswer::Real
            }
        }
        let q = query(3, "many.test", rtype::A, None);
        let Reply::Answer(a) = respond(&q, &mut Long, Transport::Udp, false) else { panic!() };
        assert_eq!((a.len(), a[2] & 0x02, header(&a).2), (q.len(), 0x02, 0));
        let Reply::Answer(a) = respond(&q, &mut Long, Transport::Tcp, false) else { panic!() };
        assert_eq!((a[2] & 0x02, header(&a).2), (0, 200));
        let parsed = Query::parse(&q).unwrap();
        let fitted = fit_udp(&parsed, a);
        assert_eq!((fitted.len(), fitted[2] & 0x02, header(&fitted).2), (q.len(), 0x02, 0));
    }

    #[test]
    fn ptr_names() {
        assert_eq!(ptr_addr("4.3.2.1.IN-ADDR.ARPA"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(ptr_addr("3.2.1.in-addr.arpa"), None);
        assert_eq!(ptr_addr("256.3.2.1.in-addr.arpa"), None);
        let v6 = "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa";
        assert_eq!(ptr_addr(v6), Some("4321:0:1:2:3:4:567:89ab".parse().unwrap()));
        assert_eq!(ptr_addr("1.ip6.arpa"), None);
    }

    #[test]
    fn nameservers_of_resolv_conf() {
        let text = "# c\nsearch x\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
        assert_eq!(resolv_conf_nameservers(text), vec!["127.0.0.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
        assert_eq!(resolv_conf_nameservers(""), vec![IpAddr::from(Ipv4Addr::LOCALHOST), IpAddr::from(Ipv6Addr::LOCALHOST)]);
    }
}
