//! Connecting a TCP socket (the program's own) through the proxy chain.
//!
//! [`Driver`] is the connect as a state machine over a non-blocking
//! socket: connect to the first hop, then the sans-I/O handshake of
//! `socksify-proto` for each hop, each step saying what it waits for.
//! [`connect_via_proxy`] drives it blocking: the socket is made
//! non-blocking for the duration (so every step is bounded by
//! `SOCKSIFY_TIMEOUT_MS`), and the program's flags are restored after. The
//! shim's engine drives it for a non-blocking `connect`, in the
//! background. On success the kernel carries the data: no per-byte cost.
//!
//! `socksify --check` reports each step, so it runs them one at a time
//! on a blocking wait: [`connect_first_hop`] (one address at a time), then
//! a [`handshake`] per hop, whose state machine it reads afterwards.

use libc::{c_int, c_void, sockaddr, socklen_t, EINPROGRESS, EINTR, ETIMEDOUT};
use socksify_proto::config::{Config, ProxyHost, ProxyUrl};
use socksify_proto::handshake::{ClientHandshake, HandshakeError, Progress};
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::{TargetAddr, MAX_HEADER_LEN};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The calls made on the socket. The shim implements them with libc's own
/// functions behind its hooks (inside the shim, `libc::fcntl` is its own
/// hook); [`Libc`] calls libc.
pub trait SocketIo {
    /// # Safety
    /// As `connect(2)`.
    unsafe fn connect(&self, fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    /// # Safety
    /// As `send(2)`.
    unsafe fn send(&self, fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
    /// # Safety
    /// As `recv(2)`.
    unsafe fn recv(&self, fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    /// `fcntl(2)` with an integer argument (`F_GETFL`, `F_SETFL`).
    fn fcntl(&self, fd: c_int, cmd: c_int, arg: c_int) -> c_int;
    /// `poll(2)` of one fd.
    fn poll(&self, pfd: &mut libc::pollfd, timeout_ms: c_int) -> c_int;
    /// `getsockopt(SO_ERROR)`: the socket's pending error (0 if none, or
    /// if it cannot be read).
    fn so_error(&self, fd: c_int) -> c_int;
}

/// Plain libc, for a process with no hooks (the supervisor).
pub struct Libc;

// A process with no hooks: libc's functions are the real ones
// (clippy.toml disallows them for the shim, which links this crate too).
#[allow(clippy::disallowed_methods)]
impl SocketIo for Libc {
    unsafe fn connect(&self, fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
        // SAFETY: the caller's arguments, passed on (this method has connect(2)'s contract).
        unsafe { libc::connect(fd, addr, len) }
    }
    unsafe fn send(&self, fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize {
        // SAFETY: the caller's arguments, passed on (this method has send(2)'s contract).
        unsafe { libc::send(fd, buf, len, flags) }
    }
    unsafe fn recv(&self, fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize {
        // SAFETY: the caller's arguments, passed on (this method has recv(2)'s contract).
        unsafe { libc::recv(fd, buf, len, flags) }
    }
    fn fcntl(&self, fd: c_int, cmd: c_int, arg: c_int) -> c_int {
        // SAFETY: an integer argument; no memory is passed.
        unsafe { libc::fcntl(fd, cmd, arg) }
    }
    fn poll(&self, pfd: &mut libc::pollfd, timeout_ms: c_int) -> c_int {
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(pfd, 1, timeout_ms) }
    }
    fn so_error(&self, fd: c_int) -> c_int {
        let mut so_error: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR reads one int into so_error.
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut so_error as *mut _ as *mut c_void, &mut len) };
        so_error
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Why a proxied connect failed; each becomes one log line and an errno.
#[derive(Debug)]
pub enum ConnectError {
    /// The proxy refused, or was unreachable at, this address (the errno).
    ProxyUnreachable(SocketAddr, i32),
    /// No address of the proxy fits the socket's family (the proxy named).
    NoProxyAddress(String),
    Timeout(&'static str),
    Handshake(HandshakeError),
    /// The proxy closed the connection mid-handshake, or an I/O error.
    Io(&'static str, i32),
}

impl ConnectError {
    pub fn errno(&self) -> i32 {
        match self {
            ConnectError::ProxyUnreachable(..) | ConnectError::NoProxyAddress(_) => libc::ECONNREFUSED,
            ConnectError::Timeout(_) => ETIMEDOUT,
            ConnectError::Handshake(e) => e.errno(),
            ConnectError::Io(_, 0) => libc::ECONNREFUSED,
            ConnectError::Io(_, errno) => *errno,
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::ProxyUnreachable(addr, errno) => {
                write!(f, "proxy unreachable: {addr}: {}", std::io::Error::from_raw_os_error(*errno))
            }
            ConnectError::NoProxyAddress(proxy) => write!(f, "proxy unreachable: no usable address for {proxy}"),
            ConnectError::Timeout(step) => write!(f, "timed out {step}"),
            ConnectError::Handshake(e) => write!(f, "{e}"),
            ConnectError::Io(step, 0) => write!(f, "proxy closed the connection {step}"),
            ConnectError::Io(step, errno) => write!(f, "{step}: {}", std::io::Error::from_raw_os_error(*errno)),
        }
    }
}

/// When a connection through the chain must be up: one deadline for the
/// connect and every hop's handshake (`SOCKSIFY_TIMEOUT_MS`).
#[derive(Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout.max(Duration::from_millis(1)))
    }

    pub fn instant(&self) -> Instant {
        self.0
    }
}

/// Why [`poll_until`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    TimedOut,
    Errno(i32),
}

/// Waits until `fd` is ready for `events` or `deadline` has passed,
/// retrying on EINTR; returns the events that fired (`POLLERR`/`POLLHUP`
/// included). Shared by the handshake and the shim's other own sockets.
pub fn poll_until(io: &impl SocketIo, fd: c_int, events: i16, deadline: Instant) -> Result<i16, WaitError> {
    loop {
        let left = deadline.checked_duration_since(Instant::now()).ok_or(WaitError::TimedOut)?;
        let ms = left.as_millis().clamp(1, c_int::MAX as u128) as c_int;
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        match io.poll(&mut pfd, ms) {
            0 => return Err(WaitError::TimedOut),
            n if n > 0 => return Ok(pfd.revents),
            _ if errno() == EINTR => continue,
            _ => return Err(WaitError::Errno(errno())),
        }
    }
}

/// [`poll_until`] for a step of the handshake.
fn wait(io: &impl SocketIo, fd: c_int, events: i16, deadline: &Deadline, step: &'static str) -> Result<i16, ConnectError> {
    poll_until(io, fd, events, deadline.0).map_err(|e| match e {
        WaitError::TimedOut => ConnectError::Timeout(step),
        WaitError::Errno(n) => ConnectError::Io(step, n),
    })
}

/// Restores the program's file status flags when dropped.
struct NonBlocking<'a, I: SocketIo> {
    io: &'a I,
    fd: c_int,
    flags: c_int,
}

impl<'a, I: SocketIo> NonBlocking<'a, I> {
    fn set(io: &'a I, fd: c_int) -> Result<Self, ConnectError> {
        let flags = io.fcntl(fd, libc::F_GETFL, 0);
        if flags < 0 {
            return Err(ConnectError::Io("reading socket flags", errno()));
        }
        if flags & libc::O_NONBLOCK == 0 {
            io.fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Ok(NonBlocking { io, fd, flags })
    }
}

impl<I: SocketIo> Drop for NonBlocking<'_, I> {
    fn drop(&mut self) {
        if self.flags & libc::O_NONBLOCK == 0 {
            // Restores the flags read in `set`.
            self.io.fcntl(self.fd, libc::F_SETFL, self.flags);
        }
    }
}

/// What [`Driver::step`] needs before it can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait until the socket is ready for `events` (`POLLIN`/`POLLOUT`),
    /// then call [`Driver::step`] again with what fired; `what` names the
    /// step for a timeout or wait error.
    Wait { events: i16, what: &'static str },
    /// Connected through the chain: the first hop's address and the last
    /// hop's bound address are in [`Driver::result`].
    Done,
}

enum Phase {
    /// About to connect to `first_hop[i]`.
    Connect(usize),
    /// The connect to `first_hop[i]` is in progress.
    Connecting(usize),
    /// The current hop's SOCKS exchange.
    Exchanging { hs: ClientHandshake, ex: Exchange },
    Done,
}

/// What one step of an [`Exchange`] or a connect came to.
enum Progressed<T> {
    Wait { events: i16, what: &'static str },
    Done(T),
}

const WAITING_FOR_REPLY: &str = "waiting for the SOCKS reply";

/// One hop's SOCKS exchange on a connected, non-blocking socket: each
/// message of the handshake sent whole, then its answer read to its exact
/// end (`hs.wanted()` bytes at a time). Used by the [`Driver`] for every
/// hop and by [`handshake`] for `--check`. Every send and receive is
/// `MSG_DONTWAIT`, so a socket a program made blocking meanwhile (it shares
/// the file description) never blocks a step.
struct Exchange {
    /// The message being sent, and how much of it has gone.
    out: Vec<u8>,
    pos: usize,
    /// Nothing read since the last message went out: the proxy cannot have
    /// answered it yet, so wait before the first read instead of failing
    /// it with EAGAIN.
    fresh: bool,
}

impl Exchange {
    /// The exchange that starts by sending `first` ([`ClientHandshake::start`]'s).
    fn new(first: Vec<u8>) -> Exchange {
        Exchange { out: first, pos: 0, fresh: true }
    }

    /// Goes as far as the socket allows; `Done`: the proxy's bound address.
    fn step(&mut self, io: &impl SocketIo, fd: c_int, hs: &mut ClientHandshake) -> Result<Progressed<TargetAddr>, ConnectError> {
        loop {
            if self.pos < self.out.len() {
                // SAFETY: out[pos..] is a valid buffer.
                let n = unsafe {
                    io.send(fd, self.out[self.pos..].as_ptr() as *const c_void, self.out.len() - self.pos, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                };
                if n >= 0 {
                    self.pos += n as usize;
                    self.fresh = true;
                    continue;
                }
                match errno() {
                    EINTR => continue,
                    libc::EAGAIN => return Ok(Progressed::Wait { events: libc::POLLOUT, what: "sending the SOCKS request" }),
                    e => return Err(ConnectError::Io("sending the SOCKS request", e)),
                }
            }
            if self.fresh {
                self.fresh = false;
                return Ok(Progressed::Wait { events: libc::POLLIN, what: WAITING_FOR_REPLY });
            }
            let mut buf = [0u8; MAX_HEADER_LEN];
            let want = hs.wanted().min(buf.len());
            // SAFETY: reading at most `want` bytes into buf.
            let n = unsafe { io.recv(fd, buf.as_mut_ptr() as *mut c_void, want, libc::MSG_DONTWAIT) };
            if n > 0 {
                match hs.feed(&buf[..n as usize]).map_err(ConnectError::Handshake)? {
                    Progress::NeedMore => {}
                    Progress::Send(next) => (self.out, self.pos) = (next, 0),
                    Progress::Done(bound) => return Ok(Progressed::Done(bound)),
                }
                continue;
            }
            if n == 0 {
                return Err(ConnectError::Io("during the SOCKS handshake", 0));
            }
            match errno() {
                EINTR => continue,
                libc::EAGAIN => return Ok(Progressed::Wait { events: libc::POLLIN, what: WAITING_FOR_REPLY }),
                e => return Err(ConnectError::Io("reading the SOCKS reply", e)),
            }
        }
    }
}

/// Starts connecting `fd` to `addr`: `None` when `addr` cannot be told to
/// a socket of `family`; else connected at once (`Done`), under way
/// (`Wait`), or refused.
fn start_connect(io: &impl SocketIo, fd: c_int, family: c_int, addr: SocketAddr) -> Option<Result<Progressed<()>, ConnectError>> {
    let raw = crate::sockaddr::encode(&addr, family)?;
    // SAFETY: raw is a valid sockaddr of the socket's family.
    let rc = unsafe { io.connect(fd, &raw.0 as *const _ as *const libc::sockaddr, raw.1) };
    Some(match if rc == 0 { 0 } else { errno() } {
        0 => Ok(Progressed::Done(())),
        EINPROGRESS | EINTR => Ok(Progressed::Wait { events: libc::POLLOUT, what: "connecting to the proxy" }),
        err => Err(ConnectError::ProxyUnreachable(addr, err)),
    })
}

/// How a connect to `addr` that was under way ended, once the socket's
/// wait reported `revents`. A failed connect always raises `POLLERR`;
/// only then is `SO_ERROR` worth a syscall (this runs on every proxied
/// connect). Linux lets a socket whose connect failed try again.
fn connect_outcome(io: &impl SocketIo, fd: c_int, addr: SocketAddr, revents: i16) -> Result<(), ConnectError> {
    if revents & (libc::POLLERR | libc::POLLHUP) == 0 {
        return Ok(());
    }
    let so_error = io.so_error(fd);
    Err(ConnectError::ProxyUnreachable(addr, if so_error == 0 { libc::ECONNREFUSED } else { so_error }))
}

/// The connect through the chain as a state machine over a non-blocking
/// socket: each [`step`](Driver::step) does what it can without waiting,
/// then says what to wait for. The blocking connect
/// ([`connect_via_proxy`]) waits with `poll`; the shim's background
/// engine (a non-blocking `connect`) with its `epoll`. Lock-step unless
/// the hop opted in to pipelining: each message goes out when the
/// handshake says so, after the server's previous answer.
pub struct Driver<'a> {
    config: &'a Config,
    first_hop: Vec<SocketAddr>,
    family: c_int,
    command: Command,
    dst: TargetAddr,
    phase: Phase,
    hop: usize,
    proxy: Option<SocketAddr>,
    bound: TargetAddr,
    last: Option<ConnectError>,
}

impl<'a> Driver<'a> {
    /// A connect of a socket of `family` to `dst` through `config`'s
    /// chain, running `command` at the last hop; `first_hop`: the first
    /// hop's addresses, resolved by the caller.
    pub fn new(config: &'a Config, first_hop: &[SocketAddr], family: c_int, command: Command, dst: &TargetAddr) -> Driver<'a> {
        Driver {
            config,
            first_hop: first_hop.to_vec(),
            family,
            command,
            dst: dst.clone(),
            phase: Phase::Connect(0),
            hop: 0,
            proxy: None,
            bound: TargetAddr::unspecified(),
            last: None,
        }
    }

    /// After [`Step::Done`]: the first hop's address and the last hop's
    /// bound address.
    pub fn result(&self) -> Option<(SocketAddr, TargetAddr)> {
        matches!(self.phase, Phase::Done).then(|| (self.proxy.expect("set before Done"), self.bound.clone()))
    }

    /// Goes as far as the socket allows without waiting. `revents`: what
    /// the last wait reported (0 on the first call). Every send and
    /// receive is `MSG_DONTWAIT`, so a socket the program made blocking
    /// meanwhile (it shares the file description) never blocks a step.
    pub fn step(&mut self, io: &impl SocketIo, fd: c_int, revents: i16) -> Result<Step, ConnectError> {
        let mut revents = revents;
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Connect(i) => {
                    let Some(addr) = self.first_hop.get(i).copied() else {
                        // The message is built only on failure: this runs on every connect.
                        let config = self.config;
                        return Err(self.last.take().unwrap_or_else(|| ConnectError::NoProxyAddress(config.chain[0].to_string())));
                    };
                    match start_connect(io, fd, self.family, addr) {
                        None => self.phase = Phase::Connect(i + 1),
                        Some(Ok(Progressed::Done(()))) => self.connected(addr)?,
                        Some(Ok(Progressed::Wait { events, what })) => {
                            self.phase = Phase::Connecting(i);
                            return Ok(Step::Wait { events, what });
                        }
                        Some(Err(e)) => {
                            self.last = Some(e);
                            self.phase = Phase::Connect(i + 1);
                        }
                    }
                }
                Phase::Connecting(i) => {
                    let addr = self.first_hop[i];
                    match connect_outcome(io, fd, addr, revents) {
                        Ok(()) => self.connected(addr)?,
                        Err(e) => {
                            self.last = Some(e);
                            self.phase = Phase::Connect(i + 1);
                            revents = 0;
                        }
                    }
                }
                Phase::Exchanging { mut hs, mut ex } => match ex.step(io, fd, &mut hs)? {
                    Progressed::Wait { events, what } => {
                        self.phase = Phase::Exchanging { hs, ex };
                        return Ok(Step::Wait { events, what });
                    }
                    Progressed::Done(bound) => {
                        self.bound = bound;
                        self.hop += 1;
                        if self.hop == self.config.chain.len() {
                            self.phase = Phase::Done;
                            return Ok(Step::Done);
                        }
                        self.start_hop()?;
                    }
                },
                Phase::Done => return Ok(Step::Done),
            }
        }
    }

    /// The first hop answered at `addr`: its handshake starts.
    fn connected(&mut self, addr: SocketAddr) -> Result<(), ConnectError> {
        self.proxy = Some(addr);
        self.start_hop()
    }

    fn start_hop(&mut self) -> Result<(), ConnectError> {
        let i = self.hop;
        let hop = &self.config.chain[i];
        let last = i + 1 == self.config.chain.len();
        let target = hop_target(self.config, i, &self.dst);
        let cmd = if last { self.command } else { Command::Connect };
        let (hs, first) = ClientHandshake::start(&hop.dialect(), cmd, &target).map_err(ConnectError::Handshake)?;
        self.phase = Phase::Exchanging { hs, ex: Exchange::new(first) };
        Ok(())
    }
}

// The steps of `socksify --check`, one at a time (the shim and the
// supervisor use [`Driver`], through [`connect_via_proxy`] or the engine).

/// Connects `fd` (non-blocking) to the first of `addrs` that answers;
/// returns its address. The error is the last address's.
pub fn connect_first_hop(
    io: &impl SocketIo,
    fd: c_int,
    family: c_int,
    config: &Config,
    addrs: &[SocketAddr],
    deadline: &Deadline,
) -> Result<SocketAddr, ConnectError> {
    let mut last = None;
    for addr in addrs {
        let outcome = match start_connect(io, fd, family, *addr) {
            None => continue,
            Some(Ok(Progressed::Done(()))) => Ok(()),
            Some(Ok(Progressed::Wait { events, what })) => connect_outcome(io, fd, *addr, wait(io, fd, events, deadline, what)?),
            Some(Err(e)) => Err(e),
        };
        match outcome {
            Ok(()) => return Ok(*addr),
            Err(e) => last = Some(e),
        }
    }
    // The message is built only on failure: this runs on every connect.
    Err(last.unwrap_or_else(|| ConnectError::NoProxyAddress(config.chain[0].to_string())))
}

/// Runs one handshake on a connected, non-blocking fd: sends `first` (what
/// [`ClientHandshake::start`] returned), then feeds `hs`; returns the
/// proxy's bound address. Lock-step unless the hop opted in to pipelining:
/// each message goes out when the handshake says so, after the server's
/// previous answer. `hs` is left as the handshake ended, for a report.
pub fn handshake(
    io: &impl SocketIo,
    fd: c_int,
    hs: &mut ClientHandshake,
    first: &[u8],
    deadline: &Deadline,
) -> Result<TargetAddr, ConnectError> {
    let mut ex = Exchange::new(first.to_vec());
    loop {
        match ex.step(io, fd, hs)? {
            Progressed::Wait { events, what } => _ = wait(io, fd, events, deadline, what)?,
            Progressed::Done(bound) => return Ok(bound),
        }
    }
}

/// Where hop `i` of the chain must ask to be connected: the next hop, or
/// the destination after the last.
pub fn hop_target(config: &Config, i: usize, dst: &TargetAddr) -> TargetAddr {
    match config.chain.get(i + 1) {
        None => dst.clone(),
        Some(next) => proxy_target(next),
    }
}

/// A proxy as the destination of the hop before it: a host name is sent by
/// name.
pub fn proxy_target(proxy: &ProxyUrl) -> TargetAddr {
    match &proxy.host {
        ProxyHost::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, proxy.port)),
        ProxyHost::Name(name) => TargetAddr::Domain(name.clone(), proxy.port),
    }
}

/// Connects `fd` (a TCP socket of `family`) to `dst` through the chain,
/// running `command` (CONNECT or UDP ASSOCIATE) at the last hop.
/// `first_hop` are the first hop's addresses, resolved by the caller.
/// Returns the first hop's address and the last hop's bound address.
pub fn connect_via_proxy(
    io: &impl SocketIo,
    fd: c_int,
    family: c_int,
    config: &Config,
    first_hop: &[SocketAddr],
    command: Command,
    dst: &TargetAddr,
) -> Result<(SocketAddr, TargetAddr), ConnectError> {
    let deadline = Deadline::after(config.timeout);
    let _flags = NonBlocking::set(io, fd)?;
    let mut driver = Driver::new(config, first_hop, family, command, dst);
    let mut revents = 0;
    loop {
        match driver.step(io, fd, revents)? {
            Step::Done => return Ok(driver.result().expect("done")),
            Step::Wait { events, what } => revents = wait(io, fd, events, &deadline, what)?,
        }
    }
}
