//! SOCKS BIND: a listening socket whose one connection comes through the
//! proxy (active FTP's data connection, and other protocols where the far
//! side calls back). Which sockets qualify is the rule in
//! `socksify_proto::bind`; this module runs it on the program's own fd.
//!
//! - `bind` on a socket the rule picks makes it a candidate. It is bound as
//!   asked when the address is this machine's (the wildcard, or a proxied
//!   connection's kernel address), and not at all when it is the proxy's
//!   address that `getsockname` reported for a proxied connection.
//! - `listen` or `getsockname`, whichever comes first, runs the BIND on the
//!   program's fd: connected to the proxy, request sent, first reply read,
//!   all within `SOCKSIFY_TIMEOUT_MS`. From then on `getsockname` reports
//!   the first reply's BND.ADDR:BND.PORT, where the proxy listens. A failure
//!   is that call's errno, and the fd is left unconnected: never a listener.
//! - The fd is readable when the second reply arrives, as a listener is
//!   with a connection waiting, so `poll`/`select`/`epoll` need no help.
//!   `accept` reads exactly the second reply (the peer's first bytes stay
//!   in the socket) and returns a new fd for the same socket: a proxied TCP
//!   connection whose `getpeername` is the peer. The listening fd number
//!   then gets a listening socket no one can reach (loopback, with a socket
//!   filter that drops every packet): one BIND serves one connection, so a
//!   second `accept` finds none, `EAGAIN` when non-blocking, a wait when
//!   blocking, and readiness never fires for it. The program's `epoll`
//!   registrations of the listener move to that socket with the number
//!   (epoll registers sockets, not numbers: left alone, they would report
//!   the connection's events under the listener).
//! - The proxy refusing the peer, closing, or timing out: `accept` fails
//!   with the reply's errno (`ECONNABORTED` for a close), and so does every
//!   later `accept` on that fd.

pub mod table;

