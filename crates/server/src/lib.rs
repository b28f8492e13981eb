//! `socksify-server`: a small SOCKS4/4a/5 server, socksify's bundled proxy.
//!
//! * [`cli`] — the command line and [`cli::Config`].
//! * [`server`] — listeners, connection cap, a pooled thread per client.
//! * [`pool`] — reused threads (sessions and relay directions).
//! * [`session`] — one client's handshake under a deadline, then its command.
//! * [`client_conn`] — what a session and its commands share: the client
//!   connection read under the deadline, the session's facts, the SOCKS5 reply.
//! * [`connect`], [`udp_relay`], [`bind`], [`socks4`] — the commands.
//! * [`outbound`] — resolution (`--map` first), rules, outgoing sockets, reply codes.
//! * [`relay`] — moving TCP bytes with `splice(2)`, half-close preserved.
//! * [`rules`] — `--allow`/`--deny`/`--allow-client`.
//! * [`local`] — which destinations are this host (denied beyond loopback).
//! * [`log`] — the one-line-per-request log.
//!
//! The wire formats are `socksify_proto::wire`; this crate does the I/O.

pub mod bind;
pub mod cli;
pub mod client_conn;
pub mod connect;
pub mod local;
pub mod log;
pub mod outbound;
pub mod pool;
pub mod relay;
pub mod rules;
pub mod server;
pub mod session;
pub mod socks4;
pub mod udp_relay;
