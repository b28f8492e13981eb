//! The one thing the library does when it is loaded: remember the
//! environment it was started with, and warn if the program is Go.
//!
//! Why at load and not on first use: a program may clear its environment
//! before its first socket call (`env -i prog` does exactly that, then
//! execs), so the configuration it was started with is only certain now.
//! The copy is a few strings of memory: no thread, no lock, no I/O (but the
//! Go warning, and a `realpath` when the library was preloaded by a
//! relative path). The configuration ([`crate::runtime`]) and the exec
//! hooks ([`crate::hooks`]'s `exec.rs`) read it, never the live `environ`.

use libc::{c_char, c_int};
use socksify_client::child_env::Carried;
use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What was found at load; written once, by the constructor, before any
/// other thread of ours can exist, then only read.
struct Found {
    /// `NAME=value` of the variables our configuration reads.
    vars: Vec<Vec<u8>>,
    /// What a child must inherit (`None`: our own path is unknown).
    carried: Option<Carried>,
}

static FOUND: AtomicPtr<Found> = AtomicPtr::new(std::ptr::null_mut());

/// The variables the configuration and the logger read.
fn is_ours(entry: &[u8]) -> bool {
    entry.starts_with(b"SOCKSIFY_") || entry.starts_with(b"all_proxy=") || entry.starts_with(b"ALL_PROXY=")
}

/// Run by the dynamic loader (`.init_array`), with the program's
/// arguments and environment, as it runs every library's constructors.
extern "C" fn at_load(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) {
    // A panic here must not unwind into ld.so: without the copy, the
    // configuration is read from `environ` on first use as before.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the loader passes the environment it gave `main`: a NULL-terminated array of C strings.
        let entries = unsafe { entries(envp) };
        let vars: Vec<Vec<u8>> = entries.iter().filter(|e| is_ours(e)).map(|e| e.to_vec()).collect();
        let carried = library_path().map(|lib| Carried::from_environment(entries.iter().copied(), &lib));
        FOUND.store(Box::into_raw(Box::new(Found { vars, carried })), Ordering::Release);
        if is_go_program() {
            crate::stderr_log::init(var("SOCKSIFY_LOG"));
            log::warn!(
                "this is a Go program: Go's net package makes its own connect system calls, which LD_PRELOAD \
                 cannot see, so its connections will NOT go through the proxy; run it with \
                 'socksify --supervise' (the socksify wrapper does so by itself)"
            );
        }
    }));
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = at_load;

/// The `NAME=value` entries of a C environment array.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings
/// that outlive the returned slices.
pub unsafe fn entries<'a>(envp: *const *const c_char) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if envp.is_null() {
        return out;
    }
    let mut at = envp;
    loop {
        // SAFETY: within the array, up to and including its NULL (the caller's promise).
        let entry = unsafe { *at };
        if entry.is_null() {
            return out;
        }
        // SAFETY: each entry is a NUL-terminated string (the caller's promise).
        out.push(unsafe { CStr::from_ptr(entry) }.to_bytes());
        // SAFETY: the entry was not the terminating NULL, so the next one is in the array.
        at = unsafe { at.add(1) };
    }
}

fn found() -> Option<&'static Found> {
    // SAFETY: set once from a leaked Box, never freed or changed.
    unsafe { FOUND.load(Ordering::Acquire).as_ref() }
}

/// A variable of our configuration as the program was started with it
/// (the live environment if the constructor did not run).
pub fn var(name: &str) -> Option<String> {
    let Some(found) = found() else { return std::env::var(name).ok() };
    found.vars.iter().find_map(|e| {
        let value = e.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(value).ok().map(str::to_owned)
    })
}

/// What a child must inherit for the shim to follow it across `exec`.
pub fn carried() -> Option<&'static Carried> {
    found()?.carried.as_ref()
}

/// This library's path, absolute (as the loader found it, resolved
/// against the current directory if it was relative).
fn library_path() -> Option<Vec<u8>> {
    // SAFETY: zeroed Dl_info is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: the address of one of our functions; dladdr fills info.
    if unsafe { libc::dladdr(at_load as *const libc::c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr's file name is a NUL-terminated string owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    if name.to_bytes().starts_with(b"/") {
        return Some(name.to_bytes().to_vec());
    }
    // SAFETY: a valid C string; realpath allocates its answer with malloc.
    let resolved = unsafe { libc::realpath(name.as_ptr(), std::ptr::null_mut()) };
    if resolved.is_null() {
        return None;
    }
    // SAFETY: realpath's answer is a NUL-terminated string, ours to free.
    let path = unsafe { CStr::from_ptr(resolved) }.to_bytes().to_vec();
    // SAFETY: allocated by realpath with malloc, freed once.
    unsafe { libc::free(resolved.cast()) };
    Some(path)
}

/// Whether the main program carries Go's build-ID note, read from its
/// loaded `PT_NOTE` segments (the kernel's `AT_PHDR`: no file is opened).
fn is_go_program() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    let (phdr, phnum) = unsafe { (libc::getauxval(libc::AT_PHDR), libc::getauxval(libc::AT_PHNUM)) };
    if phdr == 0 || phnum == 0 {
        return false;
    }
    // SAFETY: AT_PHDR points at the program's AT_PHNUM program headers, mapped for its whole life.
    let headers = unsafe { std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum as usize) };
    // The load bias: where the headers are minus where PT_PHDR says they should be.
    let Some(bias) = headers.iter().find(|h| h.p_type == libc::PT_PHDR).map(|h| (phdr as usize).wrapping_sub(h.p_vaddr as usize)) else {
        return false;
    };
    headers.iter().filter(|h| h.p_type == libc::PT_NOTE).any(|h| {
        // SAFETY: a PT_NOTE segment of the running program, mapped readable by the kernel for its whole life.
        let notes = unsafe { std::slice::from_raw_parts(bias.wrapping_add(h.p_vaddr as usize) as *const u8, h.p_filesz as usize) };
        socksify_client::elf_note::has_go_build_id(notes)
    })
}
