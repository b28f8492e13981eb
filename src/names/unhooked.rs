//! Look-ups glibc runs without our hooks: `getaddrinfo_a` and the raw DNS
//! calls (`res_query` and the rest) use glibc's internal socket calls, so
//! in remote DNS mode each would send a query straight to the system's
//! nameserver. Who answers them ([`answerer`]), the warning when a raw
//! query is refused ([`warn_refused`]), and the notification a
//! `getaddrinfo_a` caller asked for once its requests are answered
//! ([`notify`]). The hooks (`hooks/resolve/raw_dns.rs`) read the C
//! arguments and write the answers.

use crate::runtime;
use libc::{c_int, c_void};
use socksify_proto::config::DnsMode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who answers a look-up that glibc would run without our hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    /// Local DNS mode: glibc's own function.
    Glibc,
    /// Remote DNS mode or a malformed configuration: the shim
    /// (`getaddrinfo_a`: every request answered at once as our
    /// `getaddrinfo` answers it; `res_*`: refused, a DNS message has no
    /// proxy to go to).
    Shim,
}

pub fn answerer() -> Answerer {
    match runtime::config() {
        Some(config) if config.dns == DnsMode::Local => Answerer::Glibc,
        _ => Answerer::Shim,
    }
}

/// Once per process: why the program's raw DNS query (`what`) failed.
pub fn warn_refused(what: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        let why = if runtime::config().is_some() { "in remote DNS mode" } else { "while the configuration is malformed" };
        log::warn!(
            "{what}: raw DNS queries are refused {why}: they would leave the machine directly, \
             not through the proxy (use SOCKSIFY_DNS=local, or a resolver that uses getaddrinfo)"
        );
    }
}

/// How a `getaddrinfo_a(GAI_NOWAIT)` caller asked to learn that its
/// requests are done (its `struct sigevent`).
#[derive(Debug, Clone, Copy)]
pub enum Notify {
    Nothing,
    /// `SIGEV_SIGNAL`: `signo` queued to this process with `value`.
    Signal { signo: c_int, value: *mut c_void },
    /// `SIGEV_THREAD`: `function(value)` on a new thread.
    Thread { function: unsafe extern "C" fn(*mut c_void), value: *mut c_void },
}

/// Tells the caller, as it asked, that every request is done.
///
/// # Safety
/// A [`Notify::Thread`]'s function may be called with its value (the
/// caller's `sigevent` says so).
pub unsafe fn notify(how: Notify) {
    match how {
        Notify::Nothing => {}
        Notify::Signal { signo, value } => {
            let value = libc::sigval { sival_ptr: value };
            // SAFETY: plain syscall wrappers.
            unsafe { libc::sigqueue(libc::getpid(), signo, value) };
        }
        Notify::Thread { function, value } => {
            let value = value as usize;
            // SAFETY: the caller's notify function and value, as glibc would call them (notify's contract).
            let spawned = std::thread::Builder::new().name("gai-notify".into()).spawn(move || unsafe { function(value as *mut c_void) });
            if spawned.is_err() {
                log::warn!("getaddrinfo_a: cannot start the notification thread");
            }
        }
    }
}
