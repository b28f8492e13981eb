//! The real libc functions behind our hooks, found with `dlsym(RTLD_NEXT)`
//! on first use and cached in an atomic, so the fast path of a hook costs
//! one relaxed load and an indirect call.

use libc::{c_char, c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};
use std::sync::atomic::{AtomicPtr, Ordering};

/// A C array of strings ending in NULL: `argv`, `envp`.
pub type Argv = *const *const c_char;

// `fcntl`, `fcntl64` and `syscall` are variadic in C; we declare (and
// export, in hooks/) them with fixed integer arguments. That is the same
// call on x86_64 and aarch64 (every argument in the same integer register
// either way); elsewhere a variadic argument may travel differently (on
// the stack, or in other registers), so we refuse to build there.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("socksify declares the variadic fcntl/syscall with fixed arguments: check this architecture's variadic calling convention first (src/real.rs)");

/// Looks `name` (NUL-terminated) up in the libraries loaded after us and
/// caches it in `slot`: the first call of each real function, out of the
/// hooks' way.
#[cold]
#[inline(never)]
// The abort message goes through libc::syscall, which is our own hook: it
// passes SYS_write on to the real syscall (and if `syscall` itself is what
// is missing, the recursion ends the process just as abort would).
#[allow(clippy::disallowed_methods)]
pub fn resolve_first(slot: &AtomicPtr<c_void>, name: &'static [u8]) -> *mut c_void {
    // SAFETY: name is a NUL-terminated literal; dlsym is thread-safe.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) };
    if found.is_null() {
        // Only possible with a libc that lacks a POSIX function: there is
        // nothing sane to call, and returning would hide traffic from us.
        let msg = b"socksify: a libc function is missing; aborting\n";
        // SAFETY: plain write(2) of a static buffer to stderr.
        unsafe {
            libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len());
            libc::abort();
        }
    }
    slot.store(found, Ordering::Relaxed);
    found
}

/// `real_fns! { fn connect(fd: c_int, ...) -> c_int; }` defines
/// `real::connect(...)`, which calls the next definition of the symbol.
#[macro_export]
macro_rules! real_fns {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty; )*) => {
        $(
            #[allow(clippy::missing_safety_doc)]
            #[inline(always)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static SLOT: std::sync::atomic::AtomicPtr<libc::c_void> =
                    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
                // Both branches end in a tail call, so a hook's fast path
                // needs no stack frame: load, test, jump.
                #[cold]
                #[inline(never)]
                unsafe extern "C" fn first_call($($arg: $ty),*) -> $ret {
                    let ptr = $crate::real::resolve_first(&SLOT, concat!(stringify!($name), "\0").as_bytes());
                    // SAFETY: the symbol named like this function has this C signature.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(ptr) };
                    // SAFETY: the caller's arguments, passed on unchanged (the caller has this function's contract, which is the C function's).
                    unsafe { f($($arg),*) }
                }
                let ptr = SLOT.load(std::sync::atomic::Ordering::Relaxed);
                if ptr.is_null() {
                    // SAFETY: the caller's arguments, passed on unchanged.
                    return unsafe { first_call($($arg),*) };
                }
                // SAFETY: as above.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(ptr) };
                // SAFETY: the caller's arguments, passed on unchanged (as above).
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real_fns! {
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn fclose(stream: *mut libc::FILE) -> c_int;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> c_int;
    // BIND (hooks/listen.rs)
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int;
    // Waiting on fds (hooks/wait.rs): a socket whose non-blocking connect is under way
    fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int;
    fn ppoll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    fn __poll_chk(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fn __ppoll_chk(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, sigmask: *const libc::sigset_t, fdslen: size_t) -> c_int;
    fn select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *mut libc::timeval) -> c_int;
    fn pselect(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int;
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const libc::addrinfo, res: *mut *mut libc::addrinfo) -> c_int;
    fn freeaddrinfo(res: *mut libc::addrinfo) -> ();
    // UDP (hooks/udp.rs) and fd bookkeeping (hooks/dup.rs)
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t;
    fn sendmmsg(fd: c_int, msgs: *mut libc::mmsghdr, vlen: libc::c_uint, flags: c_int) -> c_int;
    fn recvmmsg(fd: c_int, msgs: *mut libc::mmsghdr, vlen: libc::c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int;
    fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t;
    fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t;
    fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t;
    fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t;
    // Data calls that matter only on a connecting socket (hooks/connecting_io.rs)
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut libc::off_t, count: size_t) -> ssize_t;
    fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut libc::off64_t, count: size_t) -> ssize_t;
    fn splice(fd_in: c_int, off_in: *mut libc::loff_t, fd_out: c_int, off_out: *mut libc::loff_t, len: size_t, flags: libc::c_uint) -> ssize_t;
    fn pwritev2(fd: c_int, iov: *const libc::iovec, n: c_int, offset: libc::off_t, flags: c_int) -> ssize_t;
    fn pwritev64v2(fd: c_int, iov: *const libc::iovec, n: c_int, offset: libc::off64_t, flags: c_int) -> ssize_t;
    fn preadv2(fd: c_int, iov: *const libc::iovec, n: c_int, offset: libc::off_t, flags: c_int) -> ssize_t;
    fn preadv64v2(fd: c_int, iov: *const libc::iovec, n: c_int, offset: libc::off64_t, flags: c_int) -> ssize_t;
    fn dup(fd: c_int) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    // Variadic in C; every fcntl argument is passed in one integer register.
    fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    fn fcntl64(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int;
    fn closefrom(first: c_int) -> ();
    // exec (hooks/exec.rs)
    fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int;
    fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int;
    fn execveat(dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int) -> c_int;
    fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int;
    fn posix_spawn(pid: *mut libc::pid_t, path: *const c_char, actions: *const libc::posix_spawn_file_actions_t,
                   attr: *const libc::posix_spawnattr_t, argv: Argv, envp: Argv) -> c_int;
    fn posix_spawnp(pid: *mut libc::pid_t, file: *const c_char, actions: *const libc::posix_spawn_file_actions_t,
                    attr: *const libc::posix_spawnattr_t, argv: Argv, envp: Argv) -> c_int;
    // Variadic in C; up to six integer-register arguments, passed on as they came.
    fn syscall(n: libc::c_long, a1: libc::c_long, a2: libc::c_long, a3: libc::c_long, a4: libc::c_long, a5: libc::c_long, a6: libc::c_long) -> libc::c_long;
}
