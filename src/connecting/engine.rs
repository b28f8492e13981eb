//! The background engine: one thread of ours with its own epoll, started
//! by the first non-blocking connect (never at load; again in a fork child
//! that needs one; never in a vfork child, which cannot have threads of
//! its own). It drives each connect's [`Driver`] on a copy (`dup`) of the
//! program's socket, with the `SOCKSIFY_TIMEOUT_MS` deadline, and hands
//! the outcome to [`super::done`].

use super::table::{self, OwnedFd};
use crate::fork_safe::ForkSafeMutex;
use crate::{guard, real};
use libc::c_int;
use socksify_client::tcp::{ConnectError, Driver, Step};
use socksify_proto::config::Config;
use socksify_proto::wire::TargetAddr;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One connect the engine drives.
pub struct Job {
    pub id: u64,
    /// The program's fd (for the log lines).
    pub fd: c_int,
    /// The engine's copy of the socket.
    pub sock: OwnedFd,
    pub driver: Driver<'static>,
    pub deadline: Instant,
    /// What the driver waits for, and the step's name.
    pub events: i16,
    pub what: &'static str,
    pub target: TargetAddr,
    /// The destination as the program named it.
    pub dst: SocketAddr,
    pub config: &'static Config,
}

/// The running engine of this process: its epoll and wake-up eventfd, and
/// the jobs handed to it since it last looked.
struct Handle {
    pid: libc::pid_t,
    /// Held for the thread (which uses the number); closed with the handle
    /// in a fork child, where the thread is not.
    _epoll: OwnedFd,
    wake: OwnedFd,
    queue: Vec<Job>,
}

static ENGINE: ForkSafeMutex<Option<Handle>> = ForkSafeMutex::new(None);

/// The epoll data of the wake-up eventfd (a job's is its id, from 1).
const WAKE: u64 = 0;

fn pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

