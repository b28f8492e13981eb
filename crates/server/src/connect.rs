//! The CONNECT command, for SOCKS5 and SOCKS4/4a alike.
//!
//! Promise: the client gets exactly one reply, success only once the
//! destination accepted the connection; bytes the client pipelined after its
//! request are delivered to the destination first; then the flow is relayed
//! until both directions end, and one log line reports it.

use crate::log::reply_name;
use crate::client_conn::{reply5, ClientConn, Session};
use crate::{outbound, relay};
use socksify_proto::wire::socks4::{self, Reply4};
use socksify_proto::wire::socks5::ReplyCode;
use socksify_proto::wire::TargetAddr;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Which protocol the reply must speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Four,
    Five,
}

impl Version {
    /// The reply bytes for `code` and the bound address.
    pub fn reply(self, code: ReplyCode, bound: Option<SocketAddr>) -> Vec<u8> {
        match self {
            Version::Five => reply5(code, bound),
            Version::Four => {
                let granted = code == ReplyCode::Succeeded;
                let (ip, port) = match bound {
                    Some(SocketAddr::V4(sa)) => (*sa.ip(), sa.port()),
                    _ => (Ipv4Addr::UNSPECIFIED, 0),
                };
                let mut out = Vec::with_capacity(Reply4::LEN);
                Reply4 { code: if granted { socks4::GRANTED } else { socks4::REJECTED }, port, ip }.emit(&mut out);
                out
            }
        }
    }
}

pub fn serve(sess: &Session, mut conn: ClientConn, version: Version, dst: TargetAddr) {
    let line = sess.log("connect").kv("dst", &dst);
    let target = match outbound::connect(&sess.cfg, &dst) {
        Ok(t) => t,
        Err(f) => {
            let _ = conn.send(&version.reply(f.code, None));
            return sess.finish(line.kv("reply", reply_name(f.code)).kv("sent", 0).kv("received", 0).kv("error", f.reason));
        }
    };
    let bound = target.local_addr().ok();
    if let Err(e) = conn.send(&version.reply(ReplyCode::Succeeded, bound)) {
        return sess.finish(line.kv("reply", "succeeded").kv("sent", 0).kv("received", 0).kv("error", e));
    }
    conn.end_handshake();
    // Payload the client pipelined behind its request is already in our buffer.
    let early = std::mem::take(&mut conn.buf);
    if !early.is_empty() && (&target).write_all(&early).is_err() {
        return sess.finish(line.kv("reply", "succeeded").kv("sent", 0).kv("received", 0).kv("error", "destination closed"));
    }
    let counts = relay::relay(conn.stream, target, sess.cfg.idle_timeout).unwrap_or_default();
    let out = bound.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |b| b.ip());
    let line = line.kv("reply", "succeeded").kv("sent", counts.sent + early.len() as u64).kv("received", counts.received);
    let mut line = line.kv("ms", sess.ms()).kv("out", out);
    if counts.idle {
        line = line.kv("end", "idle-timeout");
    }
    if version == Version::Four {
        line = line.kv("socks", 4);
    }
    if let Some(user) = &sess.user {
        line = line.kv("user", user);
    }
    line.emit(sess.cfg.quiet);
}
