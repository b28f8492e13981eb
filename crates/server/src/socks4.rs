//! SOCKS4 and SOCKS4a (host name after the user id) CONNECT.
//!
//! Promise: with `--user` configured every SOCKS4 request is rejected with
//! 91, since SOCKS4 cannot carry a password; BIND and unknown commands are
//! rejected with 91 too. Everything else goes to [`crate::connect`].

use crate::connect::{self, Version};
use crate::client_conn::{ClientConn, HandshakeError, Session};
use socksify_proto::wire::socks4::{self as wire4, Request4};
use socksify_proto::wire::socks5::ReplyCode;

pub fn serve(sess: &Session, mut conn: ClientConn) -> Result<(), HandshakeError> {
    let request = conn.read_msg(Request4::parse)?;
    let refusal = if !sess.cfg.users.is_empty() {
        Some("SOCKS4 has no passwords and users are configured")
    } else if request.command != wire4::CONNECT {
        Some("only CONNECT is supported over SOCKS4")
    } else {
        None
    };
    if let Some(why) = refusal {
        let _ = conn.send(&Version::Four.reply(ReplyCode::NotAllowed, None));
        let cmd = if request.command == wire4::BIND { "bind" } else { "connect" };
        let line = sess.log(cmd).kv("dst", &request.dst).kv("reply", "rejected").kv("sent", 0).kv("received", 0);
        sess.finish(line.kv("socks", 4).kv("error", why));
        return Ok(());
    }
    connect::serve(sess, conn, Version::Four, request.dst);
    Ok(())
}
