//! `libsocksify.so`: loaded with `LD_PRELOAD`, it sends a program's TCP
//! connections, UDP datagrams and host-name look-ups through a SOCKS server.
//!
//! Where a `connect` goes, in a minute: `hooks/connect.rs` decodes the C
//! arguments, [`connect::connect`] decides (the client core's
//! `route::goes_direct`, through [`route`]) and [`tcp`] runs the handshake
//! on the program's own fd. The pure parts (wire codec, handshake,
//! configuration) live in `socksify-proto`, the decisions shared with the
//! seccomp supervisor in `socksify-client`. docs/architecture.md has the
//! layers and follows three calls through them.
//!
//! Promises kept everywhere in this crate: loading starts no thread and does
//! no I/O (the one constructor, [`at_load`], copies the environment and
//! reads the program's notes from memory); the configuration is parsed on
//! first use ([`runtime`]); a panic never unwinds into the host program and
//! never turns into a direct connection ([`ffi::catch`]); our own calls never
//! re-enter our hooks ([`guard`]).

// Under `cargo test` the hooks are not exported (see hooks/), so they look unused.
#![cfg_attr(test, allow(dead_code))]
// Unsafe code: see [workspace.lints] in Cargo.toml (every `unsafe` block,
// also inside an `unsafe fn`, has a `// SAFETY:` line saying why it is sound).

mod at_load;
mod bind;
mod connect;
mod connecting;
mod dns_responder;
mod epoll_watch;
mod fake_dns;
mod family_swap;
mod fd_table;
mod ffi;
mod fork_safe;
mod guard;
mod hooks;
mod hosts;
mod launch;
mod log_once;
mod names;
mod own_fd;
mod real;
mod route;
mod runtime;
mod socket_addr;
mod sockets;
mod stderr_log;
mod tcp;
mod udp;
mod uncarried;
mod user_mem;
