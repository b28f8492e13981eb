//! The one thing the library does when it is loaded: remember the
//! environment it was started with, and warn if the program is Go.
//!
//! Why at load and not on first use: a program may clear its environment
//! before its first socket call (`env -i prog` does exactly that, then
//! execs), so the configuration it was started with is only certain now.
//! The copy is a few strings into a static buffer: no allocation, no
//! thread, no lock, no I/O (but the Go warning). What a child inherits
//! (and our own path, `dladdr`) is worked out on the first exec. The configuration ([`crate::runtime`]) and the exec
//! hooks ([`crate::hooks`]'s `exec.rs`) read it, never the live `environ`.

use crate::fork_safe::ForkSafeOnce;
use libc::{c_char, c_int};
use socksify_client::child_env::Carried;
use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Room for the copy: our variables' `NAME=value` bytes, and how many.
const SNAPSHOT_BYTES: usize = 16 * 1024;
const SNAPSHOT_ENTRIES: usize = 64;

/// The copy, in a static buffer: the constructor allocates nothing (a
/// first `malloc` and the code it pulls in cost a `/bin/true` under the
/// shim measurable time and memory). Written once, by the constructor,
/// before any other thread of ours can exist ([`TAKEN`] then says so),
/// then only read.
struct Snapshot {
    bytes: [u8; SNAPSHOT_BYTES],
    /// Where each entry ends in `bytes`.
    ends: [u16; SNAPSHOT_ENTRIES],
    count: usize,
}

struct SnapshotCell(UnsafeCell<Snapshot>);

// SAFETY: written only by the constructor, before TAKEN is set with
// Release; read only after TAKEN is seen with Acquire, never written again.
unsafe impl Sync for SnapshotCell {}

static SNAPSHOT: SnapshotCell = SnapshotCell(UnsafeCell::new(Snapshot { bytes: [0; SNAPSHOT_BYTES], ends: [0; SNAPSHOT_ENTRIES], count: 0 }));
/// The copy is complete and may be read (an environment too big for it
/// leaves it unset: the live environment is read instead, as before).
static TAKEN: AtomicBool = AtomicBool::new(false);

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
        // SAFETY: the loader passes the environment it gave `main`; no
        // thread of ours exists yet, so nothing else touches the copy.
        if unsafe { copy_ours(envp, &mut *SNAPSHOT.0.get()) } {
            TAKEN.store(true, Ordering::Release);
        }
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

/// Copies our variables of `envp` into `snap`; false if they do not fit.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings.
unsafe fn copy_ours(envp: *const *const c_char, snap: &mut Snapshot) -> bool {
    let mut used = 0;
    let mut at = envp;
    while !at.is_null() {
        // SAFETY: within the array, up to and including its NULL (the caller's promise).
        let entry = unsafe { *at };
        if entry.is_null() {
            return true;
        }
        // SAFETY: each entry is a NUL-terminated string (the caller's promise).
        let entry = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if is_ours(entry) {
            let end = used + entry.len();
            if end > SNAPSHOT_BYTES || snap.count == SNAPSHOT_ENTRIES {
                return false;
            }
            snap.bytes[used..end].copy_from_slice(entry);
            snap.ends[snap.count] = end as u16;
            snap.count += 1;
            used = end;
        }
        // SAFETY: the entry was not the terminating NULL, so the next one is in the array.
        at = unsafe { at.add(1) };
    }
    false
}

/// The copied `NAME=value` entries, if the copy was taken.
fn snapshot() -> Option<Vec<&'static [u8]>> {
    if !TAKEN.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: TAKEN: the constructor wrote it and nothing writes it again.
    let snap: &'static Snapshot = unsafe { &*SNAPSHOT.0.get() };
    let mut start = 0;
    Some(
        snap.ends[..snap.count]
            .iter()
            .map(|&end| {
                let entry = &snap.bytes[start..end as usize];
                start = end as usize;
                entry
            })
            .collect(),
    )
}

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

/// A variable of our configuration as the program was started with it
/// (the live environment if the copy could not be taken).
pub fn var(name: &str) -> Option<String> {
    let Some(entries) = snapshot() else { return std::env::var(name).ok() };
    entries.iter().find_map(|e| {
        let value = e.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(value).ok().map(str::to_owned)
    })
}

/// What a child must inherit for the shim to follow it across `exec`
/// (`None`: our own path or the environment at load is unknown). Built
/// on the first exec, from the copy.
pub fn carried() -> Option<&'static Carried> {
    static CARRIED: ForkSafeOnce<Option<Carried>> = ForkSafeOnce::new();
    CARRIED.get_or_init(|| Some(Carried::from_environment(snapshot()?, &library_path()?))).as_ref()
}

/// This library's path, absolute (as the loader found it; one preloaded
/// by a relative path is resolved against the current directory of the
/// first exec: the wrapper always gives an absolute one).
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
