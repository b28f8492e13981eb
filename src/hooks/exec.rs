//! The `exec` family and `posix_spawn`: a child started with an
//! environment that lost `LD_PRELOAD` or our configuration (`env -i`,
//! python's `env={}`) gets them back ([`socksify_client::child_env`]), so
//! everything a program starts stays proxied. An inherited environment
//! (the usual case) is passed on as it is: nothing is built. A program
//! `LD_PRELOAD` cannot follow (static, Go) is started under the seccomp
//! supervisor instead, or refused ([`crate::launch`]).
//!
//! `execl`, `execlp` and `execle` are variadic, which stable Rust cannot
//! define: `exec_variadic.c` collects their arguments and calls our
//! `execv`, `execvp`, `execve`; the exported symbols here only jump there.

use crate::at_load::{carried, entries};
use crate::launch::{self, Launch, Target};
use crate::{ffi, real};
use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};
use std::ffi::{CStr, CString};

use real::Argv;

extern "C" {
    static environ: Argv;
}

/// The process's current environment (what `execv`/`execvp` pass on).
fn current_environ() -> Argv {
    // SAFETY: reading libc's `environ` pointer; the program owns what it points to.
    unsafe { std::ptr::addr_of!(environ).read() }
}

/// Starts `target`: with `envp`, or a copy of it that has what it lacks
/// (`as_asked`); or, for a program `LD_PRELOAD` cannot follow, the
/// supervisor running it (`supervised(cli, argv, envp)`, [`launch::plan`]);
/// or not at all (`refuse(errno)`). On a panic: `refuse(ENOMEM)`, without
/// starting the child: it would run unproxied.
///
/// # Safety
/// `argv` and `envp` are null or NULL-terminated arrays of C strings.
unsafe fn start<R>(
    target: Target<'_>,
    argv: Argv,
    envp: Argv,
    refuse: impl Fn(i32) -> R,
    as_asked: impl FnOnce(Argv) -> R,
    supervised: impl FnOnce(*const c_char, Argv, Argv) -> R,
) -> R {
    let Some(carried) = carried() else { return as_asked(envp) };
    let caught = ffi::catch(None, libc::ENOMEM, || {
        // SAFETY: the caller's promise.
        let child = unsafe { entries(envp) };
        let logging = !crate::fork_safe::is_vfork_child() && crate::runtime::config().is_some();
        match launch::plan(target, carried.library()) {
            Launch::AsAsked => {}
            Launch::Refuse(errno) => return Some(refuse(errno)),
            Launch::Supervise { cli, program } => {
                // SAFETY: the caller's promise.
                let args = unsafe { entries(argv) };
                let argv0 = args.first().copied().unwrap_or(program.to_bytes());
                let mut words: Vec<&[u8]> = vec![cli.to_bytes(), b"supervise", b"--argv0", argv0, b"--", program.to_bytes()];
                words.extend(args.iter().skip(1));
                let words = c_strings(words.iter().map(|w| w.to_vec()));
                let env = c_strings(carried.for_supervisor(&child));
                return Some(supervised(cli.as_ptr(), pointers(&words).as_ptr(), pointers(&env).as_ptr()));
            }
        }
        let Some(additions) = carried.additions(&child) else { return Some(as_asked(envp)) };
        if logging {
            log::info!("exec: the child's environment lacked {}: given back", additions.names().join(", "));
        }
        // Owned strings for what changes; the child's own entries keep their pointers.
        let replaced = additions.replace.map(|(i, e)| (i, c_string(e)));
        let added = c_strings(additions.add);
        let mut list: Vec<*const c_char> = Vec::with_capacity(child.len() + added.len() + 1);
        for (i, entry) in child.iter().enumerate() {
            match &replaced {
                Some((at, new)) if *at == i => list.push(new.as_ptr()),
                _ => list.push(entry.as_ptr().cast()),
            }
        }
        list.extend(added.iter().map(|e| e.as_ptr()));
        list.push(std::ptr::null());
        Some(as_asked(list.as_ptr()))
    });
    match caught {
        Some(r) => r,
        None => refuse(libc::ENOMEM),
    }
}

fn c_string(bytes: Vec<u8>) -> CString {
    // An environment entry or argument cannot hold a NUL: cut there, as C would read it.
    CString::new(bytes).unwrap_or_else(|e| {
        let at = e.nul_position();
        let mut bytes = e.into_vec();
        bytes.truncate(at);
        CString::new(bytes).unwrap_or_default()
    })
}

