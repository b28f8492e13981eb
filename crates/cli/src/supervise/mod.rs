//! `socksify-cli supervise [--] PROGRAM ARGS...` (`socksify --supervise`):
//! runs a program under a seccomp filter whose interesting calls (see
//! `filter.rs`) wait for this process, which routes them as the shim would
//! (`calls.rs`). For what `LD_PRELOAD` cannot reach: static programs (Go
//! with `CGO_ENABLED=0`, busybox) and raw system calls. No ptrace: calls
//! outside the filter run in the kernel, paying only seccomp's entry cost.
//!
//! The child sets `no_new_privs`, installs the filter and tells us the
//! listener's fd number over a pipe; we take the listener with
//! `pidfd_getfd`, then let it exec. The filter is inherited by every
//! thread and child of the program, and we serve until the last of them
//! has exited, while the caller gets the program's status when the program
//! exits (`lifetime.rs`). If the supervisor dies, the notified calls of the
//! program fail with ENOSYS: nothing goes out directly.

macro_rules! say {
    ($level:expr, $($arg:tt)*) => {
        if $crate::supervise::enabled($level) {
            eprintln!("socksify: {}", format_args!($($arg)*));
        }
    };
}

mod bind;
mod calls;
mod connect;
mod dns;
mod fake;
mod family_swap;
mod filter;
mod kernel;
mod lifetime;
mod reserved;
mod sent_dns;
mod sock_diag;
mod udp;
mod workers;

use kernel::{Answer, Listener};
use socksify_client::route;
use socksify_proto::config::{BindMode, Config, DnsMode, ProxyHost, UdpMode};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// `SOCKSIFY_LOG` as the shim reads it, reduced to one level.
fn set_level_from_env() {
    let spec = std::env::var("SOCKSIFY_LOG").unwrap_or_default().to_ascii_lowercase();
    let level = ["trace", "debug", "info", "warn", "error", "off"]
        .iter()
        .position(|l| spec.contains(l))
        .map_or(Level::Warn as u8, |i| [4, 4, 3, 2, 1, 0][i]);
    LEVEL.store(level, Ordering::Relaxed);
}

/// What every handler shares.
pub struct Supervisor {
    config: Config,
    /// The first hop's addresses, resolved once, here (never filtered).
    first_hop: Vec<SocketAddr>,
    listener: Listener,
    fake: Arc<fake::FakeTable>,
    nameservers: Vec<IpAddr>,
    dns: Option<dns::Responder>,
    /// Addresses the nameserver gave for names `SOCKSIFY_NO_PROXY` bypasses.
    bypassed: Arc<dns::BypassedAddrs>,
    /// The destination of each socket we connected through the proxy, by
    /// socket inode, for `getpeername` (see calls.rs).
    peers: Mutex<std::collections::HashMap<u64, SocketAddr>>,
    /// The family the program made each socket with that we replaced by
    /// one of the other family (family_swap.rs), by inode.
    families: Mutex<std::collections::HashMap<u64, i32>>,
    /// Answers to DNS queries sent unconnected, until received (sent_dns.rs).
    awaiting: sent_dns::Awaiting,
    /// UDP associations, by program socket (udp.rs).
    udp: udp::Table,
    /// SOCKS BIND (bind.rs).
    binds: bind::Binds,
    /// The fd range of the program's UDP sockets (reserved.rs).
    reserved: reserved::Reserved,
}

impl Supervisor {
    fn goes_direct(&self, dst: &SocketAddr) -> bool {
        socksify_client::route::goes_direct(&self.config, &self.first_hop, dst, |ip| self.bypassed.contains(ip))
    }

    /// Whether traffic to `dst` is for the DNS responder: remote DNS mode,
    /// port 53 of a resolv.conf nameserver.
    fn intercepts(&self, dst: &SocketAddr) -> bool {
        route::answers_dns(&self.config, &self.nameservers, dst)
    }

    fn is_nameserver(&self, dst: &SocketAddr) -> bool {
        route::is_nameserver(&self.nameservers, dst)
    }

    /// Remembers the destination `getpeername` reports for socket `inode`.
    fn remember_peer(&self, inode: u64, dst: SocketAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= 65536 {
            peers.clear(); // forgotten sockets report the proxy: never worse than that
        }
        peers.insert(inode, dst);
    }

