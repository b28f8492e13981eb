//! The BIND command (RFC 1928): one incoming connection, two replies.
//!
//! Promise: the first reply names the address we listen on (the `--bind-out`
//! address of the family, else the address this host would use to reach
//! the expected peer, else the IP the client reached us at); the second
//! names the peer that connected, after which the flow is relayed like
//! CONNECT. When the request names an address, only a connection from that
//! IP is accepted, and only a peer the rules allow (others are closed). The
//! wait ends after [`BIND_WAIT`], or when the client closes its connection.

use crate::log::reply_name;
use crate::client_conn::{reply5, ClientConn, Session};
use crate::{outbound, relay, rules};
use socket2::{Domain, SockAddr, Socket, Type};
use socksify_proto::wire::socks5::ReplyCode;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long BIND waits for the incoming connection.
pub const BIND_WAIT: Duration = Duration::from_secs(120);

pub fn serve(sess: &Session, mut conn: ClientConn, dst: TargetAddr) {
    let line = sess.log("bind").kv("dst", &dst);
    let fail = |conn: &mut ClientConn, code: ReplyCode, why: String| {
        let _ = conn.send(&reply5(code, None));
        sess.finish(sess.log("bind").kv("dst", &dst).kv("reply", reply_name(code)).kv("sent", 0).kv("received", 0).kv("error", why));
    };
    // The peer we expect, when the client names one; the rules judge it as
    // a destination, in the form it reaches (a name: what it resolves to).
    // An unspecified address means "any peer", not loopback: only an
    // explicit rule on that address as written refuses it here, and each
    // peer that connects is judged by the rules below.
    let expected: Option<IpAddr> = match &dst {
        TargetAddr::Ip(sa) if canonical_ip(sa.ip()).is_unspecified() => match sess.cfg.rules.allows(sa.ip(), sa.port()) {
            true => None,
            false => return fail(&mut conn, ReplyCode::NotAllowed, format!("{dst} denied by rules")),
        },
        _ => match outbound::allowed_addrs(&sess.cfg, &dst) {
            Ok(addrs) => addrs.first().map(|a| a.ip()),
            Err(f) => return fail(&mut conn, f.code, f.reason),
        },
    };
    let local_ip = match conn.stream.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => return fail(&mut conn, ReplyCode::GeneralFailure, e.to_string()),
    };
    let family_of = expected.unwrap_or(local_ip);
    // Where the peer can reach us: the --bind-out address, else the one
    // this host would send from to reach the expected peer (a proxy
    // between two networks must not listen on the client's side), else
    // the address the client reached us at.
    let ip = sess.cfg.bind_out_for(family_of).or_else(|| expected.and_then(source_toward)).unwrap_or(local_ip);
    let listener = match listen_on(SocketAddr::new(ip, 0)) {
        Ok(l) => l,
        Err(e) => return fail(&mut conn, outbound::reply_for(&e), e.to_string()),
    };
    let bound = listener.local_addr().ok();
    if conn.send(&reply5(ReplyCode::Succeeded, bound)).is_err() {
        return;
    }
    conn.end_handshake();
    // The peer that actually connects is judged too, with the port the
    // request named, as the expected peer was (its source port is the
    // kernel's pick; the guard on this host's addresses is about
    // destinations reached, not peers).
    let admit = |from: SocketAddr| {
        let ip = rules::reached(from.ip());
        expected.is_none_or(|want| want == ip) && sess.cfg.rules.allows(ip, dst.port())
    };
    let peer = match wait_for_peer(&listener, &conn.stream, admit) {
        Ok(p) => p,
        Err(e) => {
            let code = outbound::reply_for(&e);
            let _ = conn.send(&reply5(code, None));
            return sess.finish(line.kv("reply", reply_name(code)).kv("sent", 0).kv("received", 0).kv("error", e));
        }
    };
    let (stream, from) = peer;
    if conn.send(&reply5(ReplyCode::Succeeded, Some(from))).is_err() {
        return;
    }
    let counts = relay::relay(conn.stream, stream, sess.cfg.idle_timeout).unwrap_or_default();
    let mut line = line.kv("reply", "succeeded").kv("sent", counts.sent).kv("received", counts.received).kv("ms", sess.ms());
    if counts.idle {
        line = line.kv("end", "idle-timeout");
    }
    line.kv("peer", from).kv("listen", bound.map_or("-".into(), |b| b.to_string())).emit(sess.cfg.quiet);
}

/// The source address the routing table picks for `peer` (a UDP socket's
/// `connect` sends nothing), or `None` if there is no route.
fn source_toward(peer: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = if peer.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let probe = UdpSocket::bind((any, 0)).ok()?;
    probe.connect((peer, 9)).ok()?;
    Some(canonical_ip(probe.local_addr().ok()?.ip())).filter(|ip| !ip.is_unspecified())
}

fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(1)?;
    Ok(sock.into())
}

/// Accepts the first connection `admit` lets in (others are closed),
/// giving up when the control connection closes or [`BIND_WAIT`] passes.
fn wait_for_peer(listener: &TcpListener, control: &TcpStream, admit: impl Fn(SocketAddr) -> bool) -> io::Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    control.set_nonblocking(true)?;
    let deadline = Instant::now() + BIND_WAIT;
    let mut watch_control = true;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let mut fds = [
            libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if watch_control { control.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: fds is a live array of two initialised pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Err(e);
        }
        if fds[1].revents != 0 {
            // Peek, so bytes the client sends early stay queued for the relay.
            let mut one = [0u8; 1];
            // SAFETY: recv into a one-byte buffer we own; MSG_PEEK consumes nothing.
            let n = unsafe { libc::recv(control.as_raw_fd(), one.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
            match n {
                0 => break Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client closed while waiting")),
                n if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock => break Err(io::Error::last_os_error()),
                // Data is waiting: stop watching the control socket so poll does not spin.
                n if n > 0 => watch_control = false,
                _ => {}
            }
        }
        if fds[0].revents != 0 {
            match listener.accept() {
                Ok((s, from)) if admit(from) => break Ok((s, from)),
                Ok(_) => continue, // a stranger or a denied peer: closed by drop
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => break Err(e),
            }
        }
    };
    control.set_nonblocking(false)?;
    let (stream, from) = result?;
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true);
    Ok((stream, SocketAddr::new(canonical_ip(from.ip()), from.port())))
}
