//! `scripts/socksify`, the wrapper: it runs statically linked programs
//! under the seccomp supervisor (LD_PRELOAD cannot reach them), refuses
//! the ones nothing reaches (setuid/setgid; their traffic would silently go
//! direct), keeps existing LD_PRELOAD entries, and really runs a program
//! through the proxy. The supervisor's own tests are in tests/supervise.rs.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A statically linked program that prints `RAN` and then the `Seccomp:`
/// line of its /proc/self/status (`2`: under a filter, the supervisor's):
/// built with `gcc -static`, or failing that `rustc -C target-feature=+crt-static`.
fn static_binary(dir: &Path) -> PathBuf {
    let exe = dir.join("static-prog");
    let c = dir.join("prog.c");
    fs::write(
        &c,
        "#include <stdio.h>\n#include <string.h>\nint main(void) { puts(\"RAN\"); char l[256]; FILE *f = fopen(\"/proc/self/status\", \"r\");\n\
         while (f && fgets(l, sizeof l, f)) if (!strncmp(l, \"Seccomp:\", 8)) fputs(l, stdout); return 0; }\n",
    )
    .unwrap();
    let gcc = Command::new("gcc").arg("-static").arg("-o").arg(&exe).arg(&c).output();
    if gcc.is_ok_and(|o| o.status.success()) {
        return exe;
    }
    let rs = dir.join("prog.rs");
    fs::write(
        &rs,
        "fn main() { println!(\"RAN\"); for l in std::fs::read_to_string(\"/proc/self/status\").unwrap().lines() { if l.starts_with(\"Seccomp:\") { println!(\"{l}\"); } } }\n",
    )
    .unwrap();
    let out = Command::new("rustc").args(["-C", "target-feature=+crt-static", "-o"]).arg(&exe).arg(&rs).output().expect("run rustc");
    assert!(out.status.success(), "cannot build a static binary (install libc6-dev): {}", String::from_utf8_lossy(&out.stderr));
    exe
}


fn wrapper() -> Run {
    Run::plain(wrapper_path()).env("SOCKSIFY_LIB", shim_path().to_str().unwrap())
}

/// Whether `out` is the static program's, run under the supervisor.
fn ran_supervised(out: &Output) -> bool {
    out.code == Some(0) && out.stdout.starts_with("RAN\n") && out.stdout.contains("Seccomp:\t2")
}

#[test]
fn runs_a_statically_linked_binary_under_the_supervisor() {
    let dir = TempDir::new("wrapper-static");
    let exe = static_binary(dir.path());
    assert!(is_static(&exe), "test setup: {} should be static", exe.display());
    // Without the wrapper it runs under no filter...
    let plain = Run::plain(&exe).run();
    assert!(plain.stdout.contains("Seccomp:\t0"), "test setup: {plain}");
    // ...under it, LD_PRELOAD cannot reach it: the supervisor runs it.
    let out = wrapper().args(["-x", "socks5h://127.0.0.1:9", "--"]).arg(&exe).run();
    assert!(ran_supervised(&out), "a static binary must run under the supervisor:\n{out}");
}

