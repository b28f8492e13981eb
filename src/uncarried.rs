//! What SOCKS cannot carry, refused rather than let out directly (the
//! decisions are `socksify_client::socket_kind`'s): an IPv4/IPv6 socket
//! that is neither TCP nor UDP (raw, ICMP "ping" sockets, UDP-Lite, SCTP)
//! to a destination that is not bypassed; a socket whose packets carry
//! their destination inside the payload (`AF_PACKET`, `IPPROTO_RAW`,
//! `IP_HDRINCL`), and io_uring, whose operations no hook sees, while
//! anything is proxied. Each refusal is `EPERM` (io_uring: `ENOSYS`, as
//! under the supervisor) and one log line.

use crate::log_once::log_once;
use crate::{route, runtime};
use std::net::SocketAddr;

/// A send or `connect` of `what` (a socket no proxy carries) to `dst`:
/// `Ok` if `dst` is bypassed (the program's call goes direct), else
/// `EPERM`.
pub fn to(what: &str, dst: &SocketAddr) -> Result<(), i32> {
    let Some(config) = runtime::config() else {
        log_once(format!("{what} to {dst} refused (EPERM): the configuration is malformed (see the message above)"));
        return Err(libc::EPERM);
    };
    if route::goes_direct(config, dst) {
        return Ok(());
    }
    refuse(what, dst)
}

/// [`to`] for a destination already known not to be bypassed.
pub fn refuse(what: &str, dst: &SocketAddr) -> Result<(), i32> {
    log_once(format!("{what} to {dst} refused (EPERM): SOCKS carries only TCP and UDP, and {dst} is not in SOCKSIFY_NO_PROXY"));
    Err(libc::EPERM)
}

/// Whether everything is bypassed (`SOCKSIFY_NO_PROXY='*'`): then nothing
/// needs the hooks, and what they cannot see may run.
fn nothing_proxied() -> bool {
    runtime::config().is_some_and(|c| c.no_proxy.bypasses_everything())
}

/// A socket that carries its destination inside its packets (`what`):
/// `EPERM` unless nothing is proxied.
pub fn blind(what: &str) -> Result<(), i32> {
    if nothing_proxied() {
        return Ok(());
    }
    log_once(format!(
        "{what} refused (EPERM): its packets carry their destination inside, where socksify cannot route them (SOCKSIFY_NO_PROXY='*' allows it)"
    ));
    Err(libc::EPERM)
}

/// `io_uring_setup`, `io_uring_enter`, `io_uring_register`: `ENOSYS`
/// unless nothing is proxied. A ring's connect and send never pass through
/// a hook; without a ring, programs (liburing's users among them) fall
/// back to plain calls.
pub fn io_uring() -> Result<(), i32> {
    if nothing_proxied() {
        return Ok(());
    }
    log_once("io_uring refused (ENOSYS): its operations never pass through the shim's hooks; the program must fall back to plain calls (or run it with --supervise)".into());
    Err(libc::ENOSYS)
}
