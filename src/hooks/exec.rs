//! The `exec` family and `posix_spawn`: a child started with an
//! environment that lost `LD_PRELOAD` or our configuration (`env -i`,
//! python's `env={}`) gets them back ([`socksify_client::child_env`]), so
//! everything a program starts stays proxied. An inherited environment
//! (the usual case) is passed on as it is: nothing is built.
//!
//! `execl`, `execlp` and `execle` are variadic, which stable Rust cannot
//! define: `exec_variadic.c` collects their arguments and calls our
//! `execv`, `execvp`, `execve`; the exported symbols here only jump there.

use crate::at_load::{carried, entries};
use crate::{ffi, real};
use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};
use std::ffi::CString;

use real::Argv;

extern "C" {
    static environ: Argv;
}

/// The process's current environment (what `execv`/`execvp` pass on).
fn current_environ() -> Argv {
    // SAFETY: reading libc's `environ` pointer; the program owns what it points to.
    unsafe { std::ptr::addr_of!(environ).read() }
}

/// Runs `exec` with `envp`, or with a copy of it that has what it lacks.
/// On a panic (no environment could be built): `on_panic`, without
/// starting the child: it would run unproxied.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of C strings.
unsafe fn with_child_env<R: Copy>(envp: Argv, on_panic: R, exec: impl FnOnce(Argv) -> R) -> R {
    let Some(carried) = carried() else { return exec(envp) };
    ffi::catch(on_panic, libc::ENOMEM, || {
        // SAFETY: the caller's promise.
        let child = unsafe { entries(envp) };
        let Some(additions) = carried.additions(&child) else { return exec(envp) };
        if !crate::fork_safe::is_vfork_child() && crate::runtime::config().is_some() {
            log::info!("exec: the child's environment lacked {}: given back", additions.names().join(", "));
        }
        // Owned strings for what changes; the child's own entries keep their pointers.
        let owned = |e: &Vec<u8>| CString::new(e.clone()).unwrap_or_default();
        let replaced = additions.replace.as_ref().map(|(i, e)| (*i, owned(e)));
        let added: Vec<CString> = additions.add.iter().map(owned).collect();
        let mut list: Vec<*const c_char> = Vec::with_capacity(child.len() + added.len() + 1);
        for (i, entry) in child.iter().enumerate() {
            match &replaced {
                Some((at, new)) if *at == i => list.push(new.as_ptr()),
                _ => list.push(entry.as_ptr().cast()),
            }
        }
        list.extend(added.iter().map(|e| e.as_ptr()));
        list.push(std::ptr::null());
        exec(list.as_ptr())
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: the program's arguments, as execve(2) takes them.
    unsafe { with_child_env(envp, -1, |e| real::execve(path, argv, e)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Argv) -> c_int {
    // SAFETY: as execve, with the process's environment (what execv passes).
    unsafe { with_child_env(current_environ(), -1, |e| real::execve(path, argv, e)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Argv) -> c_int {
    // SAFETY: as execvpe, with the process's environment (what execvp passes).
    unsafe { with_child_env(current_environ(), -1, |e| real::execvpe(file, argv, e)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: the program's arguments, as execvpe(3) takes them.
    unsafe { with_child_env(envp, -1, |e| real::execvpe(file, argv, e)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execveat(dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int) -> c_int {
    // SAFETY: the program's arguments, as execveat(2) takes them.
    unsafe { with_child_env(envp, -1, |e| real::execveat(dirfd, path, argv, e, flags)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: the program's arguments, as fexecve(3) takes them.
    unsafe { with_child_env(envp, -1, |e| real::fexecve(fd, argv, e)) }
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
    // posix_spawn answers an error number, not -1 and errno.
    // SAFETY: the program's arguments, as posix_spawn(3) takes them.
    unsafe { with_child_env(envp, libc::ENOMEM, |e| real::posix_spawn(pid, path, actions, attr, argv, e)) }
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
    unsafe { with_child_env(envp, libc::ENOMEM, |e| real::posix_spawnp(pid, file, actions, attr, argv, e)) }
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
