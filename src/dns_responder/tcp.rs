//! DNS over TCP (`dig +tcp`, retries after a truncated answer): the
//! program's socket is connected to a loopback listener of ours instead of
//! the nameserver, and one thread of ours accepts and answers, message by
//! message (RFC 1035 4.2.2 framing; queries pipelined on one connection are
//! answered in order).
//!
//! The thread and its listeners (127.0.0.1 and, if it exists, ::1) are made
//! on the first such connect, never at load. `getpeername` reports the
//! nameserver (the socket is recorded as a proxied TCP socket whose proxy
//! is our listener). A `fork` child does not inherit the thread: its first
//! DNS-over-TCP connect closes the inherited listeners (the parent keeps
//! its own) and starts its own, so its answers come from its own table.
//! Connections idle for [`IDLE`] are closed, at most [`MAX_CONNS`] at once.
//!
//! Our fds live among the program's, which may close them behind our back
//! (a `closefrom` loop) and reuse the numbers: each is kept with its inode
//! and closed only while it still has it, so a program's fd is never
//! closed by us. A listener found gone ends the thread; the next connect
//! starts another.

use crate::own_fd::OwnFd;
use crate::fd_table::{self, ProxiedTcp};
use crate::fork_safe::ForkSafeMutex;
use crate::udp::inode;
use crate::{ffi, guard, real, runtime, socket_addr};
use libc::{c_int, c_void, AF_INET, AF_INET6};
use socksify_proto::dns::Transport;
use socksify_proto::wire::canonical_ip;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A connection with nothing asked for this long is closed.
const IDLE: Duration = Duration::from_secs(10);
/// Connections served at once; the oldest goes first beyond this.
const MAX_CONNS: usize = 64;
/// Connections remembered between the program's connect and our accept.
const MAX_PENDING: usize = 1024;

/// The running server of this process.
struct Server {
    pid: libc::pid_t,
    v4: SocketAddr,
    v6: Option<SocketAddr>,
    /// The listeners, with their inodes.
    fds: Vec<(c_int, u64)>,
}

static SERVER: ForkSafeMutex<Option<Server>> = ForkSafeMutex::new(None);

/// The program's socket address (as our listener sees it, canonical) →
/// the nameserver it connected to: where a bypassed name is forwarded.
static ASKED: ForkSafeMutex<Option<HashMap<SocketAddr, SocketAddr>>> = ForkSafeMutex::new(None);

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(a.ip()), a.port())
}

fn listen_on(ip: IpAddr) -> Result<(OwnFd, SocketAddr), String> {
    let family = if ip.is_ipv4() { AF_INET } else { AF_INET6 };
    let sock = super::own_socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    let raw = socket_addr::encode(&SocketAddr::new(ip, 0), family).ok_or("no address")?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { real::bind(sock.0, &raw.0 as *const _ as *const libc::sockaddr, raw.1) } != 0 || unsafe { real::listen(sock.0, 128) } != 0 {
        return Err(format!("listening on {ip}: {}", std::io::Error::last_os_error()));
    }
    let addr = crate::socket_addr::local_addr(sock.0).ok_or("reading our address")?;
    Ok((sock, addr))
}

