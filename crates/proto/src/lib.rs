//! The pure parts of socksify: no sockets, no FFI, no global state.
//!
//! * [`wire`]: SOCKS5 (RFC 1928), username/password auth (RFC 1929), the UDP
//!   request header and SOCKS4/4a, each as `parse`/`emit` over byte slices.
//! * [`handshake`]: the client side of a SOCKS handshake as a sans-I/O state
//!   machine; the shim drives it over a raw fd, tests over plain buffers.
//! * [`cidr`]: address ranges (`10.0.0.0/8`), for the bypass list, the
//!   fake pools and the server's rules.
//! * [`config`]: proxy URLs, the bypass list and the environment variables.
//! * [`fake_dns`]: the fake-address table of remote DNS.
//! * [`hosts`]: `/etc/hosts` parsed (the text in, a name's or an address's
//!   entry out), for the shim and the supervisor alike.
//! * [`bind`]: which listening sockets become a SOCKS BIND, and the BIND's
//!   second reply.
//! * [`dns`]: the in-process DNS responder of remote DNS (queries a
//!   program sends to its nameserver, answered from that table).

// Pure: parsing bytes from the network needs no unsafe code, and gets none.
#![forbid(unsafe_code)]

pub mod bind;
pub mod cidr;
pub mod config;
pub mod dns;
pub mod fake_dns;
pub mod handshake;
pub mod hosts;
pub mod wire;
