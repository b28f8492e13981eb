//! The per-request log line on stderr.
//!
//! Promise: exactly one line per request, `socksify-server: key=value ...`,
//! written with a single `write` of the whole line so lines of concurrent
//! sessions never interleave. Values a client controls (host names) are
//! escaped so that they can neither break the line nor forge a key.

use std::fmt::Write as _;
use std::io::Write as _;

/// A log line being built, key by key.
pub struct LogLine {
    text: String,
    /// False for a line that will never be written (`--quiet`): keys cost nothing then.
    on: bool,
}

impl LogLine {
    pub fn new() -> LogLine {
        LogLine { text: String::from("socksify-server:"), on: true }
    }

    /// A line that ignores its keys and is never written.
    pub fn off() -> LogLine {
        LogLine { text: String::new(), on: false }
    }

    /// Appends `key=value`; a value with spaces or unprintable characters
    /// is quoted, with `"`, `\\` and control characters escaped.
    pub fn kv(mut self, key: &str, value: impl std::fmt::Display) -> LogLine {
        if !self.on {
            return self;
        }
        let value = value.to_string();
        let plain = !value.is_empty() && value.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
        let _ = write!(self.text, " {key}=");
        if plain {
            self.text.push_str(&value);
            return self;
        }
        self.text.push('"');
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    self.text.push('\\');
                    self.text.push(c);
                }
                c if c.is_control() => {
                    let _ = write!(self.text, "\\x{:02x}", c as u32);
                }
                c => self.text.push(c),
            }
        }
        self.text.push('"');
        self
    }

    /// Writes the line unless `quiet`.
    pub fn emit(mut self, quiet: bool) {
        if quiet || !self.on {
            return;
        }
        self.text.push('\n');
        let _ = std::io::stderr().lock().write_all(self.text.as_bytes());
    }
}

impl Default for LogLine {
    fn default() -> Self {
        Self::new()
    }
}

/// The name a log line gives a SOCKS5 reply code.
pub fn reply_name(code: socksify_proto::wire::socks5::ReplyCode) -> &'static str {
    use socksify_proto::wire::socks5::ReplyCode::*;
    match code {
        Succeeded => "succeeded",
        GeneralFailure => "general-failure",
        NotAllowed => "not-allowed",
        NetworkUnreachable => "network-unreachable",
        HostUnreachable => "host-unreachable",
        ConnectionRefused => "connection-refused",
        TtlExpired => "ttl-expired",
        CommandNotSupported => "command-not-supported",
        AddressTypeNotSupported => "address-type-not-supported",
        Unassigned(_) => "unassigned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_stay_on_one_line() {
        let line = LogLine::new().kv("dst", "evil name\nx=1\"").kv("ms", 3).kv("e", "");
        assert_eq!(line.text, "socksify-server: dst=\"evil name\\x0ax=1\\\"\" ms=3 e=\"\"");
    }
}
