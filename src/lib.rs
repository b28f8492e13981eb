//! `libsocksify.so`: loaded with `LD_PRELOAD`, it sends a program's TCP
//! connections, UDP datagrams and host-name look-ups through a SOCKS server.
//!
//! Where a `connect` goes, in a minute: [`hooks::connect`] decides whether
//! the destination is ours, [`tcp`] runs the handshake on the program's own
//! fd. The pure parts (wire codec, handshake, configuration) live in the
//! `socksify-proto` crate.
//!
//! Promises kept everywhere in this crate: loading starts no thread and does
//! no I/O; configuration is read on first use ([`runtime`]); a panic never
//! unwinds into the host program and never turns into a direct connection
//! ([`ffi::catch`]); our own calls never re-enter our hooks ([`guard`]).

// Under `cargo test` the hooks are not exported (see hooks/), so they look unused.
#![cfg_attr(test, allow(dead_code))]
// Each unsafe operation in its own `unsafe` block, and each block with a
// `// SAFETY:` line saying why it is sound.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

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
