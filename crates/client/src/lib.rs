//! The client core that both front ends of socksify share: the
//! `LD_PRELOAD` shim (`libsocksify.so`) and the seccomp supervisor
//! (`socksify-cli supervise`).
//!
//! * [`tcp`]: connecting a TCP socket through the proxy chain, the SOCKS
//!   handshake of `socksify-proto` driven over a raw fd with a deadline.
//! * [`sockaddr`]: C socket addresses to and from `std::net::SocketAddr`.
//! * [`route`]: the routing decision, direct or through the proxy.
//! * [`addrinfo`]: which addresses a `getaddrinfo` answer holds and their
//!   order (the hints, `AI_ADDRCONFIG`, RFC 6724), for names we answer.
//! * [`socket_kind`]: which sockets a proxy can carry (TCP, UDP), and
//!   which carry their destination where no hook sees it.
//! * [`udp`]: the decisions of a UDP association (can this configuration
//!   carry UDP, what the request names, where the relay is).
//! * [`child_env`]: what a child's environment needs for the shim to
//!   follow it across `exec`; [`elf_note`]: telling a Go program by its notes.
//!
//! The three calls that move bytes (`connect`, `send`, `recv`) go through
//! the [`tcp::SocketIo`] trait: the shim must call libc's own functions
//! behind its hooks (`dlsym(RTLD_NEXT)`), the supervisor plain libc.

// Linked into the shim: the same rules for unsafe code ([workspace.lints]).

pub mod addrinfo;
pub mod child_env;
pub mod elf_note;
pub mod family_swap;
pub mod route;
pub mod sockaddr;
pub mod socket_kind;
pub mod tcp;
pub mod udp;
