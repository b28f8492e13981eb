//! Resolver entry points that bypass `getaddrinfo`: glibc's asynchronous
//! `getaddrinfo_a`, and the raw DNS calls `res_query`, `res_search`,
//! `res_querydomain`, `res_send` and their `res_n*` forms (also under
//! their `__res_*` names, which old binaries and `<resolv.h>` bind to).
//! glibc runs these with its own internal socket calls, which our hooks
//! never see, so in remote DNS mode each would send a query straight to
//! the system's nameserver.
//!
//! Who answers them is the engine's (`names::unhooked::answerer`):
//! * `getaddrinfo_a` in remote mode (or with a malformed configuration)
//!   answers every request at once with our own `getaddrinfo` (fake
//!   addresses, freed by our `freeaddrinfo`), then notifies as `sevp` asks
//!   (`names::unhooked::notify`). In local mode glibc's own runs.
//! * The `res_*` calls in remote mode (or with a malformed configuration)
//!   fail: -1, `h_errno` `NO_RECOVERY`, errno `ECONNREFUSED`. A DNS message
//!   has no proxy to go to; it would leave the machine directly. For the
//!   `res_n*` forms only the thread's `h_errno` is set, not
//!   `statp->res_h_errno` (we do not write into glibc's `__res_state`).
//!
//! The real functions are looked up without aborting when missing: on
//! glibc before 2.34 they live in libanl / libresolv, which a program that
//! calls them has loaded; if one is still missing the call fails.