pub use table::program_family;
use crate::fd_table::{self, ProxiedTcp};
use crate::{real, socket_addr, sockets, tcp};
use crate::epoll_watch::Watchers;
use table::{set_state, state, State};
use libc::{c_int, c_void, sockaddr, socklen_t, AF_INET6, EAGAIN, EINTR};
use socksify_proto::bind::{self as rule, ProxiedConn, SecondReply};
use socksify_proto::config::Config;
use socksify_proto::handshake::{Dialect, HandshakeError};
use socksify_proto::wire::socks5::{Command, ReplyCode};
use socksify_proto::wire::{TargetAddr, MAX_HEADER_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// Whether `fd` may still be connected as a plain client: it has not
/// become a BIND.
pub fn may_connect(fd: c_int) -> bool {
    matches!(state(fd), Some(State::Candidate { .. } | State::Refused { .. }))
}

/// The local address to report for a proxied connection whose proxy
/// answered `bound`: none when the proxy named no address (0.0.0.0).
pub fn reported_addr(bound: &TargetAddr) -> Option<SocketAddr> {
    match bound {
        TargetAddr::Ip(sa) if !sa.ip().is_unspecified() => Some(*sa),
        _ => None,
    }
}

/// `bind` of a TCP socket (`requested` is `addr` read): a local bind, or a
/// BIND candidate (see the module doc). Returns what `bind` returns.
///
/// # Safety
/// `addr` must point to `len` readable bytes.
pub unsafe fn on_bind(fd: c_int, addr: *const sockaddr, len: socklen_t, requested: SocketAddr, config: &'static Config) -> c_int {
    let mut conns: Vec<(ProxiedTcp, ProxiedConn)> = Vec::new();
    for (cfd, details) in fd_table::all_proxied_tcp() {
        if crate::dns_responder::tcp::is_listener(&details.proxy) {
            continue; // DNS over TCP answered in-process: nothing behind the proxy
        }
        if let Some(local) = socket_addr::local_addr(cfd) {
            conns.push((details, ProxiedConn { local, reported: details.bound }));
        }
    }
    let views: Vec<ProxiedConn> = conns.iter().map(|(_, v)| *v).collect();
    let related = match rule::decide(config.bind, requested, &views) {
        // SAFETY: the program's arguments, passed on unchanged.
        rule::Decision::Local => return unsafe { real::bind(fd, addr, len) },
        rule::Decision::Bind { related } => related.map(|i| conns[i].0.peer),
    };
    if fd as usize >= fd_table::SLOTS {
        log::error!("bind fd {fd} to {requested} refused: fd number beyond the shim's table");
        return crate::ffi::fail(libc::EMFILE);
    }
    if !requested.ip().is_unspecified() && rule::is_local(requested.ip(), &views) {
        // Bound as asked: if the program connects it after all, the source
        // address it chose holds. (The wildcard is no choice: left unbound,
        // the socket can still be swapped for one of the proxy's family.)
        // SAFETY: the program's arguments, passed on unchanged.
        let rc = unsafe { real::bind(fd, addr, len) };
        if rc != 0 {
            return rc;
        }
    }
    if crate::fork_safe::is_vfork_child() {
        return 0; // about to exec; the tables are the parent's
    }
    let family = if requested.is_ipv4() { libc::AF_INET } else { AF_INET6 };
    table::insert(fd, family, State::Candidate { related });
    fd_table::set_bind(fd);
    log::debug!("bind fd {fd} to {requested}: a SOCKS BIND once it listens (expected peer {related:?})");
    0
}

/// `listen` on a BIND fd.
pub fn listen(fd: c_int) -> c_int {
    match start(fd) {
        Ok(_) => 0,
        Err(errno) => crate::ffi::fail(errno),
    }
}

/// The address the proxy listens on for `fd`, running the BIND first if
/// it has not run yet; `Err(errno)` if it fails.
pub fn start(fd: c_int) -> Result<SocketAddr, c_int> {
    let related = match state(fd) {
        Some(State::Candidate { related }) => related,
        Some(State::Waiting { bound, .. } | State::Spent { bound } | State::Failed { bound, .. }) => return Ok(bound),
        Some(State::Refused { errno }) => return Err(errno),
        None => return Err(libc::EBADF),
    };
    let Some(config) = crate::runtime::config() else { return Err(libc::ECONNREFUSED) };
    let Some(family) = socket_addr::socket_family(fd) else { return Err(libc::EBADF) };
    let name_or_ip = related.and_then(|peer| crate::fake_dns::target_for(config, &peer));
    let mut target = rule::expected_peer(name_or_ip);
    let result = loop {
        match tcp::connect_via_proxy(fd, family, config, Command::Bind, &target) {
            Err(tcp::ConnectError::Handshake(HandshakeError::Rejected(ReplyCode::AddressTypeNotSupported)))
                if matches!(target, TargetAddr::Domain(..)) =>
            {
                // A server that takes no name in a BIND request: any peer.
                log::info!("bind fd {fd}: the proxy takes no name in a BIND request; asking for any peer instead of {target}");
                dissolve(fd);
                target = rule::any_peer();
            }
            other => break other,
        }
    };
    let (proxy, bound) = match result {
        Ok((proxy, TargetAddr::Ip(bound))) => {
            // 0.0.0.0 in a reply means "the address you reached me at".
            let ip = if bound.ip().is_unspecified() { proxy.ip() } else { bound.ip() };
            (proxy, SocketAddr::new(socksify_proto::wire::canonical_ip(ip), bound.port()))
        }
        Ok((_, name)) => {
            log::warn!("bind fd {fd} via {}: the proxy listens on a name ({name}), which no program can advertise", config.chain[0]);
            return Err(refused(fd, libc::EPROTO));
        }
        Err(e) => {
            log::warn!("bind fd {fd} for {target} via {}: {e}", config.chain[0]);
            return Err(refused(fd, e.errno()));
        }
    };
    let program_family = program_family(fd).unwrap_or(AF_INET6);
    if rule::in_family(bound, socket_addr::proto_family(program_family)).is_none() {
        // An AF_INET socket (the program reached the far end by a fake
        // IPv4 address) and a proxy that reaches it, and listens, over
        // IPv6: no address the program could hand out names the listener.
        log::warn!(
            "bind fd {fd} for {target} via {}: the proxy listens on {bound}, an IPv6 address this IPv4 socket cannot report; \
             the program must reach the far end over IPv6 (e.g. curl -6) or use passive mode",
            config.chain[0]
        );
        return Err(refused(fd, libc::EAFNOSUPPORT));
    }
    let socks4 = matches!(config.chain[config.chain.len() - 1].dialect(), Dialect::Socks4 { .. });
    set_state(fd, State::Waiting { bound, proxy, socks4 });
    log::info!("bind fd {fd} for {target} via {}: the proxy listens on {bound}", config.chain[0]);
    Ok(bound)
}

/// A failed BIND: the socket unconnected again, never to listen.
fn refused(fd: c_int, errno: c_int) -> c_int {
    dissolve(fd);
    set_state(fd, State::Refused { errno });
    errno
}

/// Leaves a socket whose BIND failed unconnected, as it was.
fn dissolve(fd: c_int) {
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: a valid AF_UNSPEC address dissolves the connection.
    unsafe { real::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as socklen_t) };
}

