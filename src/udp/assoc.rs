//! Opening an association (UDP ASSOCIATE over a control connection of our
//! own), checking that it is still up, and recording a socket that talks
//! to the shim's DNS responder instead.

use crate::udp::table::{self, coarse_ms, inode, Assoc, Table, View};
use crate::udp::{err, filter, AssocError};
use crate::{fd_table, real, runtime, socket_addr, tcp};
use libc::{c_int, sockaddr, AF_INET6};
use socksify_proto::config::Config;
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::canonical_ip;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// How often a send checks that the association's control connection is
/// still up (the server ended it, or a raw syscall closed our fd): a
/// `close` by the program cannot take it (it answers `EBADF`), so this is
/// for rarer ends, and costs one `poll` per socket per interval.
pub const CHECK_EVERY_MS: u64 = 200;

/// Whether the control connection is still up: `poll` says nothing to
/// read (the server never sends on it: readable means closed, and an fd
/// closed behind our back answers `POLLNVAL`).
fn alive(view: &View) -> bool {
    let mut pfd = libc::pollfd { fd: view.ctrl, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, zero timeout.
    match unsafe { real::poll(&mut pfd, 1, 0) } {
        0 => true,
        n if n < 0 => inode(view.ctrl) == Some(view.ctrl_ino), // EINTR and the like
        _ => false,
    }
}

/// The socket's local address, binding it to the wildcard address of its
/// family (port 0) first if it is unbound: the association names it.
pub fn bound_addr(fd: c_int, family: c_int) -> Result<SocketAddr, AssocError> {
    let addr = socket_addr::local_addr(fd).ok_or_else(|| err(libc::EBADF, "reading the socket's address"))?;
    if addr.port() != 0 {
        return Ok(addr);
    }
    let any = if family == AF_INET6 {
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
    } else {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
    };
    let raw = socket_addr::encode(&any, family).ok_or_else(|| err(libc::EAFNOSUPPORT, "binding the socket"))?;
    // SAFETY: raw is a valid sockaddr of the socket's family.
    if unsafe { real::bind(fd, &raw.0 as *const _ as *const sockaddr, raw.1) } != 0 {
        let e = crate::ffi::errno();
        // EINVAL: bound meanwhile by another thread; read it again.
        if e != libc::EINVAL {
            return Err(err(e, format!("binding the socket: {}", std::io::Error::from_raw_os_error(e))));
        }
    }
    socket_addr::local_addr(fd).filter(|a| a.port() != 0).ok_or_else(|| err(libc::EADDRNOTAVAIL, "binding the socket"))
}

/// Opens an association for a UDP socket bound at `local`.
fn open(family: c_int, local: SocketAddr, config: &'static Config) -> Result<Assoc, AssocError> {
    if let Some((errno, why)) = socksify_client::udp::unsupported(config) {
        return Err(err(errno, why));
    }
    let hop = &config.chain[0];
    // SAFETY: plain socket(2); the fd is ours, close-on-exec.
    let ctrl = unsafe { real::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if ctrl < 0 {
        let e = crate::ffi::errno();
        return Err(err(e, format!("creating the control socket: {}", std::io::Error::from_raw_os_error(e))));
    }
    if fd_table::kind(ctrl) != fd_table::kind::NONE {
        // A number the table still knows was closed behind our back: what
        // it says is the old socket's (as for the program's, hooks/socket.rs).
        crate::sockets::forget_closed(ctrl);
    }
    // SAFETY: ctrl is our own fd, closed once on each failure path.
    let close = || unsafe { real::close(ctrl) };
    let proxy_v4 = runtime::proxy_addrs(config, 0).first().is_none_or(|a| canonical_ip(a.ip()).is_ipv4());
    let request = socksify_client::udp::request_for(local, proxy_v4);
    let (proxy, bound) = match tcp::connect_via_proxy(ctrl, family, config, Command::UdpAssociate, &request) {
        Ok(x) => x,
        Err(e) => {
            close();
            return Err(err(e.errno(), format!("UDP ASSOCIATE via {hop}: {e}")));
        }
    };
    let relay = match socksify_client::udp::relay_addr(&bound, proxy) {
        Ok(relay) => relay,
        Err(why) => {
            close();
            return Err(err(libc::ECONNREFUSED, format!("UDP ASSOCIATE via {hop}: {why}")));
        }
    };
    let Some(ctrl_ino) = inode(ctrl) else {
        close();
        return Err(err(libc::EBADF, "control socket vanished"));
    };
    fd_table::set_control(ctrl, true);
    log::info!("udp association for {local} via {hop}: relay {relay}");
    Ok(Assoc { ctrl, ctrl_ino, relay })
}

/// The live association of UDP socket `fd` (of `family`), opening one
/// (or a new one, if the old one died) as needed. Also tracks `fd`.
pub fn ensure(fd: c_int, family: c_int, config: &'static Config) -> Result<View, AssocError> {
    ensure_from(fd, family, config, table::live(fd, CHECK_EVERY_MS))
}

/// [`ensure`], given what the table said (`table::for_send`): the
/// association's view and whether its check is due.
pub fn ensure_from(fd: c_int, family: c_int, config: &'static Config, live: Option<(View, bool)>) -> Result<View, AssocError> {
    if let Some((v, due)) = live {
        if !due || alive(&v) {
            return Ok(v);
        }
        // Died: forget it (closing our fd if it is still ours), open anew.
        let dead = {
            let mut table = table::lock();
            table.as_mut().and_then(|t| t.socks.get_mut(&v.ino)).and_then(|s| {
                let same = s.assoc.is_some_and(|a| a.ctrl == v.ctrl && a.ctrl_ino == v.ctrl_ino);
                if same {
                    s.assoc.take()
                } else {
                    None
                }
            })
        };
        if let Some(a) = dead {
            log::info!("udp association via relay {} ended (control connection closed); opening a new one", a.relay);
            a.close();
        }
    }
    if fd as usize >= fd_table::SLOTS {
        return Err(err(libc::EMFILE, "fd number beyond the shim's table"));
    }
    let ino = inode(fd).ok_or_else(|| err(libc::EBADF, "the socket is not open"))?;
    let local = bound_addr(fd, family)?;
    let fresh = open(family, local, config)?;
    // Install it, unless another thread was faster.
    let (chosen, loser, peer, responder) = {
        let mut table = table::lock();
        let t = table.get_or_insert_with(Table::default);
        let sock = t.track(fd, ino, family);
        let responder = sock.responder;
        match sock.assoc {
            Some(theirs) => (theirs, Some(fresh), sock.peer, responder),
            None => {
                sock.assoc = Some(fresh);
                sock.checked_ms = coarse_ms();
                (fresh, None, sock.peer, responder)
            }
        }
    };
    fd_table::set_udp(fd);
    if let Some(extra) = loser {
        extra.close();
    }
    filter::refresh(fd, config);
    Ok(View { family, relay: chosen.relay, responder, peer, ctrl: chosen.ctrl, ctrl_ino: chosen.ctrl_ino, ino })
}

/// Records that socket `fd` (of `family`) asked `nameserver` and gets its
/// answers from the DNS responder at `source`: tracks the fd, so the
/// receive hooks unwrap them and report `nameserver` as their source.
pub fn track_responder(fd: c_int, family: c_int, source: SocketAddr, nameserver: SocketAddr) -> Result<(), AssocError> {
    if fd as usize >= fd_table::SLOTS {
        return Err(err(libc::EMFILE, "fd number beyond the shim's table"));
    }
    let ino = inode(fd).ok_or_else(|| err(libc::EBADF, "the socket is not open"))?;
    {
        let mut table = table::lock();
        let sock = table.get_or_insert_with(Table::default).track(fd, ino, family);
        sock.responder = Some(source);
    }
    fd_table::set_udp(fd);
    table::note_destination(ino, nameserver, None, None);
    if let Some(config) = runtime::config() {
        filter::refresh(fd, config); // the responder's answers must get in
    }
    Ok(())
}

/// Connects the socket in the kernel to `addr` (the relay, for a socket
/// connected to a proxied destination: only the relay can then reach it).
pub fn connect_kernel(fd: c_int, family: c_int, addr: SocketAddr) -> Result<(), AssocError> {
    let raw = socket_addr::encode(&addr, family)
        .ok_or_else(|| err(libc::ENETUNREACH, format!("relay {addr} not reachable from this socket's family")))?;
    // SAFETY: raw is a valid sockaddr for the socket's family.
    if unsafe { real::connect(fd, &raw.0 as *const _ as *const sockaddr, raw.1) } != 0 {
        let e = crate::ffi::errno();
        return Err(err(e, format!("connecting to the relay {addr}")));
    }
    Ok(())
}

/// Dissolves the kernel's connection of UDP socket `fd` with `dissolve`
/// (a `connect(AF_UNSPEC)`), keeping its local port: on `AF_UNSPEC` the
/// kernel forgets a port it chose itself (one bound as port 0, as
/// [`bound_addr`] does), and the association names that port, so the
/// relay would drop every later datagram. The port is bound again; if it
/// cannot be, the association is dropped and the next datagram opens a
/// new one. Returns what `dissolve` returns.
pub fn disconnect_kernel(fd: c_int, dissolve: &mut dyn FnMut() -> c_int) -> c_int {
    let before = socket_addr::local_addr(fd);
    let rc = dissolve();
    let Some(before) = before.filter(|b| b.port() != 0) else { return rc };
    let Some(after) = socket_addr::local_addr(fd).filter(|a| a.port() == 0) else { return rc };
    let again = SocketAddr::new(after.ip(), before.port());
    let family = socket_addr::family_of(&again);
    let bound = socket_addr::encode(&again, family).is_some_and(|raw| {
        // SAFETY: raw is a valid sockaddr of the socket's family.
        unsafe { real::bind(fd, &raw.0 as *const _ as *const sockaddr, raw.1) == 0 }
    });
    if !bound {
        crate::log_once::log_once(format!("udp fd {fd}: its port {} was lost on AF_UNSPEC; a new association will be opened", before.port()));
        let dead = table::lock().as_mut().and_then(|t| t.fds.get(&fd).copied().and_then(|ino| t.socks.get_mut(&ino))).and_then(|s| s.assoc.take());
        if let Some(a) = dead {
            a.close();
        }
    }
    rc
}
