//! The wire contract, checked on arbitrary input: every parser that reads
//! bytes from the network never panics, never claims to have used more bytes
//! than it was given, and `emit` → `parse` gives back what was emitted.

use proptest::prelude::*;
use socksify_proto::dns::{self, NameAnswer, Names, Query, QueryError, ReverseAnswer, Transport};
use socksify_proto::handshake::{ClientHandshake, Credentials, Dialect, Progress};
use socksify_proto::wire::auth::{AuthReply, AuthRequest};
use socksify_proto::wire::socks4::{Reply4, Request4};
use socksify_proto::wire::socks5::{Command, Greeting, MethodSelection, Reply, ReplyCode, Request};
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::TargetAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..700)
}

/// Bytes that start like a real message of `version`, so parsers get past the first check.
fn shaped(first: u8) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600).prop_map(move |mut v| {
        v.insert(0, first);
        v
    })
}

/// Any address SOCKS5 carries unchanged (v4-mapped IPv6 is sent as IPv4 by design).
fn target() -> impl Strategy<Value = TargetAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))),
        (any::<u128>(), any::<u16>())
            .prop_filter("not v4-mapped", |(ip, _)| Ipv6Addr::from(*ip).to_ipv4_mapped().is_none())
            .prop_map(|(ip, port)| TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))),
        ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(name, port)| TargetAddr::domain(&name, port).unwrap()),
        ("\\PC{1,60}", any::<u16>()).prop_filter_map("fits in 255 bytes", |(name, port)| TargetAddr::domain(&name, port)),
    ]
}