/// Where the proxy listens for a BIND fd (running the BIND if needed), for
/// `getsockname`; `None` after a failed BIND (the socket's own address is
/// the truth then).
pub fn local_addr(fd: c_int) -> Result<Option<SocketAddr>, c_int> {
    if matches!(state(fd), Some(State::Refused { .. })) {
        return Ok(None);
    }
    start(fd).map(Some)
}

/// Whether the fd's file is in blocking mode.
fn blocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL on an fd the program passed us.
    let status = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    status & libc::O_NONBLOCK == 0
}

/// The part of `accept` that may wait as long as the program wants: on a
/// blocking fd whose peer has not come yet, a blocking peek, which keeps
/// `accept`'s own behaviour with signals (`EINTR`, or a restart under
/// `SA_RESTART`) and `SO_RCVTIMEO` (`EAGAIN`). Runs outside the shim's
/// guard and locks. `Err` is what `accept` returns, errno set.
pub fn wait_for_peer(fd: c_int, waiting: bool) -> Result<(), c_int> {
    if waiting && blocking(fd) {
        let mut byte = 0u8;
        // SAFETY: peeks one byte into a local.
        let n = unsafe { real::recv(fd, &mut byte as *mut u8 as *mut c_void, 1, libc::MSG_PEEK) };
        if n < 0 {
            return Err(-1);
        }
    }
    Ok(())
}

pub fn is_waiting(fd: c_int) -> bool {
    matches!(state(fd), Some(State::Waiting { .. }))
}

