//! One client connection: detect the SOCKS version, run the handshake under
//! the deadline, then hand the request to its command.
//!
//! Promise: the whole handshake (greeting, authentication, request) must
//! arrive within `--handshake-timeout-ms`, else the connection is closed
//! (the connection and its buffer: `client_conn`). Network input is never
//! trusted: every parse error ends the session with the reply the protocol
//! defines, or a plain close.

use crate::cli::Config;
use crate::client_conn::{reply5, ClientConn, HandshakeError, Session};
use crate::log::reply_name;
use crate::{bind, connect, socks4, udp_relay};
use socksify_proto::wire::auth::{AuthReply, AuthRequest};
use socksify_proto::wire::socks5::{method, Command, Greeting, MethodSelection, ReplyCode, Request};
use socksify_proto::wire::{self, atyp};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Serves one accepted client to the end.
pub fn serve(stream: TcpStream, cfg: Arc<Config>, client: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut sess = Session { cfg, client, started: Instant::now(), user: None };
    let mut conn = ClientConn::new(stream, sess.cfg.handshake_timeout);
    let version = conn.read_msg(|b| b.first().map(|&v| (v, 0)).ok_or(wire::Error::Truncated));
    let result = match version {
        Ok(5) => socks5(&mut sess, conn),
        Ok(4) => socks4::serve(&sess, conn),
        Ok(_) => Err(HandshakeError::Garbage("not SOCKS version 4 or 5")),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        sess.finish(sess.log("handshake").kv("reply", "closed").kv("error", e));
    }
}

/// Method negotiation, RFC 1929 authentication and the request.
fn socks5(sess: &mut Session, mut conn: ClientConn) -> Result<(), HandshakeError> {
    let greeting = conn.read_msg(Greeting::parse)?;
    let wanted = if sess.cfg.users.is_empty() { method::NO_AUTH } else { method::USER_PASS };
    let chosen = if greeting.methods.contains(&wanted) { wanted } else { method::NO_ACCEPTABLE };
    let mut out = Vec::new();
    MethodSelection { method: chosen }.emit(&mut out);
    if chosen == method::NO_AUTH && Request::parse(&conn.buf).is_ok() {
        // The client pipelined its request: the method selection can wait
        // for the reply and share its segment.
        conn.send_later(&out);
    } else {
        conn.send(&out).map_err(HandshakeError::Io)?;
    }
    if chosen == method::NO_ACCEPTABLE {
        sess.finish(sess.log("handshake").kv("reply", "no-acceptable-method"));
        return Ok(());
    }
    if chosen == method::USER_PASS {
        let auth = conn.read_msg(AuthRequest::parse)?;
        let ok = sess.cfg.users.iter().any(|(u, p)| constant_time_eq(u, &auth.user) & constant_time_eq(p, &auth.pass));
        let mut out = Vec::new();
        AuthReply { status: if ok { 0 } else { 1 } }.emit(&mut out);
        conn.send(&out).map_err(HandshakeError::Io)?;
        if !ok {
            let line = sess
                .log("handshake")
                .kv("reply", "auth-failed")
                .kv("error", format!("bad password for user {}", String::from_utf8_lossy(&auth.user)));
            sess.finish(line);
            return Ok(());
        }
        sess.user = Some(String::from_utf8_lossy(&auth.user).into_owned());
    }
    let request = match conn.read_msg(Request::parse) {
        Ok(r) => r,
        Err(HandshakeError::Garbage(why)) => {
            // Answer what RFC 1928 lets us answer: an unknown ATYP is reply 8.
            let bad_atyp = conn.buf.len() >= 4 && conn.buf[0] == 5 && ![atyp::IPV4, atyp::DOMAIN, atyp::IPV6].contains(&conn.buf[3]);
            let code = if bad_atyp { ReplyCode::AddressTypeNotSupported } else { ReplyCode::GeneralFailure };
            let _ = conn.send(&reply5(code, None));
            let line = sess.log("request").kv("dst", "-").kv("reply", reply_name(code)).kv("error", why);
            sess.finish(line);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match Command::from_code(request.command) {
        Some(Command::Connect) => connect::serve(sess, conn, connect::Version::Five, request.dst),
        Some(Command::UdpAssociate) => udp_relay::serve(sess, conn, request.dst),
        Some(Command::Bind) => bind::serve(sess, conn, request.dst),
        None => {
            let code = ReplyCode::CommandNotSupported;
            let _ = conn.send(&reply5(code, None));
            let line = sess.log(&format!("unknown-{}", request.command)).kv("dst", &request.dst).kv("reply", reply_name(code));
            sess.finish(line);
        }
    }
    Ok(())
}

/// Compares without an early exit, so timing does not reveal a password prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
