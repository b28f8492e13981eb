//! UDP through SOCKS5 UDP ASSOCIATE: the associations, the datagram
//! format, and the send/receive engine behind the hooks in
//! [`crate::hooks::udp`] (which decode the C arguments and call
//! [`send::send`] and [`recv::recv`]).
//!
//! One association per *socket* (not per fd: `dup`s share it), opened by
//! the first datagram to a proxied destination (or a `connect` to one):
//! the socket is bound first if it is not, a TCP control connection of our
//! own (`O_CLOEXEC`, never in the fd table, never seen by the program)
//! sends UDP ASSOCIATE with the socket's bound address, and the reply's
//! address is the relay (`0.0.0.0`/`::` or port 0 there mean the proxy's own
//! address). Datagrams then go from the program's own socket to the relay
//! with the RFC 1928 header; replies are unwrapped and reported with their
//! real source. Datagrams from anywhere else are dropped, except from
//! bypassed sources, which the program may talk to directly.
//!
//! The association ends when the socket's last fd is closed (the control
//! connection is closed, so the server tears its side down). If the
//! control fd is closed behind our back (`close_range`, a raw syscall) or
//! the server ends the association, the next datagram notices (`poll` on
//! the control fd) and opens a new one.
//!
//! | File | What |
//! |---|---|
//! | `table.rs` | the association table (one lock, map operations only) |
//! | `assoc.rs` | opening an association, checking it is alive |
//! | `datagram.rs` | the RFC 1928 header: building it, classifying what arrives |
//! | `send.rs`, `recv.rs` | one datagram out, one datagram in |
//! | `bpf.rs`, `filter.rs` | the socket filter that drops strays in the kernel, and keeping it current |

mod assoc;
pub mod bpf;
pub mod datagram;
mod filter;
pub mod recv;
pub mod send;
pub mod table;

pub use assoc::{bound_addr, connect_kernel, disconnect_kernel, ensure, track_responder};
pub use filter::refresh as refresh_filter;
pub use table::{inode, is_control, peer, set_peer};

pub use crate::log_once::log_once;
use libc::{c_int, AF_INET, AF_INET6};

/// The largest RFC 1928 UDP header (a 255-byte name).
pub const HEADER_MAX: usize = socksify_proto::wire::MAX_HEADER_LEN;

/// An encoded RFC 1928 UDP header, kept inline (no allocation per
/// datagram): built once per destination, cached in the table.
#[derive(Clone, Copy)]
pub struct Header {
    len: u16,
    bytes: [u8; HEADER_MAX],
}

impl Header {
    pub fn new(header: &socksify_proto::wire::udp::UdpHeader) -> Header {
        let mut out = Vec::with_capacity(header.encoded_len());
        header.emit(&mut out);
        let mut bytes = [0; HEADER_MAX];
        bytes[..out.len()].copy_from_slice(&out);
        Header { len: out.len() as u16, bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Header({:02x?})", self.as_bytes())
    }
}

/// Why an association could not be used; the errno the call fails with.
#[derive(Debug)]
pub struct AssocError {
    pub errno: i32,
    pub why: String,
}

fn err(errno: i32, why: impl Into<String>) -> AssocError {
    AssocError { errno, why: why.into() }
}

/// Whether `family` is one we proxy.
pub fn is_inet(family: c_int) -> bool {
    family == AF_INET || family == AF_INET6
}

/// Which calls check, with an `fstat`, that one of our fds is still the
/// socket we recorded. A number closed where our hooks cannot see it and
/// handed out again is mostly caught where the kernel hands it out
/// (`socket`, `accept`, `accept4`; `fclose` forgets what it closes, see
/// hooks/socket.rs and hooks/close.rs), so the socket calls trust the table:
/// the two `fstat`s per round trip were the shim's main cost on UDP.
/// `write`/`read` and their vector forms can land on any fd, including one
/// opened by a call we do not hook (`open`, `pipe`), so they still check.
#[derive(Clone, Copy, PartialEq)]
pub enum FdCheck {
    Verify,
    Trust,
}