#[test]
fn supervises_a_script_whose_interpreter_is_static() {
    let dir = TempDir::new("wrapper-static-script");
    let exe = static_binary(dir.path());
    let script = dir.path().join("script");
    fs::write(&script, format!("#!{}\n", exe.display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let out = wrapper().arg(&script).run();
    assert!(ran_supervised(&out), "{out}");
}

/// `#!/usr/bin/env -S ./prog` (and env's other options and assignments,
/// and a script whose interpreter is another script) leads to the static
/// binary: supervised, whatever the path to it.
#[test]
fn supervises_a_static_program_reached_through_env_options() {
    let dir = TempDir::new("wrapper-env-static");
    static_binary(dir.path());
    let script = |name: &str, line: &str| {
        let path = dir.path().join(name);
        fs::write(&path, format!("{line}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let cases = [
        script("split", "#!/usr/bin/env -S ./static-prog --flag"),
        script("split-attached", "#!/usr/bin/env -S./static-prog"),
        script("cluster", "#!/usr/bin/env -vS ./static-prog"),
        script("ignore-env", "#!/usr/bin/env -S -i -u HOME A=b ./static-prog"),
        script("chdir", &format!("#!/usr/bin/env -S --chdir={} -uHOME ./static-prog", dir.path().display())),
    ];
    let nested = script("nested", &format!("#!{}", cases[0].display()));
    for s in cases.iter().chain([&nested]) {
        // It runs without the wrapper (the kernel and env find the program)...
        let direct = Run::plain(s).current_dir(dir.path()).run();
        assert!(direct.stdout.contains("RAN") && direct.stdout.contains("Seccomp:\t0"), "test setup: {}:\n{direct}", s.display());
        // ...and under it, supervised.
        let out = wrapper().arg(s).current_dir(dir.path()).run();
        assert!(ran_supervised(&out), "{}: {out}", s.display());
    }
    // An env option the wrapper does not know: what runs is unknown, refused.
    let unknown = script("unknown-option", "#!/usr/bin/env -S --frobnicate ./static-prog");
    let out = wrapper().arg(&unknown).current_dir(dir.path()).run();
    assert_eq!(out.code, Some(126), "{out}");
    assert!(out.stderr.contains("cannot tell"), "{out}");
}

#[test]
fn refuses_setuid_and_setgid_binaries() {
    let dir = TempDir::new("wrapper-setuid");
    let echo = dir.path().join("echo");
    fs::copy("/bin/echo", &echo).unwrap();
    for mode in [0o4755, 0o2755] {
        fs::set_permissions(&echo, fs::Permissions::from_mode(mode)).unwrap();
        let out = wrapper().arg(&echo).arg("RAN").run();
        assert!(out.code.is_some_and(|c| c != 0), "mode {mode:o} must be refused:\n{out}");
        assert!(!out.stdout.contains("RAN"), "mode {mode:o}: the program ran:\n{out}");
        assert!(out.stderr.contains("setuid/setgid"), "mode {mode:o}: the message must say why:\n{out}");
    }
    // The same copy without the bits runs.
    fs::set_permissions(&echo, fs::Permissions::from_mode(0o755)).unwrap();
    let out = wrapper().arg(&echo).arg("RAN").run();
    out.assert_success();
    assert_eq!(out.stdout, "RAN\n");
}

#[test]
fn keeps_existing_ld_preload_entries() {
    let dir = TempDir::new("wrapper-preload");
    // A harmless library of our own to be kept in LD_PRELOAD.
    let c = dir.path().join("other.c");
    fs::write(&c, "int socksify_test_other_library = 1;\n").unwrap();
    let other = dir.path().join("libother.so");
    let out = Command::new("gcc").args(["-shared", "-fPIC", "-o"]).arg(&other).arg(&c).output().expect("gcc");
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    let shim = fs::canonicalize(shim_path()).unwrap();
    let out = wrapper()
        .env("LD_PRELOAD", other.to_str().unwrap())
        .args([
            "-x",
            "socks5h://127.0.0.1:1",
            "-n",
            "",
            "-v",
            "printenv",
            "LD_PRELOAD",
            "SOCKSIFY_PROXY",
            "SOCKSIFY_NO_PROXY",
            "SOCKSIFY_LOG",
        ])
        .run();
    out.assert_success();
    assert_eq!(out.stdout, format!("{}:{}\nsocks5h://127.0.0.1:1\n\ninfo\n", shim.display(), other.display()), "{out}");
}

#[test]
fn finds_the_library_in_target_release() {
    // Without SOCKSIFY_LIB the wrapper finds ../target/release/libsocksify.so.
    let shim = fs::canonicalize(shim_path()).unwrap();
    let out = Run::plain(wrapper_path()).args(["-q", "printenv", "LD_PRELOAD", "SOCKSIFY_LOG"]).run();
    out.assert_success();
    assert_eq!(out.stdout, format!("{}\nerror\n", shim.display()), "{out}");
}

#[test]
fn percent_encodes_credentials() {
    let out = wrapper().args(["-x", "socks5h://[::1]:1080", "-U", "al ice:p@ss:w/rd", "printenv", "SOCKSIFY_PROXY"]).run();
    out.assert_success();
    assert_eq!(out.stdout, "socks5h://al%20ice:p%40ss%3Aw%2Frd@[::1]:1080\n");
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    let out = wrapper().arg("-h").run();
    out.assert_success();
    assert!(out.stdout.starts_with("usage: socksify"), "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    let out = wrapper().arg("-Z").run();
    assert_eq!(out.code, Some(2), "an unknown option is a usage error:\n{out}");
    let out = wrapper().arg("no-such-command-socksify").run();
    assert_eq!(out.code, Some(127), "{out}");
    // A path that does not exist is "not found" too (as in the shell), not
    // "cannot execute".
    let out = wrapper().arg("./no-such-file-socksify").run();
    assert_eq!(out.code, Some(127), "{out}");
    let out = wrapper().arg("/nonexistent-dir/prog").run();
    assert_eq!(out.code, Some(127), "{out}");
}

#[test]
fn runs_curl_through_the_proxy_with_credentials() {
    // The whole user story: socksify -x URL -U user:pass -n '' curl URL.
    let (user, pass) = ("bob", "pa ss@:/%");
    let server = Server::bundled(&["--user", &format!("{user}:{pass}")]);
    let body = token("wrapper-body");
    let target = TcpTarget::http(&body);
    let out = Run::plain(wrapper_path())
        .args(["-x", &server.url(), "-U", &format!("{user}:{pass}"), "-n", "", "-v", "--"])
        .args(["curl", "-sS", "--max-time", "20", &format!("http://{}/", target.addr)])
        .run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    server.wait_connect_line(target.addr);
}

/// A malformed configuration stops the wrapper before the program runs
/// (exit 2, one line naming the option the user typed), instead of
/// starting a program whose every connection would then fail.
#[test]
fn a_malformed_configuration_exits_2_without_starting_the_program() {
    let dir = TempDir::new("wrapper-malformed");
    let marker = dir.path().join("ran");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 8] = [
        (&["-x", "socks6://x"], &[], "socksify: -x: unsupported scheme"),
        (&["-x", "socks5://:99999"], &[], "socksify: -x: "),
        (&["-x", "socks5h://[::1"], &[], "socksify: -x: "),
        (&["-x", "127.0.0.1:1080"], &[], "socksify: -x: "),
        (&["-U", "a:b", "-x", "socks5h://[::1"], &[], "socksify: -x/-U: "),
        (&["-n", "bad/99"], &[], "socksify: -n: "),
        (&[], &[("SOCKSIFY_LOG", "bogus")], "socksify: SOCKSIFY_LOG: \"bogus\" is not a level"),
        (&[], &[("SOCKSIFY_PROXY", "socks5h://host:port")], "socksify: SOCKSIFY_PROXY: "),
    ];
    for (args, env, said) in cases {
        let mut run = wrapper().args(args.iter().copied()).args(["--", "touch"]).arg(&marker);
        for (k, v) in env {
            run = run.env(k, v);
        }
        let out = run.run();
        assert_eq!(out.code, Some(2), "{args:?} {env:?}:\n{out}");
        assert!(out.stderr.starts_with(said) && out.stderr.trim_end().ends_with("not starting touch"), "{args:?}:\n{out}");
        assert_eq!(out.stderr.lines().count(), 1, "one line:\n{out}");
        assert!(!marker.exists(), "{args:?}: the program ran");
    }
    // A good configuration runs it.
    wrapper().args(["-x", "socks5h://127.0.0.1:9", "--", "touch"]).arg(&marker).run().assert_success();
    assert!(marker.exists());
}

/// The first natural try, a local web server through a local proxy, is
/// bypassed by the default SOCKSIFY_NO_PROXY (loopback): with -v the shim
/// says so, naming the rule and how to proxy it; with -n '' it goes
/// through the proxy and says that instead.
#[test]
fn verbose_names_each_direct_connection_and_its_rule() {
    let server = Server::bundled(&[]);
    let body = token("direct");
    let target = TcpTarget::http(&body);
    let url = format!("http://{}/", target.addr);
    let out = wrapper().args(["-x", &server.url(), "-v", "curl", "-sS", &url]).run();
    out.assert_success();
    assert_eq!(out.stdout, body);
    let line = format!("-> {}: direct, not through the proxy: SOCKSIFY_NO_PROXY rule 127.0.0.0/8 of the default list", target.addr);
    assert!(out.stderr.contains(&line) && out.stderr.contains("-n ''"), "{out}");
    target.assert_peers(1, DIRECT);

    let out = wrapper().args(["-x", &server.url(), "-n", "", "-v", "curl", "-sS", &url]).run();
    out.assert_success();
    assert!(!out.stderr.contains("not through the proxy") && out.stderr.contains(&format!("-> {} via ", target.addr)), "{out}");
    let peers: Vec<_> = target.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(peers, [DIRECT, BUNDLED_OUT]);
}
