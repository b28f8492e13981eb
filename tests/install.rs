//! Installing socksify like the tools it replaces:
//!
//! * `scripts/install --prefix DIR` puts a stripped library (debug info in a
//!   `.debug` file beside it), the wrapper, the server, `socksify-cli` and
//!   the man pages under DIR; the installed wrapper finds its library with
//!   no variable and really proxies; `--uninstall` leaves DIR as it was.
//! * `scripts/package` builds the .deb; it is installed with apt-get (CI
//!   runs as root), `socksify curl` and `socksify --check` work from
//!   /usr/bin, `man -w socksify` finds the page, and a purge leaves none of
//!   the package's files behind. Dante's client, which has a
//!   /usr/bin/socksify and socksify(1) too, is diverted to socksify.dante
//!   meanwhile, and gets them back.
//!
//! The package test never changes the machine's packages: it reruns itself
//! in a mount namespace where /usr and /var are overlays of the real ones
//! (writes go to a tmpfs that goes with the namespace) and /etc is
//! read-only; apt-get, dpkg, `man` and the installed wrapper all run there.
//! A socksify package the user installed stays as it is: in the private
//! copy it is purged first (the test then starts from a clean system), and
//! outside, the test checks afterwards that the package's status, the
//! diversions of socksify (Dante's) and the files at the package's paths
//! are exactly what they were before.
//!
//! Both reuse the release build (`--no-build`): no cargo inside the test.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The target directory of this build, for the scripts' `CARGO_TARGET_DIR`.
fn target_dir() -> PathBuf {
    release_dir().parent().expect("release has a parent").to_path_buf()
}

/// A script of `scripts/` with the release build of this test.
fn script(name: &str) -> Run {
    Run::plain(repo_root().join("scripts").join(name))
        .env("CARGO_TARGET_DIR", target_dir().to_str().unwrap())
        .timeout(Duration::from_secs(300))
}

/// Every entry under `dir`: path → file contents and mode, or "dir".
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
                out.insert(path, (b"dir".to_vec(), meta.permissions().mode()));
            } else {
                out.insert(path.clone(), (fs::read(&path).unwrap(), meta.permissions().mode()));
            }
        }
    }
    out
}