/// `accept`/`accept4` on a BIND fd, inside the guard.
///
/// # Safety
/// `addr`/`len` as for `accept`.
pub unsafe fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    let (bound, proxy, socks4) = match state(fd) {
        Some(State::Waiting { bound, proxy, socks4 }) => (bound, proxy, socks4),
        Some(State::Failed { errno, .. }) => return crate::ffi::fail(errno),
        // Spent: the unreachable listener answers; a candidate or a
        // refused BIND is not listening (EINVAL), as the kernel says.
        // SAFETY: the program's arguments, passed on unchanged.
        _ => return unsafe { real::accept4(fd, addr, len, flags) },
    };
    let timeout = crate::runtime::config().map_or(socksify_proto::config::DEFAULT_TIMEOUT, |c| c.timeout);
    let deadline = Instant::now() + timeout;
    let blocking = blocking(fd);
    let mut buf = [0u8; MAX_HEADER_LEN];
    let (peer, used) = loop {
        // SAFETY: peeks into a local buffer; the reply is consumed below,
        // once the new fd exists.
        let n = unsafe { real::recv(fd, buf.as_mut_ptr() as *mut c_void, buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        let n = match n {
            n if n > 0 => n as usize,
            0 => return fail_bind(fd, bound, libc::ECONNABORTED, "the proxy closed the connection before a peer came"),
            _ => match crate::ffi::errno() {
                EINTR => continue,
                EAGAIN => 0,
                e => return fail_bind(fd, bound, libc::ECONNABORTED, &std::io::Error::from_raw_os_error(e).to_string()),
            },
        };
        match rule::second_reply(socks4, &buf[..n]) {
            Ok(SecondReply::Peer(peer, used)) => break (peer, used),
            Err(e) => return fail_bind(fd, bound, e.errno(), &e.to_string()),
            Ok(SecondReply::Incomplete) => {}
        }
        // Part of the reply, or none of it: wait for more when blocking.
        let closed = poll_once(fd, 0) & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
        if closed {
            return fail_bind(fd, bound, libc::ECONNABORTED, "the proxy closed the connection in the middle of its reply");
        }
        if !blocking {
            return crate::ffi::fail(EAGAIN);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return fail_bind(fd, bound, libc::ETIMEDOUT, "the proxy's second reply stalled");
        }
        poll_once(fd, left.as_millis().clamp(1, c_int::MAX as u128) as c_int);
    };
    // SAFETY: addr/len as for accept (this function's contract).
    unsafe { hand_out(fd, peer, used, bound, proxy, addr, len, flags) }
}

/// One `poll` for input on `fd`; the events, 0 on timeout or error.
fn poll_once(fd: c_int, ms: c_int) -> i16 {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd.
    if unsafe { real::poll(&mut pfd, 1, ms) } > 0 {
        pfd.revents
    } else {
        0
    }
}

fn fail_bind(fd: c_int, bound: SocketAddr, errno: c_int, why: &str) -> c_int {
    log::warn!("bind fd {fd} (proxy listening on {bound}): no connection: {why}");
    set_state(fd, State::Failed { bound, errno });
    crate::ffi::fail(errno)
}

/// The peer came: a new fd for the connection, the listener number made
/// unreachable, the second reply (`used` bytes) consumed.
///
/// # Safety
/// `addr`/`len` as for `accept`.
#[allow(clippy::too_many_arguments)]
unsafe fn hand_out(
    fd: c_int,
    peer: SocketAddr,
    used: usize,
    bound: SocketAddr,
    proxy: SocketAddr,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let cmd = if flags & libc::SOCK_CLOEXEC != 0 { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
    // SAFETY: an F_DUPFD command: fd numbers only.
    let new = unsafe { real::fcntl(fd, cmd, 0) };
    if new < 0 {
        return -1; // EMFILE and the like; the reply stays for the next try
    }
    let mut reply = [0u8; MAX_HEADER_LEN];
    // SAFETY: reads exactly the reply, which is in the socket (peeked).
    unsafe { real::recv(fd, reply.as_mut_ptr() as *mut c_void, used, libc::MSG_DONTWAIT) };
    // SAFETY: a flag query: no memory is passed.
    let listener_status = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    // SAFETY: a flag query: no memory is passed.
    let fd_flags = unsafe { real::fcntl(fd, libc::F_GETFD, 0) };
    let listener_cloexec = fd_flags & libc::FD_CLOEXEC != 0;
    // The connection is a new socket as far as the program knows: blocking
    // unless accept4 asked for SOCK_NONBLOCK, as the kernel's would be.
    let status = listener_status & !libc::O_NONBLOCK | if flags & libc::SOCK_NONBLOCK != 0 { libc::O_NONBLOCK } else { 0 };
    // SAFETY: flags only; no memory is passed.
    unsafe { real::fcntl(new, libc::F_SETFL, status as libc::c_ulong) };
    let family = program_family(fd).unwrap_or(AF_INET6);
    match unreachable_listener(family, listener_status & libc::O_NONBLOCK != 0) {
        // SAFETY: fd numbers, and an epoll_event of our own for each registration.
        Ok(quiet) => unsafe {
            // The program's epoll registrations of the listener follow the
            // number to the new socket, off the connection's.
            let watchers = table::take_watchers(fd);
            let moved: Watchers = watchers.into_iter().filter(|(epfd, ..)| real::epoll_ctl(*epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) == 0).collect();
            real::dup3(quiet, fd, if listener_cloexec { libc::O_CLOEXEC } else { 0 });
            real::close(quiet);
            for (epfd, events, data) in moved {
                let mut ev = libc::epoll_event { events, u64: data };
                real::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev);
            }
        },
        Err(e) => log::warn!("bind fd {fd}: cannot retire the listener ({e}); it stays the connection's socket"),
    }
    set_state(fd, State::Spent { bound });
    // The peer in the program's family (getpeername reports it so).
    let peer = socket_addr::told(peer, family);
    sockets::forget(new); // the number may have been ours before, closed behind our back
    fd_table::set_proxied_tcp(new, ProxiedTcp { peer, proxy, bound: Some(bound), opened: fd_table::next_opened() });
    if !addr.is_null() && !len.is_null() {
        if let Some(encoded) = socket_addr::encode(&peer, family) {
            // A bad pointer: the connection is accepted either way (the
            // kernel would close it and say EFAULT); never a crash.
            // SAFETY: addr/len are the program's accept arguments (this function's contract).
            let _ = unsafe { socket_addr::copy_out(&encoded, addr, len) };
        }
    }
    log::info!("bind fd {fd} (proxy listening on {bound}): accepted {peer} as fd {new}");
    new
}

/// A listening TCP socket on loopback that no connection reaches: a socket
/// filter drops every packet, the SYNs included. What the listening fd of
/// a spent BIND becomes.
fn unreachable_listener(family: c_int, nonblocking: bool) -> std::io::Result<c_int> {
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket calls on a socket we own; closed on every failure.
    unsafe {
        let s = real::socket(family, ty, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let loopback: IpAddr = if family == AF_INET6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
        let drop_all = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
        let prog = libc::sock_fprog { len: 1, filter: drop_all.as_ptr() as *mut libc::sock_filter };
        let ok = socket_addr::encode(&SocketAddr::new(loopback, 0), family).is_some_and(|raw| {
            real::bind(s, &raw.0 as *const _ as *const sockaddr, raw.1) == 0
                && real::setsockopt(
                    s,
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    &prog as *const _ as *const c_void,
                    std::mem::size_of::<libc::sock_fprog>() as socklen_t,
                ) == 0
                && real::listen(s, 1) == 0
        });
        if !ok {
            let e = std::io::Error::last_os_error();
            real::close(s);
            return Err(e);
        }
        Ok(s)
    }
}