use super::{getaddrinfo_slow, set_h_errno, NO_RECOVERY};
use crate::ffi;
use crate::names::unhooked::{self, Answerer, Notify};
use libc::{addrinfo as AddrInfo, c_char, c_int, c_uchar, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

// <netdb.h> / <signal.h> values the libc crate does not carry.
const GAI_WAIT: c_int = 0;
const GAI_NOWAIT: c_int = 1;
const EAI_SYSTEM: c_int = -11;
const SIGEV_SIGNAL: c_int = 0;
const SIGEV_THREAD: c_int = 2;

/// glibc's `struct gaicb`.
#[repr(C)]
pub struct GaiCb {
    pub ar_name: *const c_char,
    pub ar_service: *const c_char,
    pub ar_request: *const AddrInfo,
    pub ar_result: *mut AddrInfo,
    pub __return: c_int,
    pub __glibc_reserved: [c_int; 5],
}

/// The part of glibc's `struct sigevent` that `getaddrinfo_a` reads
/// (`union sigval` is pointer-sized; the thread fields follow `sigev_notify`).
#[repr(C)]
pub struct SigEvent {
    sigev_value: *mut c_void,
    sigev_signo: c_int,
    sigev_notify: c_int,
    sigev_notify_function: Option<unsafe extern "C" fn(*mut c_void)>,
    sigev_notify_attributes: *mut c_void,
}

/// `dlsym(RTLD_NEXT)` of the first of `names` that exists, cached; null if
/// none does (the caller fails rather than abort the program).
fn next_fn(slot: &AtomicPtr<c_void>, names: &[&'static [u8]]) -> *mut c_void {
    let cached = slot.load(Ordering::Relaxed);
    if !cached.is_null() {
        return cached;
    }
    for name in names {
        // SAFETY: NUL-terminated literal; dlsym is thread-safe.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) };
        if !found.is_null() {
            slot.store(found, Ordering::Relaxed);
            return found;
        }
    }
    std::ptr::null_mut()
}

// ------------------------------------------------------------- getaddrinfo_a

type GaiA = unsafe extern "C" fn(c_int, *mut *mut GaiCb, c_int, *mut SigEvent) -> c_int;

unsafe fn real_getaddrinfo_a(mode: c_int, list: *mut *mut GaiCb, nitems: c_int, sevp: *mut SigEvent) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let ptr = next_fn(&SLOT, &[b"getaddrinfo_a\0"]);
    if ptr.is_null() {
        ffi::set_errno(libc::ENOSYS);
        return EAI_SYSTEM;
    }
    // SAFETY: the symbol getaddrinfo_a has this C signature.
    let f: GaiA = unsafe { std::mem::transmute(ptr) };
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { f(mode, list, nitems, sevp) }
}

/// The requests of `list`, null entries skipped.
unsafe fn requests<'a>(list: *mut *mut GaiCb, nitems: c_int) -> impl Iterator<Item = &'a mut GaiCb> {
    // SAFETY: i < nitems: an entry of the program's list (requests' contract).
    (0..nitems.max(0) as usize).filter_map(move |i| unsafe { (*list.add(i)).as_mut() })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getaddrinfo_a(mode_arg: c_int, list: *mut *mut GaiCb, nitems: c_int, sevp: *mut SigEvent) -> c_int {
    if (mode_arg != GAI_WAIT && mode_arg != GAI_NOWAIT) || nitems < 0 || (list.is_null() && nitems > 0) {
        ffi::set_errno(libc::EINVAL);
        return EAI_SYSTEM;
    }
    let inside = crate::hooks::enter_resolver();
    if ffi::catch(Answerer::Shim, libc::EIO, unhooked::answerer) == Answerer::Glibc {
        drop(inside);
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real_getaddrinfo_a(mode_arg, list, nitems, sevp) };
    }
    // What a panic (or a call from inside the shim) leaves: failed, done.
    // SAFETY: list holds nitems entries (checked: non-null when nitems > 0).
    for req in unsafe { requests(list, nitems) } {
        req.ar_result = std::ptr::null_mut();
        req.__return = libc::EAI_FAIL;
    }
    if inside.is_some() {
        ffi::catch((), libc::EIO, || {
            // SAFETY: list holds nitems entries (checked: non-null when nitems > 0).
            for req in unsafe { requests(list, nitems) } {
                // SAFETY: a request of the program's list, its fields as getaddrinfo_a's contract says.
                req.__return = unsafe { answer(req) };
            }
        });
    }
    // Outside the guard: a signal handler or notify function may look
    // names up itself, and must get our hooks.
    drop(inside);
    // SAFETY: sevp is null or the caller's sigevent; its function may be called with its value.
    unsafe { unhooked::notify(read_notify(mode_arg, sevp)) };
    0
}

/// One request, through the same code as our `getaddrinfo`.
unsafe fn answer(req: &mut GaiCb) -> c_int {
    let mut res: *mut AddrInfo = std::ptr::null_mut();
    let rc = if req.ar_name.is_null() {
        // No name: glibc needs no look-up (the passive or loopback address).
        // SAFETY: a null name; the request's service and hints as the program gave them.
        unsafe { crate::real::getaddrinfo(req.ar_name, req.ar_service, req.ar_request, &mut res) }
    } else {
        // SAFETY: the request's name (a C string), service, hints, and our out-pointer.
        unsafe { getaddrinfo_slow(req.ar_name, req.ar_service, req.ar_request, &mut res) }
    };
    if rc == 0 {
        req.ar_result = res;
    }
    rc
}

/// How the caller asked to be told that every request is done (only
/// `GAI_NOWAIT` with a `sevp` asks).
///
/// # Safety
/// `sevp` is null or the caller's `sigevent`.
unsafe fn read_notify(mode_arg: c_int, sevp: *const SigEvent) -> Notify {
    if mode_arg != GAI_NOWAIT || sevp.is_null() {
        return Notify::Nothing;
    }
    // SAFETY: the caller's sigevent (read_notify's contract).
    let sev = unsafe { &*sevp };
    match (sev.sigev_notify, sev.sigev_notify_function) {
        (SIGEV_SIGNAL, _) => Notify::Signal { signo: sev.sigev_signo, value: sev.sigev_value },
        (SIGEV_THREAD, Some(function)) => Notify::Thread { function, value: sev.sigev_value },
        _ => Notify::Nothing, // SIGEV_NONE, a thread without a function, anything else
    }
}

// ------------------------------------------------------------------ res_*

/// The program's raw DNS query (`what`) fails, with a warning once per process.
fn refuse(what: &str) -> c_int {
    unhooked::warn_refused(what);
    set_h_errno(NO_RECOVERY);
    ffi::set_errno(libc::ECONNREFUSED);
    -1
}

/// Runs a `res_*` hook: `real` in local mode, a refusal otherwise (also
/// inside the guard and after a panic).
fn res_hook(what: &str, real: impl FnOnce() -> c_int) -> c_int {
    let inside = crate::hooks::enter_resolver();
    if ffi::catch(Answerer::Shim, libc::ECONNREFUSED, unhooked::answerer) == Answerer::Glibc {
        drop(inside);
        return real();
    }
    if inside.is_none() {
        return refuse_quietly();
    }
    set_h_errno(NO_RECOVERY); // what a panic leaves
    ffi::catch(-1, libc::ECONNREFUSED, || refuse(what))
}

/// A refusal without logging: from inside the shim, where logging could recurse.
fn refuse_quietly() -> c_int {
    set_h_errno(NO_RECOVERY);
    ffi::fail(libc::ECONNREFUSED)
}

/// Defines each hook under its names (`res_query`, `__res_query`), calling
/// the real function found under either.
macro_rules! res_hooks {
    ($( $name:ident / $alias:ident ($($arg:ident: $ty:ty),*); )*) => {
        $(
            #[cfg_attr(not(test), no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                static SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
                res_hook(stringify!($name), || {
                    let ptr = next_fn(&SLOT, &[concat!(stringify!($name), "\0").as_bytes(), concat!(stringify!($alias), "\0").as_bytes()]);
                    if ptr.is_null() {
                        set_h_errno(NO_RECOVERY);
                        return ffi::fail(libc::ENOSYS);
                    }
                    // SAFETY: the symbol has this C signature.
                    let f: unsafe extern "C" fn($($ty),*) -> c_int = unsafe { std::mem::transmute(ptr) };
                    // SAFETY: the program's arguments, passed on unchanged.
                    unsafe { f($($arg),*) }
                })
            }

            #[cfg_attr(not(test), no_mangle)]
            pub unsafe extern "C" fn $alias($($arg: $ty),*) -> c_int {
                // SAFETY: the same call under its other name.
                unsafe { $name($($arg),*) }
            }
        )*
    };
}

res_hooks! {
    res_query / __res_query(dname: *const c_char, class: c_int, kind: c_int, answer: *mut c_uchar, anslen: c_int);
    res_search / __res_search(dname: *const c_char, class: c_int, kind: c_int, answer: *mut c_uchar, anslen: c_int);
    res_querydomain / __res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, kind: c_int, answer: *mut c_uchar, anslen: c_int);
    res_send / __res_send(msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int);
    res_nquery / __res_nquery(statp: *mut c_void, dname: *const c_char, class: c_int, kind: c_int, answer: *mut c_uchar, anslen: c_int);
    res_nsearch / __res_nsearch(statp: *mut c_void, dname: *const c_char, class: c_int, kind: c_int, answer: *mut c_uchar, anslen: c_int);
    res_nquerydomain / __res_nquerydomain(statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, kind: c_int, answer: *mut c_uchar, anslen: c_int);
    res_nsend / __res_nsend(statp: *mut c_void, msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int);
}