/// Section names of an ELF file (`readelf -SW`).
fn sections(path: &Path) -> String {
    let out = Command::new("readelf").arg("-SW").arg(path).output().expect("readelf (binutils)");
    assert!(out.status.success(), "readelf {}", path.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `WRAPPER -x URL -n '' curl http://target/` must fetch the body through
/// the proxy: the target sees the proxy's address, the proxy logs it.
fn curl_through(wrapper: &Path, extra_env: &[(&str, &str)]) {
    let server = Server::bundled(&[]);
    let body = token("installed-curl");
    let target = TcpTarget::http(&body);
    let mut run = Run::plain(wrapper)
        .args(["-x", &server.url(), "-n", "", "--", "curl", "-sS", "--max-time", "20"])
        .arg(format!("http://{}/", target.addr));
    for (k, v) in extra_env {
        run = run.env(k, v);
    }
    let out = run.run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    server.wait_connect_line(target.addr);
}

#[test]
fn install_into_a_prefix_works_and_uninstall_leaves_it_as_before() {
    let prefix = TempDir::new("install-prefix");
    let p = prefix.path();
    // Something of the user's already there, which must survive.
    fs::create_dir_all(p.join("bin")).unwrap();
    fs::write(p.join("bin/other-tool"), "#!/bin/sh\n").unwrap();
    let before = snapshot(p);

    script("install").args(["--no-build", "--prefix"]).arg(p).run().assert_success();
    let lib = p.join("lib/socksify/libsocksify.so");
    for f in [
        "bin/socksify",
        "bin/socksify-server",
        "lib/socksify/socksify-cli",
        "share/man/man1/socksify.1.gz",
        "share/man/man1/socksify-server.1.gz",
    ] {
        assert!(p.join(f).is_file(), "{f} not installed");
    }
    // Stripped, with the debug info beside it and linked to it.
    let lib_sections = sections(&lib);
    assert!(!lib_sections.contains(".debug_info") && !lib_sections.contains(".symtab"), "the library is not stripped:\n{lib_sections}");
    assert!(lib_sections.contains(".gnu_debuglink"), "no debug link:\n{lib_sections}");
    assert!(sections(&p.join("lib/socksify/libsocksify.so.debug")).contains(".debug_info"), "the .debug file has no debug info");
    assert!(fs::metadata(&lib).unwrap().len() < fs::metadata(shim_path()).unwrap().len() / 2, "stripping should shrink the library");

    // The installed wrapper finds the installed library by itself...
    let wrapper = p.join("bin/socksify");
    let out = Run::plain(&wrapper).arg("--version").run();
    out.assert_success();
    assert!(out.stdout.ends_with(&format!("library {}\n", lib.display())), "{out}");
    // ...and it works.
    curl_through(&wrapper, &[]);
    let out = Run::plain("man").args(["-M"]).arg(p.join("share/man")).args(["-w", "socksify"]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), p.join("share/man/man1/socksify.1.gz").to_str().unwrap(), "{out}");

    // A second install replaces the first; one uninstall removes it all.
    script("install").args(["--no-build", "--prefix"]).arg(p).run().assert_success();
    script("install").args(["--prefix"]).arg(p).arg("--uninstall").run().assert_success();
    assert_eq!(snapshot(p), before, "uninstall must leave the prefix as it was");
}

#[test]
fn uninstall_keeps_a_file_changed_since_the_install() {
    let prefix = TempDir::new("install-changed");
    let p = prefix.path();
    script("install").args(["--no-build", "--prefix"]).arg(p).run().assert_success();
    fs::write(p.join("bin/socksify"), "#!/bin/sh\necho edited by the user\n").unwrap();
    let out = script("install").args(["--prefix"]).arg(p).arg("--uninstall").run();
    assert_eq!(out.code, Some(1), "a kept file is reported in the exit status:\n{out}");
    assert!(out.stderr.contains(&format!("kept {}", p.join("bin/socksify").display())), "{out}");
    assert_eq!(fs::read_to_string(p.join("bin/socksify")).unwrap(), "#!/bin/sh\necho edited by the user\n");
    assert!(!p.join("lib/socksify/libsocksify.so").exists() && !p.join("bin/socksify-server").exists(), "{out}");
}

// ---------------------------------------------------------------- the Debian package

/// Set for the rerun of the package test inside [`private_system`].
const PRIVATE: &str = "SOCKSIFY_TEST_PRIVATE_SYSTEM";
/// The source name of the overlays, to recognise them in mountinfo.
const OVERLAY: &str = "socksify-test-overlay";

/// Runs the test `name` of this binary again, in a mount namespace of its
/// own whose /usr and /var are overlays (upper layers on a tmpfs the
/// namespace alone sees) and whose /etc is read-only: what apt-get and dpkg
/// do there never reaches the machine. The namespace, with its tmpfs, ends
/// with the rerun's last process.
fn private_system(name: &str) -> Output {
    let scratch = TempDir::new("private-system");
    let setup = format!(
        r#"root=$1; shift
mount -t tmpfs -o mode=0700 {OVERLAY} "$root"
for d in usr var; do
    mkdir "$root/$d" "$root/$d.work"
    mount -t overlay -o "lowerdir=/$d,upperdir=$root/$d,workdir=$root/$d.work" {OVERLAY} "/$d"
done
mount --bind /etc /etc
mount -o remount,bind,ro /etc
exec "$@""#
    );
    let exe = std::env::current_exe().expect("current_exe");
    Run::plain("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-euc", &setup, "sh"])
        .arg(scratch.path())
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(PRIVATE, "1")
        .timeout(Duration::from_secs(900))
        .run()
}

/// Whether this process sees our overlays on /usr and /var and a read-only
/// /etc (so the package test may install and purge).
fn in_private_system() -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = |point: &str, check: &dyn Fn(&[&str]) -> bool| {
        info.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).rfind(|f| f.get(4) == Some(&point)).is_some_and(|f| check(&f))
    };
    let overlay =
        |f: &[&str]| f.iter().position(|x| *x == "-").is_some_and(|i| f.get(i + 1) == Some(&"overlay") && f.get(i + 2) == Some(&OVERLAY));
    let read_only = |f: &[&str]| f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"));
    mounted("/usr", &overlay) && mounted("/var", &overlay) && mounted("/etc", &read_only)
}

