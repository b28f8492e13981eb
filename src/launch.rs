//! What an `exec` becomes: as asked, or, for a program `LD_PRELOAD`
//! cannot follow (statically linked, Go, another ELF class or machine),
//! the seccomp supervisor next to our library running it, so a script or
//! a shell under socksify cannot start an unproxied child. Where the
//! supervisor cannot be found (or the program is named only by an open
//! fd), the exec fails with `EACCES` and one line saying why: the child
//! would have gone direct.
//!
//! Reads the program's ELF header, program headers and notes (a few KB,
//! once per exec of a file); the decision is
//! [`socksify_client::elf_note::classify`].

use socksify_client::elf_note::{self, Executable};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;

/// The program an exec names.
pub enum Target<'a> {
    /// A path, as `execve` and `posix_spawn` take it.
    Path(&'a CStr),
    /// A file name looked up in `PATH` unless it has a `/` (`execvp`).
    Search(&'a CStr),
    /// Relative to an fd (`execveat`; `fexecve` is the fd itself, an
    /// empty path with `AT_EMPTY_PATH`).
    At { dirfd: libc::c_int, path: &'a CStr, flags: libc::c_int },
}

pub enum Launch {
    AsAsked,
    /// Run `cli supervise -- program` instead.
    Supervise { cli: CString, program: CString },
    /// Fail the exec with this errno (already logged).
    Refuse(i32),
}

/// The `e_machine` of the programs our library can be loaded into.
#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const MACHINE: u16 = 183;

/// Decides what the exec of `target` becomes; `library` is our path.
pub fn plan(target: Target<'_>, library: &[u8]) -> Launch {
    let (kind, program) = match target {
        Target::Path(path) => (classify_path(path), path.to_owned()),
        Target::Search(file) => match search(file) {
            Some(path) => (classify_path(&path), path),
            None => return Launch::AsAsked, // the exec fails by itself
        },
        Target::At { dirfd, path, flags } => {
            if dirfd == libc::AT_FDCWD && !path.is_empty() {
                (classify_path(path), path.to_owned())
            } else {
                let kind = classify_at(dirfd, path, flags);
                if kind.needs_supervisor() {
                    log::error!(
                        "refusing to start a program named by an fd: it is {}, LD_PRELOAD cannot follow it, and \
                         the supervisor needs its path; its traffic would not go through the proxy",
                        describe(kind)
                    );
                    return Launch::Refuse(libc::EACCES);
                }
                return Launch::AsAsked;
            }
        }
    };
    if !kind.needs_supervisor() {
        return Launch::AsAsked;
    }
    let shown = program.to_string_lossy();
    let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(library)).parent().unwrap_or(std::path::Path::new("/"));
    let cli = dir.join("socksify-cli");
    let Ok(cli_c) = CString::new(cli.as_os_str().as_bytes()) else { return Launch::Refuse(libc::EACCES) };
    // SAFETY: a valid C string.
    if unsafe { libc::access(cli_c.as_ptr(), libc::X_OK) } != 0 {
        log::error!(
            "refusing to start {shown}: it is {}, LD_PRELOAD cannot follow it, and the supervisor ({}) is missing; \
             its traffic would not go through the proxy",
            describe(kind),
            cli.display()
        );
        return Launch::Refuse(libc::EACCES);
    }
    log::info!("exec {shown}: it is {}, LD_PRELOAD cannot follow it: running it under the seccomp supervisor", describe(kind));
    Launch::Supervise { cli: cli_c, program }
}

fn describe(kind: Executable) -> &'static str {
    match kind {
        Executable::Static => "statically linked",
        Executable::Go => "a Go program (its net package makes its own system calls)",
        Executable::Foreign => "built for another ELF class or machine",
        Executable::Preloadable | Executable::Other => "preloadable",
    }
}

/// `execvp`'s search: the first executable regular file named `file` in
/// `PATH` (glibc's default when unset), or `file` itself if it has a `/`.
fn search(file: &CStr) -> Option<CString> {
    let name = file.to_bytes();
    if name.is_empty() || name.contains(&b'/') {
        return Some(file.to_owned());
    }
    // SAFETY: getenv reads the environment; the string is copied before any change to it.
    let path = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let path: Vec<u8> = if path.is_null() {
        b"/bin:/usr/bin".to_vec()
    } else {
        // SAFETY: getenv's answer is a C string.
        unsafe { CStr::from_ptr(path) }.to_bytes().to_vec()
    };
    path.split(|&b| b == b':').find_map(|dir| {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let candidate = CString::new([dir, b"/", name].concat()).ok()?;
        // SAFETY: a valid C string and a stat buffer of ours.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let ok = unsafe { libc::access(candidate.as_ptr(), libc::X_OK) == 0 && libc::stat(candidate.as_ptr(), &mut st) == 0 };
        (ok && st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(candidate)
    })
}

fn classify_path(path: &CStr) -> Executable {
    classify_at(libc::AT_FDCWD, path, 0)
}

/// Opens the program (or uses the fd itself for `AT_EMPTY_PATH`) and
/// classifies it; anything unreadable is [`Executable::Other`].
fn classify_at(dirfd: libc::c_int, path: &CStr, flags: libc::c_int) -> Executable {
    let (fd, owned) = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        (dirfd, false)
    } else {
        // SAFETY: a valid C string; the fd is closed below.
        (unsafe { libc::openat(dirfd, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }, true)
    };
    if fd < 0 {
        return Executable::Other;
    }
    let read_at = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        // SAFETY: reading into our own buffer of len bytes.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, offset as libc::off_t) };
        (n >= 0).then(|| {
            buf.truncate(n as usize);
            buf
        })
    };
    let kind = match read_at(0, 4096) {
        Some(head) => elf_note::classify(&head, MACHINE, read_at),
        None => Executable::Other,
    };
    if owned {
        // SAFETY: the fd we opened above; the real close, not our hook.
        unsafe { crate::real::close(fd) };
    }
    kind
}