    /// Remembers that socket `inode` stands for one of `family`.
    fn remember_family(&self, inode: u64, family: i32) {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if families.len() >= 65536 {
            families.clear(); // forgotten ones report in the new socket's family
        }
        families.insert(inode, family);
    }

    fn has_replaced_families(&self) -> bool {
        !self.families.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// The family the program knows socket `inode` by, if we replaced it.
    fn program_family(&self, inode: u64) -> Option<i32> {
        self.families.lock().unwrap_or_else(|e| e.into_inner()).get(&inode).copied()
    }

    /// Whether UDP to `dst` may go out as the program sent it.
    fn udp_goes_direct(&self, dst: &SocketAddr) -> bool {
        self.config.udp == UdpMode::Direct || self.goes_direct(dst) || (self.config.dns == DnsMode::Local && self.is_nameserver(dst))
    }
}

/// EPERM for UDP to a proxied destination (`SOCKSIFY_UDP=block`, or a
/// case the supervisor does not carry). Logged as a warning once (Go
/// alone probes each address it resolved with a UDP connect), then at info.
fn refuse_udp(dst: SocketAddr) -> Answer {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let level = if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) { Level::Info } else { Level::Warn };
    say!(level, "udp to {dst} refused (EPERM)");
    Answer::Fail(libc::EPERM)
}

const USAGE: &str = "usage: socksify-cli supervise [--argv0 NAME] [--] PROGRAM [ARGS...]\n       socksify-cli supervise --probe";

pub fn main(args: &[String]) -> i32 {
    // --argv0: the name the program is started under (the shim's exec hook
    // passes the one the program asked for; busybox-style tools need it).
    let (argv0, args) = match args {
        [flag, name, rest @ ..] if flag == "--argv0" => (Some(name.as_str()), rest),
        _ => (None, args),
    };
    let args = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        Some("--probe") if args.len() == 1 => return probe(),
        _ => args,
    };
    let Some(program) = args.first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    set_level_from_env();
    let config = match Config::from_lookup(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("socksify: {e}; not starting {program}");
            return 1;
        }
    };
    if let Some(warning) = &config.warning {
        say!(Level::Warn, "{warning}");
    }
    // The caller waits for the program; the supervisor may outlive it.
    let report = match lifetime::split() {
        Ok(lifetime::Role::Waiter(status)) => return exit_like(status),
        Ok(lifetime::Role::Supervisor(report)) => report,
        Err(e) => {
            eprintln!("socksify: fork: {e}; not starting {program}");
            return 1;
        }
    };
    let first_hop = resolve_first_hop(&config);
    if first_hop.is_empty() {
        say!(Level::Warn, "no address for the proxy {}: proxied connections will fail", config.chain[0]);
    }
    let nameservers = resolv_conf_nameservers();
    let fake = Arc::new(fake::FakeTable::new(&config));

    // Without UDP to carry or DNS to answer, no UDP socket is ever the
    // supervisor's: no range, and no receive is notified.
    let reserved = match config.udp != UdpMode::Direct || config.dns == DnsMode::Remote {
        true => reserved::Reserved::for_this_process(),
        false => reserved::Reserved::none(),
    };
    let (child, listener) = match spawn(program, argv0, &args[1..], filter::Notified { reserved: reserved.filter_bound(), bind: config.bind != BindMode::Off }) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("socksify: cannot run {program} under the supervisor: {e}");
            return if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    let bypassed = Arc::new(dns::BypassedAddrs::default());
    let dns = if config.dns == DnsMode::Remote {
        let nameserver = nameservers.first().map(|ip| SocketAddr::new(*ip, route::DNS_PORT));
        let cx = dns::Context {
            config: config.clone(),
            fake: fake.clone(),
            nameserver,
            first_hop: first_hop.clone(),
            bypassed: bypassed.clone(),
        };
        match dns::start(Arc::new(cx)) {
            Ok(r) => Some(r),
            Err(e) => {
                say!(Level::Warn, "{e}: DNS queries to the nameservers will be refused");
                None
            }
        }
    } else {
        None
    };
    let sv = Arc::new(Supervisor { config, first_hop, listener, fake, nameservers, dns, bypassed, peers: Mutex::default(), families: Mutex::default(), awaiting: Default::default(), udp: Default::default(), binds: Default::default(), reserved });
    serve(&sv, child, report)
}