/// What the machine has of socksify: the package's status, the diversions
/// that name socksify (Dante's, while ours is installed), and the bytes
/// at each watched path (`None` when absent).
struct SystemState {
    status: String,
    diversions: String,
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl SystemState {
    fn read(paths: &[PathBuf]) -> SystemState {
        let status = Run::plain("dpkg-query").args(["-W", "-f=${Status} ${Version}", "socksify"]).run();
        let diversions = Run::plain("dpkg-divert").arg("--list").run();
        diversions.assert_success();
        let mut mine: Vec<&str> = diversions.stdout.lines().filter(|l| l.contains("socksify")).collect();
        mine.sort_unstable();
        SystemState { status: format!("exit {:?}: {}", status.code, status.stdout), diversions: mine.join("\n"), files: contents(paths) }
    }

    /// Panics naming what differs from `before`.
    fn assert_as(&self, before: &SystemState, context: &dyn std::fmt::Display) {
        assert_eq!(self.status, before.status, "the socksify package's status changed:\n{context}");
        assert_eq!(self.diversions, before.diversions, "the diversions naming socksify changed:\n{context}");
        for ((path, now), (_, was)) in self.files.iter().zip(&before.files) {
            assert!(now == was, "{} is not as it was before:\n{context}", path.display());
        }
    }
}

/// `apt-get ARGS`, waiting (bounded) for another apt or dpkg run to finish.
fn apt_get(args: &[&str]) -> Output {
    Run::plain("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=240"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(Duration::from_secs(300))
        .run()
}

fn package_status() -> String {
    let out = Run::plain("dpkg-query").args(["-W", "-f=${Status}", "socksify"]).run();
    out.stdout
}

/// The bytes at each path (`None` when absent).
fn contents(paths: &[PathBuf]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    paths.iter().map(|p| (p.clone(), fs::read(p).ok())).collect()
}

/// `man -w PAGE` as printed (empty when not found).
fn man_w(page: &str) -> String {
    Run::plain("man").args(["-w", page]).run().stdout
}

#[test]
fn the_debian_package_installs_works_and_purges_clean() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the package test mounts a private copy of /usr and /var: run it as root (CI does)");
    const NAME: &str = "the_debian_package_installs_works_and_purges_clean";
    if std::env::var_os(PRIVATE).is_some() {
        assert!(in_private_system(), "{PRIVATE} is set, but /usr and /var are not this test's overlays: refusing to touch the system");
        return package_test();
    }
    let paths: Vec<PathBuf> = [
        "/usr/bin/socksify",
        "/usr/bin/socksify.dante",
        "/usr/bin/socksify-server",
        "/usr/lib/socksify/libsocksify.so",
        "/usr/lib/socksify/socksify-cli",
        "/usr/share/man/man1/socksify.1.gz",
        "/usr/share/man/man1/socksify.dante.1.gz",
        "/usr/share/man/man1/socksify-server.1.gz",
    ]
    .map(PathBuf::from)
    .to_vec();
    let before = SystemState::read(&paths);
    let out = private_system(NAME);
    out.assert_success();
    assert!(out.stdout.contains("test result: ok. 1 passed"), "the rerun in the private system did not run the test:\n{out}");
    eprint!("{}", out.stderr);
    SystemState::read(&paths).assert_as(&before, &out);
}

/// The package test proper, in the private system of [`private_system`].
fn package_test() {
    // A socksify package of the user's (this copy's only: the machine's is
    // untouched) would be upgraded, not installed: purge it here first.
    let status = package_status();
    if !status.is_empty() && !status.ends_with(" not-installed") {
        eprintln!("note: a socksify package is on this machine ({status}); purged in the test's private copy only");
        apt_get(&["purge", "-y", "-q", "socksify"]).assert_success();
    }
    let out_dir = TempDir::new("package");
    let out = script("package").args(["--no-build", "--out"]).arg(out_dir.path()).run();
    out.assert_success();
    let deb = PathBuf::from(out.stdout.trim());
    let version = env!("CARGO_PKG_VERSION");
    assert!(deb.file_name().unwrap().to_str().unwrap().starts_with(&format!("socksify_{version}_")), "{out}");
    assert!(deb.is_file(), "{out}");

    // What the package holds, and what it says about itself.
    let fields = Run::plain("dpkg-deb").args(["-f"]).arg(&deb).args(["Package", "Version", "Depends"]).run();
    fields.assert_success();
    assert!(fields.stdout.contains(&format!("Version: {version}")) && fields.stdout.contains("Depends: libc6 (>="), "{fields}");
    let listing = Run::plain("dpkg-deb").arg("-c").arg(&deb).run();
    listing.assert_success();
    let files: Vec<PathBuf> = listing
        .stdout
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| PathBuf::from(l.split_whitespace().last().unwrap().trim_start_matches('.')))
        .collect();
    for f in [
        "/usr/bin/socksify",
        "/usr/bin/socksify-server",
        "/usr/lib/socksify/libsocksify.so",
        "/usr/lib/socksify/socksify-cli",
        "/usr/share/man/man1/socksify.1.gz",
        "/usr/share/man/man1/socksify-server.1.gz",
        "/usr/share/doc/socksify/copyright",
    ] {
        assert!(files.contains(&PathBuf::from(f)), "{f} is not in the package:\n{listing}");
    }