/// This process's listener for a program socket of `family` talking to
/// `nameserver`; starts the server on first use (and in a fork child).
fn listener_for(family: c_int, nameserver: SocketAddr) -> Result<SocketAddr, String> {
    if crate::fork_safe::is_vfork_child() {
        // Its memory is the parent's: a thread started here would be too.
        return Err("not in a vfork child".into());
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut server = SERVER.lock();
    // Inherited from the parent, whose thread serves them (close our
    // copies, serve our own), or closed behind our back (its thread ends).
    if server.as_ref().is_some_and(|s| s.pid != pid || s.fds.iter().any(|&(fd, ino)| inode(fd) != Some(ino))) {
        for (fd, ino) in server.take().map(|s| s.fds).unwrap_or_default() {
            close_if_ours(fd, ino);
        }
    }
    if server.is_none() {
        let (v4_sock, v4) = listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let v6 = listen_on(IpAddr::V6(Ipv6Addr::LOCALHOST)).ok();
        let mut fds = vec![v4_sock.0];
        fds.extend(v6.as_ref().map(|(s, _)| s.0));
        let fds: Vec<(c_int, u64)> = fds.into_iter().map(|fd| (fd, inode(fd).unwrap_or(0))).collect();
        let listeners = fds.clone();
        std::thread::Builder::new()
            .name("socksify-dns".into())
            .stack_size(256 * 1024)
            .spawn(move || serve(listeners))
            .map_err(|e| format!("starting the DNS-over-TCP thread: {e}"))?;
        log::info!("dns responder: answering DNS over TCP on {v4}{}", v6.as_ref().map_or(String::new(), |(_, a)| format!(" and {a}")));
        *server = Some(Server { pid, v4, v6: v6.as_ref().map(|(_, a)| *a), fds });
        std::mem::forget(v4_sock);
        if let Some((s, _)) = v6 {
            std::mem::forget(s);
        }
    }
    let s = server.as_ref().expect("set above");
    match (family, canonical_ip(nameserver.ip()).is_ipv6()) {
        (AF_INET6, true) => s.v6.ok_or_else(|| "no IPv6 loopback to answer an IPv6 nameserver on".into()),
        _ => Ok(s.v4),
    }
}

/// `connect` of the program's TCP socket `fd` (of `family`) to
/// `nameserver`: connects it to our listener instead. Returns what
/// `connect` returns, errno set (`EINPROGRESS` for a non-blocking socket).
pub fn connect(fd: c_int, family: c_int, nameserver: SocketAddr) -> c_int {
    let listener = match listener_for(family, nameserver) {
        Ok(l) => l,
        Err(why) => {
            log::warn!("dns responder: tcp to {nameserver} refused: {why}");
            return ffi::fail(libc::ECONNREFUSED);
        }
    };
    let Some(raw) = socket_addr::encode(&listener, family) else { return ffi::fail(libc::EAFNOSUPPORT) };
    // SAFETY: raw is a valid address of the socket's family.
    let rc = unsafe { real::connect(fd, &raw.0 as *const _ as *const libc::sockaddr, raw.1) };
    let errno = ffi::errno();
    if rc == 0 || errno == libc::EINPROGRESS {
        if let Some(local) = crate::socket_addr::local_addr(fd) {
            let mut asked = ASKED.lock();
            let map = asked.get_or_insert_with(HashMap::new);
            if map.len() >= MAX_PENDING {
                map.clear(); // never accepted (the program gave up): forget them
            }
            map.insert(canonical(local), nameserver);
        }
        let details = ProxiedTcp { peer: nameserver, proxy: listener, bound: None, opened: fd_table::next_opened() };
        fd_table::set_proxied_tcp(fd, details);
        log::info!("tcp fd {fd} -> {nameserver}: DNS answered in-process");
    }
    ffi::set_errno(errno);
    rc
}

/// Whether `addr` is one of our listeners: a "proxied" TCP socket whose
/// proxy is one talks DNS to us, not to anything through the proxy.
pub fn is_listener(addr: &SocketAddr) -> bool {
    SERVER.lock().as_ref().is_some_and(|s| s.v4 == *addr || s.v6 == Some(*addr))
}

/// Closes our fd `fd` if it is still the socket with inode `ino`.
fn close_if_ours(fd: c_int, ino: u64) {
    if inode(fd) == Some(ino) {
        // SAFETY: the number still holds our socket.
        unsafe { real::close(fd) };
    }
}

/// One accepted connection; closed on drop (if still ours).
struct Conn {
    fd: c_int,
    ino: u64,
    nameserver: SocketAddr,
    buf: Vec<u8>,
    last: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        close_if_ours(self.fd, self.ino);
    }
}