fn used_within<T>(r: Result<(T, usize), socksify_proto::wire::Error>, len: usize) -> bool {
    r.map_or(true, |(_, used)| used <= len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_parser_panics_on_arbitrary_bytes(b in bytes()) {
        let n = b.len();
        prop_assert!(used_within(TargetAddr::parse(&b), n));
        prop_assert!(used_within(Greeting::parse(&b), n));
        prop_assert!(used_within(MethodSelection::parse(&b), n));
        prop_assert!(used_within(Request::parse(&b), n));
        prop_assert!(used_within(Reply::parse(&b), n));
        let _ = Reply::total_len(&b);
        prop_assert!(used_within(AuthRequest::parse(&b), n));
        prop_assert!(used_within(AuthReply::parse(&b), n));
        prop_assert!(used_within(UdpHeader::parse(&b), n));
        prop_assert!(used_within(Request4::parse(&b), n));
        prop_assert!(used_within(Reply4::parse(&b), n));
    }

    #[test]
    fn no_parser_panics_past_the_version_byte(b5 in shaped(5), b4 in shaped(4), b1 in shaped(1), b0 in shaped(0)) {
        prop_assert!(used_within(Greeting::parse(&b5), b5.len()));
        prop_assert!(used_within(Request::parse(&b5), b5.len()));
        prop_assert!(used_within(Reply::parse(&b5), b5.len()));
        let _ = Reply::total_len(&b5);
        prop_assert!(used_within(Request4::parse(&b4), b4.len()));
        prop_assert!(used_within(AuthRequest::parse(&b1), b1.len()));
        prop_assert!(used_within(UdpHeader::parse(&[&[0u8, 0][..], &b0].concat()), b0.len() + 2));
        prop_assert!(used_within(Reply4::parse(&b0), b0.len()));
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_truncated_not_malformed(dst in target(), cmd in 1u8..=3) {
        let mut out = Vec::new();
        Request { command: cmd, dst }.emit(&mut out);
        for k in 0..out.len() {
            prop_assert_eq!(Request::parse(&out[..k]), Err(socksify_proto::wire::Error::Truncated));
        }
    }

    #[test]
    fn socks5_messages_round_trip(dst in target(), cmd in any::<u8>(), code in any::<u8>(), methods in prop::collection::vec(any::<u8>(), 1..=255), tail in bytes()) {
        let req = Request { command: cmd, dst: dst.clone() };
        let mut out = Vec::new();
        req.emit(&mut out);
        let len = out.len();
        out.extend_from_slice(&tail);
        prop_assert_eq!(Request::parse(&out), Ok((req, len)));

        let reply = Reply { code: ReplyCode::from_code(code), bound: dst.clone() };
        let mut out = Vec::new();
        reply.emit(&mut out);
        prop_assert_eq!(Reply::total_len(&out), Ok(out.len()));
        prop_assert_eq!(Reply::parse(&out), Ok((reply, out.len())));

        let g = Greeting { methods };
        let mut out = Vec::new();
        g.emit(&mut out);
        prop_assert_eq!(Greeting::parse(&out), Ok((g, out.len())));

        let h = UdpHeader { frag: code, dst };
        let mut out = Vec::new();
        h.emit(&mut out);
        prop_assert_eq!(out.len(), h.encoded_len());
        out.extend_from_slice(&tail);
        prop_assert_eq!(UdpHeader::parse(&out), Ok((h.clone(), h.encoded_len())));
    }

    #[test]
    fn auth_round_trips(user in prop::collection::vec(any::<u8>(), 0..=255), pass in prop::collection::vec(any::<u8>(), 0..=255), status in any::<u8>()) {
        let req = AuthRequest { user, pass };
        let mut out = Vec::new();
        req.emit(&mut out);
        prop_assert_eq!(AuthRequest::parse(&out), Ok((req, out.len())));
        let rep = AuthReply { status };
        let mut out = Vec::new();
        rep.emit(&mut out);
        prop_assert_eq!(AuthReply::parse(&out), Ok((rep, 2)));
    }

    #[test]
    fn socks4_round_trips(
        ip in any::<u32>().prop_filter("0.0.0.x means 4a", |ip| *ip > 0xff),
        port in any::<u16>(),
        user in "[^\u{0}]{0,60}".prop_filter("fits", |u| u.len() <= 255),
        name in "[a-z0-9.-]{1,255}",
        command in any::<u8>(),
        code in any::<u8>(),
    ) {
        for dst in [TargetAddr::Ip(SocketAddr::new(Ipv4Addr::from(ip).into(), port)), TargetAddr::domain(&name, port).unwrap()] {
            let req = Request4 { command, user_id: user.as_bytes().to_vec(), dst };
            let mut out = Vec::new();
            req.emit(&mut out);
            prop_assert_eq!(Request4::parse(&out), Ok((req, out.len())));
        }
        let rep = Reply4 { code, port, ip: Ipv4Addr::from(ip) };
        let mut out = Vec::new();
        rep.emit(&mut out);
        prop_assert_eq!(Reply4::parse(&out), Ok((rep, 8)));
    }

    /// The client handshake fed arbitrary proxy bytes, as a driver would
    /// (never more than `wanted`), lock-step or pipelined, never panics,
    /// always ends, and sends each message in its turn.
    #[test]
    fn client_handshake_survives_any_server(
        dst in target(), reply in bytes(), auth in any::<bool>(), v4 in any::<bool>(), pipeline in any::<bool>()
    ) {
        let dialect = if v4 {
            Dialect::Socks4 { user_id: b"u".to_vec() }
        } else {
            Dialect::Socks5 { credentials: auth.then(|| Credentials { user: b"u".to_vec(), pass: b"p".to_vec() }), pipeline }
        };
        let Ok((mut hs, flight)) = ClientHandshake::start(&dialect, Command::Connect, &dst) else { return Ok(()) };
        let mut sent = flight.clone();
        let (g, mut at) = match dialect {
            Dialect::Socks5 { .. } => Greeting::parse(&flight).unwrap(),
            Dialect::Socks4 { .. } => (Greeting { methods: vec![0] }, flight.len()),
        };
        if !v4 && pipeline {
            // Pipelined: the whole first flight, one method offered.
            prop_assert_eq!(g.methods.len(), 1);
            if auth {
                at += AuthRequest::parse(&flight[at..]).unwrap().1;
            }
            let (req, used) = Request::parse(&flight[at..]).unwrap();
            prop_assert_eq!((req.dst, at + used), (dst.clone(), flight.len()));
        } else {
            // Lock-step: the greeting (or the SOCKS4 request) alone.
            prop_assert_eq!(at, flight.len());
        }
        let mut rest = &reply[..];
        let mut steps = 0;
        while !hs.is_done() && !rest.is_empty() {
            let n = hs.wanted().min(rest.len());
            let (now, later) = rest.split_at(n);
            rest = later;
            steps += 1;
            match hs.feed(now) {
                Ok(Progress::Done(_)) | Err(_) => break,
                Ok(Progress::Send(bytes)) => sent.extend_from_slice(&bytes),
                Ok(Progress::NeedMore) => {}
            }
            prop_assert!(steps <= reply.len() + 1);
        }
        // Whatever was sent is a prefix of the pipelined flight's messages
        // in order: never the request before the server chose a method.
        if let (false, Dialect::Socks5 { .. }) = (v4, &dialect) {
            let (_, used) = Greeting::parse(&sent).unwrap();
            let mut at = used;
            if at < sent.len() && auth && sent[at] == 1 {
                at += AuthRequest::parse(&sent[at..]).unwrap().1;
            }
            if at < sent.len() {
                let (req, used) = Request::parse(&sent[at..]).unwrap();
                prop_assert_eq!((req.dst, at + used), (dst, sent.len()));
            }
        }
    }
}

/// A table that answers every name with a fake address, bypasses `*.local`,
/// and knows one reverse name: enough to drive every branch of the responder.
struct AnyNames;

impl Names for AnyNames {
    fn forward(&mut self, name: &str) -> NameAnswer {
        if name.ends_with(".local") {
            NameAnswer::Bypassed
        } else {
            NameAnswer::Fake(Ipv4Addr::new(198, 18, 0, 1), Ipv6Addr::new(0xfd50, 0xc5f1, 0xf1ed, 0, 0, 0, 0, 1))
        }
    }
    fn reverse(&mut self, ip: IpAddr) -> ReverseAnswer {
        if ip == IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)) {
            ReverseAnswer::Name("x".repeat(63) + "." + &"y".repeat(63) + "." + &"z".repeat(63))
        } else {
            ReverseAnswer::Real
        }
    }
}