    // What is there before (Dante's socksify, maybe): the purge must restore it.
    let dante_names = ["/usr/bin/socksify.dante", "/usr/share/man/man1/socksify.dante.1.gz"].map(PathBuf::from);
    let watched: Vec<PathBuf> = files.iter().chain(&dante_names).cloned().collect();
    let before = contents(&watched);
    let man_before = man_w("socksify");

    let out = apt_get(&["install", "-y", "-q", deb.to_str().unwrap()]);
    out.assert_success();
    assert_eq!(package_status(), "install ok installed");
    // Dante's socksify, when installed, is kept under another name.
    for (path, renamed) in [("/usr/bin/socksify", &dante_names[0]), ("/usr/share/man/man1/socksify.1.gz", &dante_names[1])] {
        let was = before.iter().find(|(p, _)| p == Path::new(path)).unwrap().1.clone();
        if was.is_some() {
            assert_eq!(fs::read(renamed).ok(), was, "{path} of another package should be at {}", renamed.display());
        }
    }

    // The installed wrapper, with no variable and no source tree involved.
    let wrapper = Path::new("/usr/bin/socksify");
    let out = Run::plain(wrapper).arg("--version").run();
    out.assert_success();
    assert_eq!(out.stdout, format!("socksify {version}\nlibrary /usr/lib/socksify/libsocksify.so\n"), "{out}");
    curl_through(wrapper, &[]);

    // --check: a good proxy, a dead port, a wrong password.
    let server = Server::start(&["--listen", "127.0.0.1:0", "--bind-out", "127.0.0.2", "--user", "alice:right"]);
    let good = Run::plain(wrapper).args(["-x", &server.url(), "-U", "alice:right", "--check"]).run();
    assert_eq!(good.code, Some(0), "{good}");
    assert!(good.stdout.lines().last().unwrap().starts_with("ok: the configuration works"), "{good}");
    let dead = Run::plain(wrapper).args(["-x", &format!("socks5h://127.0.0.1:{}", free_port(DIRECT)), "--check"]).run();
    assert_eq!(dead.code, Some(1), "{dead}");
    assert!(dead.stdout.lines().last().unwrap().starts_with("FAIL: nothing listens at 127.0.0.1:"), "{dead}");
    let wrong = Run::plain(wrapper).args(["-x", &server.url(), "-U", "alice:wrong", "--check"]).run();
    assert_eq!(wrong.code, Some(1), "{wrong}");
    let fail_lines: Vec<&str> = wrong.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fail_lines.len(), 1, "{wrong}");
    assert!(fail_lines[0].starts_with("FAIL: wrong user name or password:"), "{wrong}");

    for page in ["socksify", "socksify-server"] {
        assert_eq!(man_w(page).trim(), format!("/usr/share/man/man1/{page}.1.gz"));
    }
    // `man socksify` opens our page.
    let page = Run::plain("man").arg("socksify").env("MANPAGER", "cat").env("MANWIDTH", "80").run();
    page.assert_success();
    assert!(page.stdout.contains("socksify - run a program with its TCP, UDP and DNS sent through a SOCKS"), "{page}");
    assert!(page.stdout.contains("--check [HOST:PORT]"), "man socksify is not ours:\n{page}");

    // Purge: the package and every one of its files are gone.
    let out = apt_get(&["purge", "-y", "-q", "socksify"]);
    out.assert_success();
    assert!(!package_status().contains("installed"), "still installed after the purge");
    for ((path, now), (_, was)) in contents(&watched).iter().zip(&before) {
        assert!(now == was, "{} is not as it was before the install", path.display());
    }
    for d in ["/usr/lib/socksify", "/usr/share/doc/socksify"] {
        assert!(!Path::new(d).exists(), "{d} is left after the purge");
    }
    let diversions = Run::plain("dpkg-divert").args(["--list", "socksify"]).run();
    assert!(!diversions.stdout.contains("by socksify"), "diversions are left:\n{diversions}");
    assert_eq!(man_w("socksify"), man_before, "man socksify is not what it was before");
}