/// The server thread: accept, read whole messages, answer each. Ends if a
/// listener is no longer ours (closed behind our back), after clearing
/// [`SERVER`] so that the next connect starts a new one.
fn serve(listeners: Vec<(c_int, u64)>) {
    // Our own thread: nothing it calls may be proxied or re-enter a hook.
    let Some(_inside) = guard::enter() else { return };
    let Some(config) = runtime::config() else { return };
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        if listeners.iter().any(|&(fd, ino)| inode(fd) != Some(ino)) {
            log::warn!("dns responder: a DNS-over-TCP listener was closed behind our back; the next connection starts another");
            return retire(&listeners);
        }
        let mut pfds: Vec<libc::pollfd> = listeners
            .iter()
            .map(|&(fd, _)| fd)
            .chain(conns.iter().map(|c| c.fd))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: a valid array of pollfds.
        let n = unsafe { real::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
        if n < 0 && ffi::errno() != libc::EINTR {
            log::error!("dns responder: poll failed ({}); the next connection starts another thread", std::io::Error::last_os_error());
            return retire(&listeners);
        }
        for (i, &(l, ino)) in listeners.iter().enumerate() {
            if pfds[i].revents & libc::POLLIN != 0 {
                accept_all(l, ino, &mut conns);
            }
        }
        let now = Instant::now();
        let ready: Vec<bool> = pfds[listeners.len()..].iter().map(|p| p.revents != 0).collect();
        let mut keep = Vec::with_capacity(conns.len());
        for (mut conn, ready) in conns.drain(..).zip(ready.into_iter().chain(std::iter::repeat(false))) {
            let open = if ready { ffi::catch(false, 0, || serve_conn(config, &mut conn)) } else { now.duration_since(conn.last) < IDLE };
            if open {
                keep.push(conn);
            }
        }
        conns = keep;
    }
}

/// The end of a server thread: [`SERVER`] forgets it (unless it already
/// moved on) and its listeners are closed.
fn retire(listeners: &[(c_int, u64)]) {
    let mut server = SERVER.lock();
    if server.as_ref().is_some_and(|s| s.fds == listeners) {
        *server = None;
    }
    drop(server);
    for &(fd, ino) in listeners {
        close_if_ours(fd, ino);
    }
}

/// Accepts every pending connection on our listener `listener` (inode `ino`).
fn accept_all(listener: c_int, ino: u64, conns: &mut Vec<Conn>) {
    loop {
        if inode(listener) != Some(ino) {
            return; // not ours any more: never accept the program's connections
        }
        // SAFETY: storage is large enough for any address.
        let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: st is our own storage, `len` its size.
        let fd = unsafe {
            real::accept4(listener, &mut st as *mut _ as *mut libc::sockaddr, &mut len, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
        };
        if fd < 0 {
            return;
        }
        let Some(conn_ino) = inode(fd) else { continue };
        let conn = |nameserver| Conn { fd, ino: conn_ino, nameserver, buf: Vec::new(), last: Instant::now() };
        // SAFETY: accept4 wrote `len` bytes of address into st.
        let client = unsafe { socket_addr::read(&st as *const _ as *const libc::sockaddr, len) }.map(canonical);
        let asked = client.and_then(|c| ASKED.lock().as_mut().and_then(|m| m.remove(&c)));
        let Some(nameserver) = asked.or_else(|| super::nameservers().first().map(|ip| SocketAddr::new(*ip, super::PORT))) else {
            close_if_ours(fd, conn_ino);
            continue;
        };
        if conns.len() >= MAX_CONNS {
            conns.remove(0);
        }
        conns.push(conn(nameserver));
    }
}

/// Reads what `conn` has and answers every whole message; `false` when
/// the connection is done (closed by the program, or an error).
fn serve_conn(config: &'static socksify_proto::config::Config, conn: &mut Conn) -> bool {
    if inode(conn.fd) != Some(conn.ino) {
        return false; // closed behind our back: never read the program's socket
    }
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reading into a live buffer.
        let n = unsafe { real::recv(conn.fd, chunk.as_mut_ptr() as *mut c_void, chunk.len(), 0) };
        match n {
            0 => return false,
            n if n > 0 => conn.buf.extend_from_slice(&chunk[..n as usize]),
            _ if ffi::errno() == libc::EINTR => continue,
            _ if ffi::errno() == libc::EAGAIN => break,
            _ => return false,
        }
        if conn.buf.len() > 2 + 65535 + 4096 {
            return false; // more than one message ahead: not a DNS client
        }
    }
    conn.last = Instant::now();
    while conn.buf.len() >= 2 {
        let len = u16::from_be_bytes([conn.buf[0], conn.buf[1]]) as usize;
        if conn.buf.len() < 2 + len {
            break;
        }
        let msg: Vec<u8> = conn.buf.drain(..2 + len).skip(2).collect();
        let Some(answer) = super::answer(config, &msg, conn.nameserver, Transport::Tcp) else { continue };
        if super::send_all(conn.fd, &super::framed(&answer), Instant::now() + config.timeout).is_err() {
            return false;
        }
    }
    true
}