fn c_strings(list: impl IntoIterator<Item = Vec<u8>>) -> Vec<CString> {
    list.into_iter().map(c_string).collect()
}

/// A NULL-terminated array pointing into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// -1 with errno: what a failed exec returns.
fn exec_refused(errno: i32) -> c_int {
    ffi::fail(errno)
}

/// `program` as a C string the hook was given.
///
/// # Safety
/// `path` is a valid C string.
unsafe fn c_str<'a>(path: *const c_char) -> &'a CStr {
    if path.is_null() {
        return c"";
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(path) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: the program's arguments, as execve(2) takes them.
    unsafe {
        let target = Target::Path(c_str(path));
        start(target, argv, envp, exec_refused, |e| real::execve(path, argv, e), |cli, a, e| real::execve(cli, a, e))
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Argv) -> c_int {
    // SAFETY: as execve, with the process's environment (what execv passes).
    unsafe {
        let target = Target::Path(c_str(path));
        start(target, argv, current_environ(), exec_refused, |e| real::execve(path, argv, e), |cli, a, e| real::execve(cli, a, e))
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Argv) -> c_int {
    // SAFETY: as execvpe, with the process's environment (what execvp passes).
    unsafe {
        let target = Target::Search(c_str(file));
        start(target, argv, current_environ(), exec_refused, |e| real::execvpe(file, argv, e), |cli, a, e| real::execve(cli, a, e))
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: the program's arguments, as execvpe(3) takes them.
    unsafe {
        let target = Target::Search(c_str(file));
        start(target, argv, envp, exec_refused, |e| real::execvpe(file, argv, e), |cli, a, e| real::execve(cli, a, e))
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execveat(dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int) -> c_int {
    // SAFETY: the program's arguments, as execveat(2) takes them.
    unsafe {
        let target = Target::At { dirfd, path: c_str(path), flags };
        start(target, argv, envp, exec_refused, |e| real::execveat(dirfd, path, argv, e, flags), |cli, a, e| real::execve(cli, a, e))
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: the program's arguments, as fexecve(3) takes them.
    unsafe {
        let target = Target::At { dirfd: fd, path: c"", flags: libc::AT_EMPTY_PATH };
        start(target, argv, envp, exec_refused, |e| real::fexecve(fd, argv, e), |cli, a, e| real::execve(cli, a, e))
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: Argv,
    envp: Argv,
) -> c_int {
    // SAFETY: the program's arguments, as posix_spawn(3) takes them.
    unsafe { spawn(Target::Path(c_str(path)), pid, actions, attr, argv, envp, |e| real::posix_spawn(pid, path, actions, attr, argv, e)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: Argv,
    envp: Argv,
) -> c_int {
    // SAFETY: the program's arguments, as posix_spawnp(3) takes them.
    unsafe { spawn(Target::Search(c_str(file)), pid, actions, attr, argv, envp, |e| real::posix_spawnp(pid, file, actions, attr, argv, e)) }
}

/// [`start`] for `posix_spawn` and `posix_spawnp`, which answer an error
/// number, not -1 and errno; the supervisor is spawned with the program's
/// file actions and attributes.
///
/// # Safety
/// The program's `posix_spawn` arguments.
unsafe fn spawn(
    target: Target<'_>,
    pid: *mut pid_t,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: Argv,
    envp: Argv,
    as_asked: impl FnOnce(Argv) -> c_int,
) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    unsafe { start(target, argv, envp, |errno| errno, as_asked, |cli, a, e| real::posix_spawn(pid, cli, actions, attr, a, e)) }
}

// The variadic three: the exported name jumps, registers and stack
// untouched, to the C function of the same meaning (exec_variadic.c),
// which gathers the arguments and calls our execv, execvp or execve.
// (C code alone cannot export them: a cdylib exports only Rust's symbols.)
macro_rules! variadic_trampoline {
    ($($name:ident => $target:ident),*) => {$(
        extern "C" {
            fn $target();
        }
        #[cfg_attr(not(test), no_mangle)]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            std::arch::naked_asm!("jmp {}", sym $target);
            #[cfg(target_arch = "aarch64")]
            std::arch::naked_asm!("b {}", sym $target);
        }
    )*};
}

variadic_trampoline!(execl => socksify_execl, execlp => socksify_execlp, execle => socksify_execle);