fn signal(fd: c_int) {
    let one: u64 = 1;
    // SAFETY: an 8-byte write to our own eventfd.
    unsafe { real::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

/// Hands `job` to the engine, starting it if this process has none;
/// gives the job back if no engine can run.
pub fn submit(job: Box<Job>) -> Result<(), (Box<Job>, String)> {
    let mut engine = ENGINE.lock();
    if engine.as_ref().is_some_and(|h| h.pid != pid()) {
        // A fork child: the parent's engine is not running here; its fds
        // (the child's copies) close with the handle.
        table::WAKE.store(-1, Ordering::Release);
        *engine = None;
    }
    if engine.is_none() {
        match start() {
            Ok(h) => *engine = Some(h),
            Err(why) => return Err((job, why)),
        }
    }
    let h = engine.as_mut().expect("started above");
    h.queue.push(*job);
    signal(h.wake.0);
    Ok(())
}

fn start() -> Result<Handle, String> {
    let os = || std::io::Error::last_os_error().to_string();
    // SAFETY: plain epoll_create1/eventfd; the fds are ours.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let epoll = (epoll >= 0).then_some(epoll).ok_or_else(|| format!("epoll_create1: {}", os()))?;
    let epoll = OwnedFd::mark(epoll).ok_or("fd number beyond the shim's table")?;
    // SAFETY: as above.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    let wake = (wake >= 0).then_some(wake).ok_or_else(|| format!("eventfd: {}", os()))?;
    let wake = OwnedFd::mark(wake).ok_or("fd number beyond the shim's table")?;
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: WAKE };
    // SAFETY: our own epoll, eventfd and event.
    if unsafe { real::epoll_ctl(epoll.0, libc::EPOLL_CTL_ADD, wake.0, &mut ev) } != 0 {
        return Err(format!("epoll_ctl: {}", os()));
    }
    let (ep, wk) = (epoll.0, wake.0);
    std::thread::Builder::new()
        .name("socksify-connect".into())
        .stack_size(256 * 1024)
        .spawn(move || run(ep, wk))
        .map_err(|e| format!("starting the connect thread: {e}"))?;
    table::WAKE.store(wk, Ordering::Release);
    Ok(Handle { pid: pid(), _epoll: epoll, wake, queue: Vec::new() })
}

/// The engine's loop: new jobs and cancellations on a wake-up, a step of
/// a job when its socket is ready, a timeout when its deadline passes.
fn run(epoll: c_int, wake: c_int) {
    // Our own thread: nothing it calls may be proxied or re-enter a hook.
    let Some(_inside) = guard::enter() else { return };
    let mut jobs: HashMap<u64, Box<Job>> = HashMap::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        let now = Instant::now();
        let timeout = jobs
            .values()
            .map(|j| j.deadline.saturating_duration_since(now).as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int)
            .min()
            .unwrap_or(-1);
        // SAFETY: our epoll, and a buffer of 64 events.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as c_int, timeout) };
        if n < 0 {
            if crate::ffi::errno() == libc::EINTR {
                continue;
            }
            // Our epoll is gone (closed behind our back): nothing can be
            // waited for; each job fails rather than hang.
            log::error!("connect engine: epoll_wait failed ({}); failing the connects under way", std::io::Error::last_os_error());
            for (_, job) in jobs.drain() {
                finish(epoll, job, Err(ConnectError::Io("waiting in the connect engine", crate::ffi::errno())));
            }
            return;
        }
        for ev in &events[..n as usize] {
            let (id, revents) = (ev.u64, ev.events as i16);
            if id == WAKE {
                let mut count = [0u8; 8];
                // SAFETY: an 8-byte read from our own eventfd.
                unsafe { real::read(wake, count.as_mut_ptr() as *mut libc::c_void, 8) };
                let new = ENGINE.lock().as_mut().map(|h| std::mem::take(&mut h.queue)).unwrap_or_default();
                for job in new {
                    let job = Box::new(job);
                    let mut ev = libc::epoll_event { events: job.events as u32, u64: job.id };
                    // SAFETY: our epoll, our copy of the socket, our event.
                    if unsafe { real::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, job.sock.0, &mut ev) } != 0 {
                        let e = crate::ffi::errno();
                        finish(epoll, job, Err(ConnectError::Io("waiting in the connect engine", e)));
                        continue;
                    }
                    jobs.insert(job.id, job);
                }
                for id in table::take_cancelled() {
                    if let Some(job) = jobs.remove(&id) {
                        log::debug!("tcp fd {} -> {}: closed before the handshake was done", job.fd, job.target);
                        forget(epoll, &job);
                    }
                }
                continue;
            }
            let Some(job) = jobs.get_mut(&id) else { continue };
            match job.driver.step(&crate::tcp::RealIo, job.sock.0, revents) {
                Ok(Step::Wait { events, what }) => {
                    job.what = what;
                    if events != job.events {
                        job.events = events;
                        let mut ev = libc::epoll_event { events: events as u32, u64: id };
                        // SAFETY: our epoll, our copy of the socket, our event.
                        unsafe { real::epoll_ctl(epoll, libc::EPOLL_CTL_MOD, job.sock.0, &mut ev) };
                    }
                }
                Ok(Step::Done) => {
                    let job = jobs.remove(&id).expect("present");
                    let result = job.driver.result().expect("done");
                    finish(epoll, job, Ok(result));
                }
                Err(e) => {
                    let job = jobs.remove(&id).expect("present");
                    finish(epoll, job, Err(e));
                }
            }
        }
        let now = Instant::now();
        let expired: Vec<u64> = jobs.values().filter(|j| j.deadline <= now).map(|j| j.id).collect();
        for id in expired {
            let job = jobs.remove(&id).expect("present");
            let what = job.what;
            finish(epoll, job, Err(ConnectError::Timeout(what)));
        }
    }
}

/// Takes `job`'s socket out of the engine's epoll (the file stays open
/// through the program's fd, so closing our copy would not).
fn forget(epoll: c_int, job: &Job) {
    // SAFETY: fd numbers only.
    unsafe { real::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, job.sock.0, std::ptr::null_mut()) };
}

fn finish(epoll: c_int, job: Box<Job>, outcome: Result<(SocketAddr, TargetAddr), ConnectError>) {
    forget(epoll, &job);
    // Closes our copy before the program hears of it (see `done`).
    super::done(job, outcome);
}