/// `--probe`: whether this kernel (and any filter we already run under)
/// lets us supervise: exit 0, or 1 with the reason on stderr.
fn probe() -> i32 {
    // SAFETY: pidfd_getfd on an invalid pidfd: EBADF if the call exists.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        eprintln!("the kernel has no pidfd_getfd (Linux 5.6 or later needed)");
        return 1;
    }
    let filter = filter::program(filter::Notified { reserved: reserved::Reserved::for_this_process().filter_bound(), bind: true });
    let Ok((wait_r, wait_w)) = pipe() else {
        eprintln!("pipe: {}", std::io::Error::last_os_error());
        return 1;
    };
    // SAFETY: the child only makes system calls before _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match filter::install(&filter) {
            Ok(_) => {
                // Wait while the parent tries to reach us: until its byte,
                // or its end of the pipe closes (the child's copy first).
                let mut byte = 0u8;
                // SAFETY: close(2) and read(2) of one byte into a local.
                unsafe {
                    libc::close(wait_w.as_raw_fd());
                    libc::read(wait_r.as_raw_fd(), &mut byte as *mut u8 as *mut libc::c_void, 1);
                }
                0
            }
            Err(e) => e.clamp(1, 255),
        };
        // SAFETY: leaving the forked child without running our atexit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        return 1;
    }
    // What the supervisor does to a program: take one of its fds, read its memory.
    let access = kernel::pidfd_of_thread(pid as u32).and_then(|pidfd| kernel::take_fd(&pidfd, wait_r.as_raw_fd() as u64)).and_then(|_| {
        static PROBE_BYTE: u8 = 1;
        kernel::read_memory(pid as u32, &PROBE_BYTE as *const u8 as u64, 1).map(drop).map_err(std::io::Error::from_raw_os_error)
    });
    // SAFETY: write(2) of one byte: the child's read returns.
    unsafe { libc::write(wait_w.as_raw_fd(), [1u8].as_ptr() as *const libc::c_void, 1) };
    drop(wait_w);
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => match access {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("this process may not read its children's memory or take their fds ({e}; a ptrace restriction such as Yama's ptrace_scope)");
                1
            }
        },
        Some(libc::EBUSY) => {
            eprintln!("this process already runs under a seccomp filter with a supervisor of its own");
            1
        }
        Some(errno) => {
            let e = std::io::Error::from_raw_os_error(errno);
            eprintln!("seccomp user notification is not available: {e} (Linux 5.6 or later needed, and seccomp allowed)");
            1
        }
        None => {
            eprintln!("the probe died (status {status})");
            1
        }
    }
}

fn resolve_first_hop(config: &Config) -> Vec<SocketAddr> {
    let hop = &config.chain[0];
    match &hop.host {
        ProxyHost::Ip(ip) => vec![SocketAddr::new(*ip, hop.port)],
        ProxyHost::Name(name) => (name.as_str(), hop.port).to_socket_addrs().map(|a| a.collect()).unwrap_or_default(),
    }
}

