//! `syscall(2)`, the libc function, for the numbers our hooks own.
//!
//! Declared with six register-sized arguments rather than as variadic: on
//! x86_64 and aarch64 a variadic caller passes them in the same registers.

use super::close::close;
use super::connect::connect;
use super::connecting_io::{sendfile64, splice};
use super::exec::{execve, execveat};
use super::socket::{setsockopt, socket};
use super::udp::{read, readv, recvfrom, recvmmsg, recvmsg, sendmmsg, sendmsg, sendto, write, writev};
use crate::fd_table::{self, kind};
use crate::real;
use libc::{c_int, c_uint, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t};

/// `syscall(2)`, the libc function: libuv (and so `dig`) sends and
/// receives UDP with `syscall(SYS_sendmmsg, ...)`/`syscall(SYS_recvmmsg,
/// ...)`. Those numbers, the other UDP calls, `connect`, `socket`,
/// `setsockopt` and `execve`/`execveat` (the child keeps the shim) go to
/// our hooks, and so do `close`, `write`, `read`, `writev`, `readv`,
/// `sendfile` and `splice` on an fd of ours (a connect under way must not
/// have bytes written past it), and io_uring's three are refused
/// (`crate::uncarried::io_uring`: a ring's operations pass no hook);
/// every other number is one comparison, then libc's own. (Raw `syscall`
/// instructions cannot be seen from here.)
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn syscall(
    n: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
    a6: libc::c_long,
) -> libc::c_long {
    use libc::c_long;
    let fd = a1 as c_int;
    // SAFETY: each number's arguments are that call's, given as the program gave them to the hook of the same call (or, for any other number, to the real syscall).
    unsafe {
        match n {
            libc::SYS_connect => connect(fd, a2 as *const sockaddr, a3 as socklen_t) as c_long,
            libc::SYS_sendmmsg => sendmmsg(fd, a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int) as c_long,
            libc::SYS_recvmmsg => recvmmsg(fd, a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int, a5 as *mut libc::timespec) as c_long,
            libc::SYS_sendmsg => sendmsg(fd, a2 as *const msghdr, a3 as c_int) as c_long,
            libc::SYS_recvmsg => recvmsg(fd, a2 as *mut msghdr, a3 as c_int) as c_long,
            libc::SYS_sendto => {
                sendto(fd, a2 as *const c_void, a3 as size_t, a4 as c_int, a5 as *const sockaddr, a6 as socklen_t) as c_long
            }
            libc::SYS_recvfrom => {
                recvfrom(fd, a2 as *mut c_void, a3 as size_t, a4 as c_int, a5 as *mut sockaddr, a6 as *mut socklen_t) as c_long
            }
            libc::SYS_execve => execve(a1 as *const libc::c_char, a2 as real::Argv, a3 as real::Argv) as c_long,
            libc::SYS_execveat => execveat(fd, a2 as *const libc::c_char, a3 as real::Argv, a4 as real::Argv, a5 as c_int) as c_long,
            libc::SYS_close if fd_table::kind(fd) != kind::NONE => close(fd) as c_long,
            // Bytes on a socket of ours (a connect under way, a proxied
            // UDP socket) take the hook's path; any other fd: one load.
            libc::SYS_write if fd_table::kind(fd) != kind::NONE => write(fd, a2 as *const c_void, a3 as size_t) as c_long,
            libc::SYS_read if fd_table::kind(fd) != kind::NONE => read(fd, a2 as *mut c_void, a3 as size_t) as c_long,
            libc::SYS_writev if fd_table::kind(fd) != kind::NONE => writev(fd, a2 as *const libc::iovec, a3 as c_int) as c_long,
            libc::SYS_readv if fd_table::kind(fd) != kind::NONE => readv(fd, a2 as *const libc::iovec, a3 as c_int) as c_long,
            libc::SYS_sendfile if fd_table::kind(fd) != kind::NONE => {
                sendfile64(fd, a2 as c_int, a3 as *mut libc::off64_t, a4 as size_t) as c_long
            }
            libc::SYS_splice if fd_table::kind(fd) != kind::NONE || fd_table::kind(a3 as c_int) != kind::NONE => {
                splice(fd, a2 as *mut libc::loff_t, a3 as c_int, a4 as *mut libc::loff_t, a5 as size_t, a6 as c_uint) as c_long
            }
            libc::SYS_socket => socket(a1 as c_int, a2 as c_int, a3 as c_int) as c_long,
            libc::SYS_setsockopt => setsockopt(fd, a2 as c_int, a3 as c_int, a4 as *const c_void, a5 as socklen_t) as c_long,
            libc::SYS_io_uring_setup | libc::SYS_io_uring_enter | libc::SYS_io_uring_register => io_uring(n, a1, a2, a3, a4, a5, a6),
            _ => real::syscall(n, a1, a2, a3, a4, a5, a6),
        }
    }
}

/// `io_uring_setup`, `io_uring_enter`, `io_uring_register`: refused while
/// anything is proxied ([`crate::uncarried::io_uring`]).
#[cold]
#[inline(never)]
unsafe fn io_uring(n: libc::c_long, a1: libc::c_long, a2: libc::c_long, a3: libc::c_long, a4: libc::c_long, a5: libc::c_long, a6: libc::c_long) -> libc::c_long {
    // A signal handler inside the shim: refused, unlogged.
    let Some(_inside) = crate::hooks::enter() else { return crate::ffi::fail(libc::ENOSYS) };
    match crate::ffi::catch(Err(libc::ENOSYS), libc::ENOSYS, crate::uncarried::io_uring) {
        // SAFETY: the program's arguments for this number, passed on unchanged.
        Ok(()) => unsafe { real::syscall(n, a1, a2, a3, a4, a5, a6) },
        Err(errno) => crate::ffi::fail(errno),
    }
}
