//! What a server that does not speak SOCKS answered, in words: the first
//! line it sent names what it is (sshd's `SSH-2.0-...` banner, an HTTP
//! status line), else the bytes in hex.

use socksify_proto::wire;

/// How much of the answer is read and shown: its first line, at most.
pub const SHOWN: usize = 64;

/// The verdict's words for `bytes`, the start of an answer that `why`
/// says is not SOCKS.
pub fn describe(bytes: &[u8], why: &wire::Error) -> String {
    let line = first_line(bytes);
    if line.starts_with("SSH-") {
        format!("the server sent '{line}': this is an SSH server, not its SOCKS port; use ssh -D PORT")
    } else if line.starts_with("HTTP/") {
        format!("the server sent '{line}': this is an HTTP server, not a SOCKS proxy (socksify speaks only SOCKS)")
    } else if line.len() >= 4 {
        format!("the server sent '{line}', which is not SOCKS")
    } else {
        format!("the answer is not SOCKS ({why}): {}", hex(bytes))
    }
}

/// `[05 ff]`-style hex of the first bytes.
pub fn hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("[{}]", shown.join(" "))
}

/// The text before the first line end, if it is all printable ASCII.
fn first_line(bytes: &[u8]) -> &str {
    let line = bytes.split(|b| *b == b'\r' || *b == b'\n').next().unwrap_or_default();
    let line = &line[..line.len().min(SHOWN)];
    if line.iter().all(|b| (b' '..=b'~').contains(b)) {
        std::str::from_utf8(line).unwrap_or_default()
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHY: wire::Error = wire::Error::Malformed("method selection is not SOCKS version 5");

    #[test]
    fn names_what_the_server_is() {
        let ssh = describe(b"SSH-2.0-OpenSSH_9.2\r\nrest", &WHY);
        assert_eq!(ssh, "the server sent 'SSH-2.0-OpenSSH_9.2': this is an SSH server, not its SOCKS port; use ssh -D PORT");
        let http = describe(b"HTTP/1.1 400 Bad Request\r\n\r\n", &WHY);
        assert!(http.starts_with("the server sent 'HTTP/1.1 400 Bad Request': this is an HTTP server"), "{http}");
        assert_eq!(describe(b"220 mail ESMTP\r\n", &WHY), "the server sent '220 mail ESMTP', which is not SOCKS");
        assert_eq!(
            describe(&[4, 0x5a, 0, 0], &WHY),
            "the answer is not SOCKS (malformed message: method selection is not SOCKS version 5): [04 5a 00 00]"
        );
        assert!(describe(b"HT", &WHY).ends_with("[48 54]"), "too short to name");
    }
}