/// The nameservers of /etc/resolv.conf, as the program reads them.
fn resolv_conf_nameservers() -> Vec<IpAddr> {
    socksify_proto::dns::resolv_conf_nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// Where signals meant for the program go: the program (in the
/// supervisor), the supervisor (in the waiter), or nowhere (0).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Starts the program under the filter; returns it and the listener.
fn spawn(program: &str, argv0: Option<&str>, args: &[String], notified: filter::Notified) -> std::io::Result<(std::process::Child, Listener)> {
    let filter = filter::program(notified);
    let (report_r, report_w) = pipe()?;
    let (ack_r, ack_w) = pipe()?;
    // The listener is taken from the child while `spawn` below still waits
    // for its exec: on another thread.
    let taker = std::thread::spawn(move || take_listener(report_r, ack_w));
    let (report_fd, ack_fd) = (report_w.as_raw_fd(), ack_r.as_raw_fd());
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if let Some(name) = argv0 {
        cmd.arg0(name);
    }
    // SAFETY: the closure runs between fork and exec and makes only system
    // calls, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = filter::install(&filter).map_err(std::io::Error::from_raw_os_error)?;
            let msg = [libc::getpid(), fd];
            libc::write(report_fd, msg.as_ptr() as *const libc::c_void, std::mem::size_of_val(&msg));
            let mut ok = 0u8;
            if libc::read(ack_fd, &mut ok as *mut u8 as *mut libc::c_void, 1) != 1 || ok != 1 {
                return Err(std::io::Error::from_raw_os_error(libc::EPROTO));
            }
            libc::close(fd);
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop((report_w, ack_r)); // the taker sees EOF if the child never reported
    let listener = taker.join().map_err(|_| std::io::Error::other("listener thread panicked"))?;
    let child = child?;
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    let listener = listener.ok_or_else(|| std::io::Error::other("the child installed no seccomp filter"))?;
    Ok((child, listener))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads (pid, listener fd) from the child, takes the listener, acks.
fn take_listener(report: OwnedFd, ack: OwnedFd) -> Option<Listener> {
    let mut buf = [0u8; 8];
    std::fs::File::from(report).read_exact(&mut buf).ok()?;
    let pid = i32::from_ne_bytes(buf[..4].try_into().unwrap());
    let fd = i32::from_ne_bytes(buf[4..].try_into().unwrap());
    let pidfd = kernel::pidfd_of_thread(pid as u32).ok()?;
    let listener = kernel::take_fd(&pidfd, fd as u64).ok()?;
    std::fs::File::from(ack).write_all(&[1]).ok()?;
    Some(Listener(listener))
}

/// Answers notified calls until no process holds the filter any more (the
/// program and every child it left running); returns the program's exit
/// code (the waiter has exited with its status already).
fn serve(sv: &Arc<Supervisor>, child: std::process::Child, report: lifetime::Report) -> i32 {
    forward_signals();
    let (exited_r, exited_w) = match pipe() {
        Ok(fds) => fds,
        Err(e) => {
            say!(Level::Error, "pipe: {e}");
            return 1;
        }
    };
    // Reaping on a thread of its own: it writes the program's status to
    // the pipe, and its end closes when no child is left (which also ends
    // us where the kernel reports no POLLHUP, before Linux 5.9).
    let main = child.id() as libc::pid_t;
    let reaper = std::thread::spawn(move || lifetime::reap(main, exited_w));
    let mut report = Some(report);
    let mut status = None;
    loop {
        let mut fds = [
            libc::pollfd { fd: sv.listener.0.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: exited_r.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            say!(Level::Error, "poll: {}", std::io::Error::last_os_error());
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match sv.listener.recv() {
                Ok(Some(n)) => calls::handle(sv, n),
                Ok(None) => {}
                Err(e) => {
                    say!(Level::Error, "reading a notified call: {e}");
                    break;
                }
            }
        }
        if fds[1].revents != 0 {
            match read_status(&exited_r) {
                // The program exited: the waiter exits with its status.
                Some(s) => {
                    status = Some(s);
                    if let Some(report) = report.take() {
                        report.send(s);
                    }
                }
                None => break, // no child left
            }
        }
        // POLLHUP on the listener: no task uses the filter any more.
        if fds[0].revents & libc::POLLHUP != 0 {
            break;
        }
    }
    // The program may be reaped and its status not read yet (the listener
    // reports POLLHUP first): wait for it.
    if let Some(report) = report.take() {
        status = read_status(&exited_r);
        report.send(status.unwrap_or(1 << 8));
    }
    let _ = reaper.join();
    match status {
        Some(s) if libc::WIFSIGNALED(s) => 128 + libc::WTERMSIG(s),
        Some(s) => libc::WEXITSTATUS(s),
        None => 1,
    }
}

/// A wait status from the reaper's pipe; `None` at its end.
fn read_status(pipe: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    loop {
        // SAFETY: read(2) into a local; the reaper writes 4 bytes at once (atomic on a pipe).
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n == 4 {
            return Some(i32::from_ne_bytes(buf));
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// The program's exit status as ours: its code, or its signal re-raised.
fn exit_like(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: default disposition, then the signal to ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return 128 + sig;
    }
    libc::WEXITSTATUS(status)
}

/// Signals meant for the program: passed on. A terminal's ^C reaches the
/// program by itself (same process group); we wait for its exit.
fn forward_signals() {
    extern "C" fn pass_on(sig: libc::c_int) {
        let pid = CHILD.load(Ordering::Relaxed);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, sig) };
        }
    }
    // SAFETY: installing a handler that only calls kill(2).
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
            libc::signal(sig, pass_on as *const () as libc::sighandler_t);
        }
        for sig in [libc::SIGINT, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}