/// A well-formed query: a header with random ID and flags (QR clear,
/// opcode 0), one question of random labels and type, maybe an OPT record.
fn dns_query() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        any::<u8>(),
        prop::collection::vec("[a-zA-Z0-9_-]{1,20}", 0..6),
        prop_oneof![Just(1u16), Just(28), Just(12), Just(15), Just(16), any::<u16>()],
        prop::option::of((any::<u8>(), any::<u16>(), any::<bool>())),
    )
        .prop_map(|(id, flags, labels, qtype, opt)| {
            let mut m = id.to_be_bytes().to_vec();
            m.extend_from_slice(&[flags & 0x07, 0, 0, 1, 0, 0, 0, 0, 0, opt.is_some() as u8]);
            for l in &labels {
                m.push(l.len() as u8);
                m.extend_from_slice(l.as_bytes());
            }
            m.push(0);
            m.extend_from_slice(&qtype.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            if let Some((version, size, dnssec_ok)) = opt {
                m.extend_from_slice(&[0, 0, 41]);
                m.extend_from_slice(&size.to_be_bytes());
                m.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
            }
            m
        })
}

/// Checks what every answer the responder makes must be: the query's ID,
/// QR set, and (over UDP) no larger than the client takes.
fn check_answer(query: &[u8], a: &[u8], transport: Transport) -> Result<(), TestCaseError> {
    prop_assert!(a.len() >= 12);
    prop_assert_eq!(&a[..2], &query[..2]);
    prop_assert!(a[2] & 0x80 != 0, "QR");
    if transport == Transport::Udp {
        let limit = Query::parse(query).map_or(512, |q| q.udp_limit());
        prop_assert!(a.len() <= limit.max(512));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// The DNS responder on arbitrary bytes, and on bytes that start with
    /// a one-question query header: never a panic, and every answer is one.
    #[test]
    fn dns_responder_survives_any_message(b in bytes(), head in any::<[u8; 2]>()) {
        let mut shaped = vec![head[0], head[1], b.first().copied().unwrap_or(0) & 0x7f, 0, 0, 1];
        shaped.extend_from_slice(&b);
        for msg in [&b[..], &shaped[..]] {
            for transport in [Transport::Udp, Transport::Tcp] {
                match dns::respond(msg, &mut AnyNames, transport, false) {
                    dns::Reply::Answer(a) => check_answer(msg, &a, transport)?,
                    dns::Reply::Forward(_) => prop_assert!(Query::parse(msg).is_ok()),
                    dns::Reply::Drop => prop_assert_eq!(Query::parse(msg).err(), Some(QueryError::Ignore)),
                }
            }
            let _ = dns::servfail(msg, Transport::Udp);
        }
    }

    /// Well-formed queries parse, keep their question byte for byte, and
    /// every A/AAAA answer carries the address the table gave.
    #[test]
    fn dns_queries_parse_and_answers_round_trip(msg in dns_query(), cut in 0usize..40) {
        let q = Query::parse(&msg).unwrap();
        prop_assert_eq!(q.question(), &msg[12..12 + q.question().len()]);
        let dns::Reply::Answer(a) = dns::respond(&msg, &mut AnyNames, Transport::Udp, false) else {
            prop_assert!(q.name.as_deref().is_some_and(|n| n.ends_with(".local")));
            return Ok(());
        };
        check_answer(&msg, &a, Transport::Udp)?;
        prop_assert_eq!(&a[12..12 + q.question().len()], q.question());
        let answers = u16::from_be_bytes([a[6], a[7]]);
        let named = q.name.as_deref().is_some_and(|n| !n.is_empty());
        match (q.qtype, q.edns.map_or(0, |e| e.version)) {
            (1, 0) if named => {
                let records_end = a.len() - if q.edns.is_some() { 11 } else { 0 };
                prop_assert!(answers == 1 && a[..records_end].ends_with(&[198, 18, 0, 1]));
            }
            (28, 0) if named => prop_assert_eq!(answers, 1),
            _ => {}
        }
        // Every truncation of a query is answered as malformed or ignored, never answered as a question.
        let short = &msg[..cut.min(msg.len().saturating_sub(1))];
        if let dns::Reply::Answer(a) = dns::respond(short, &mut AnyNames, Transport::Udp, false) {
            prop_assert_eq!(u16::from_be_bytes([a[6], a[7]]), 0);
        }
    }
}
