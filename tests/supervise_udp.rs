//! UDP under the seccomp supervisor (`socksify --supervise`): UDP
//! ASSOCIATE owned by the supervisor, with the shim's semantics.
//!
//! Each test makes a network namespace of its own (lo only) where the
//! proxy, a UDP echo target that records the source of every datagram, and
//! the supervised program live. The bundled server sends from 127.0.0.2,
//! Dante from 127.0.0.3: a target that saw only that address got nothing
//! directly (a direct datagram comes from 127.0.0.1). The program checks
//! the reply is the payload exactly (no relay header) and prints the
//! source it was told, which must be the target's address.
//!
//! The programs: a static musl C client (`tests/programs/supervise/udpclient.c`:
//! unconnected `sendto`/`recvfrom`, `sendmsg`/`recvmsg`, `sendmmsg`,
//! connected `send`/`recv`) and the static Go client's `udp` mode (unconnected
//! `WriteToUDP`/`ReadFromUDP` on a dual-stack socket, then `DialUDP`,
//! `Write`, `Read`). Needs root, musl-gcc and Debian's golang-go.

mod common;
#[allow(dead_code)] // this binary uses part of each helper module
#[path = "common/microsocks.rs"]
mod microsocks;
#[allow(dead_code)]
#[path = "common/netns.rs"]
mod netns;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;
use microsocks::Microsocks;
use netns::NetNs;
use std::io::Write;
use std::net::{IpAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use udp_cases::UdpTarget;

struct Programs {
    _dir: TempDir,
    musl_udp: PathBuf,
    go_client: PathBuf,
}

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let dir = TempDir::new("supervise-udp-programs");
        let src = repo_root().join("tests/programs/supervise");
        let musl_udp = dir.path().join("udpclient");
        let status = Command::new(require_program("musl-gcc", "musl-tools"))
            .args(["-static", "-O2", "-o"])
            .arg(&musl_udp)
            .arg(src.join("udpclient.c"))
            .status()
            .expect("run musl-gcc");
        assert!(status.success(), "musl-gcc failed");
        let go_client = dir.path().join("goclient");
        go_build(&src.join("goclient"), &go_client, dir.path(), false);
        for p in [&musl_udp, &go_client] {
            assert!(is_static(p), "test setup: {} should be statically linked", p.display());
        }
        Programs { _dir: dir, musl_udp, go_client }
    })
}

/// `prog` under the supervisor inside the namespace, proxying everything.
fn supervised(ns: &NetNs, url: &str, prog: impl AsRef<std::ffi::OsStr>) -> Run {
    ns.supervised(url, prog)
}

/// The musl client, in each mode, gets its payload back from the target,
/// told the target's address as the source; the target saw `out` only.
fn musl_round_trips(ns: &NetNs, url: &str, out: IpAddr) {
    let target = UdpTarget::echo(DIRECT);
    for mode in ["sendto", "sendmsg", "connect", "sendmmsg"] {
        let payload = token(mode);
        let run = supervised(ns, url, &programs().musl_udp).args([mode, "127.0.0.1", &target.addr.port().to_string(), &payload]).run();
        run.assert_success();
        let want = match mode {
            "sendmmsg" => format!("reply {payload}-1 from {0}\nreply {payload}-2 from {0}\n", target.addr),
            _ => format!("reply {payload} from {}\n", target.addr),
        };
        assert_eq!(run.stdout, want, "{mode}: {run}");
    }
    target.assert_peers(5, out);
}

/// The Go client, unconnected then connected, likewise.
fn go_round_trips(ns: &NetNs, url: &str, out: IpAddr) {
    let target = UdpTarget::echo(DIRECT);
    let payload = token("go-udp");
    let run = supervised(ns, url, &programs().go_client).args(["udp", &target.addr.to_string(), &payload]).run();
    run.assert_success();
    let want = format!("unconnected: reply {payload} from {0}\nconnected: reply {payload} from {0}\n", target.addr);
    assert_eq!(run.stdout, want, "{run}");
    target.assert_peers(2, out);
}

#[test]
fn static_musl_udp_through_the_bundled_server() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        musl_round_trips(&ns, &server.url(), BUNDLED_OUT);
    });
}

#[test]
fn static_musl_udp_through_dante() {
    let ns = NetNs::create();
    ns.run(|| {
        let dante = Dante::start();
        musl_round_trips(&ns, &dante.url(), DANTE_OUT);
    });
}

#[test]
fn static_go_udp_through_the_bundled_server() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        go_round_trips(&ns, &server.url(), BUNDLED_OUT);
    });
}

#[test]
fn static_go_udp_through_dante() {
    let ns = NetNs::create();
    ns.run(|| {
        let dante = Dante::start();
        go_round_trips(&ns, &dante.url(), DANTE_OUT);
    });
}

/// microsocks has no UDP ASSOCIATE: the send and the connect fail with
/// EOPNOTSUPP, as under the shim (tests/common/udp_refused.rs), the
/// supervisor says why, and nothing reaches the target.
#[test]
fn a_proxy_without_udp_gives_a_clear_errno() {
    let ns = NetNs::create();
    ns.run(|| {
        let ms = Microsocks::start();
        let target = UdpTarget::echo(DIRECT);
        let port = target.addr.port().to_string();
        for (mode, call) in [("sendto", "sendto"), ("sendmsg", "sendmsg"), ("connect", "connect")] {
            let run = supervised(&ns, &ms.url(), &programs().musl_udp).args([mode, "127.0.0.1", &port, "must-not-leak"]).run();
            assert_eq!(run.stdout, format!("{call}: errno {}\n", libc::EOPNOTSUPP), "{run}");
            assert!(run.stderr.contains("UDP ASSOCIATE"), "the supervisor says why:\n{run}");
        }
        target.assert_peers(0, DIRECT);
    });
}

/// `SOCKSIFY_UDP=block`: EPERM, nothing sent, no association asked for.
#[test]
fn udp_block_keeps_eperm() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = UdpTarget::echo(DIRECT);
        let port = target.addr.port().to_string();
        for (mode, call) in [("sendto", "sendto"), ("sendmsg", "sendmsg"), ("connect", "connect")] {
            let run = supervised(&ns, &server.url(), &programs().musl_udp).env("SOCKSIFY_UDP", "block").args([mode, "127.0.0.1", &port, "blocked"]).run();
            assert_eq!(run.stdout, format!("{call}: errno {}\n", libc::EPERM), "{run}");
            assert!(run.stderr.contains("SOCKSIFY_UDP=block"), "{run}");
        }
        target.assert_peers(0, DIRECT);
        assert!(!server.log.text().contains("cmd=udp-associate"), "no association may be asked for:\n{}", server.log.text());
    });
}

/// A datagram from anyone but the relay (here 127.0.0.1, not bypassed)
/// queued on the program's socket before the reply is dropped: the
/// `recvfrom` gets the reply, from the target.
#[test]
fn datagrams_not_from_the_relay_are_dropped() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = UdpTarget::echo(DIRECT);
        let payload = token("after-stray");
        let (mut child, lines) = interactive(&ns, &server.url(), &["stray", "127.0.0.1", &target.addr.port().to_string(), &payload]);
        let port: u16 = lines.wait_line(&["port "]).and_then(|l| l.trim().strip_prefix("port ")?.parse().ok()).expect("the program's port");
        // Queued on the program's socket before its request goes out.
        let stray = UdpSocket::bind((DIRECT, 0)).unwrap();
        stray.send_to(b"stray", (DIRECT, port)).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let reply = wait_until(WAIT, || lines.text().lines().find(|l| l.starts_with("reply") || l.contains("errno")).map(str::to_owned));
        let _ = child.wait();
        kill_group(&mut child);
        assert_eq!(reply.as_deref().map(str::trim_end), Some(format!("reply {payload} from {}", target.addr).as_str()), "output:\n{}", lines.text());
        target.assert_peers(1, BUNDLED_OUT);
    });
}

/// Every receive of an unconnected socket with an association is done by
/// the supervisor: `read` and `readv` (no address) and `recvmmsg` get the
/// payload exactly, never the relay's header; `splice` from it and an AIO
/// read of it, which the supervisor cannot do for the program, fail with
/// EINVAL.
#[test]
fn receives_without_an_address_never_show_the_relay_header() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = UdpTarget::echo(DIRECT);
        let port = target.addr.port().to_string();
        for mode in ["read", "readv", "recvmmsg"] {
            let payload = token(mode);
            let run = supervised(&ns, &server.url(), &programs().musl_udp).args([mode, "127.0.0.1", &port, &payload]).run();
            let want = match mode {
                "recvmmsg" => format!("messages 1\nreply {payload} from {}\n", target.addr),
                _ => format!("reply {payload} from 0.0.0.0:0\n"),
            };
            assert_eq!(run.stdout, want, "{mode}: {run}");
        }
        target.assert_peers(3, BUNDLED_OUT);
        // Receives the supervisor cannot do in the program's place: refused.
        for (mode, call) in [("aio", "io_submit"), ("splice", "splice")] {
            let run = supervised(&ns, &server.url(), &programs().musl_udp).args([mode, "127.0.0.1", &port, "x"]).run();
            assert_eq!(run.stdout, format!("{call}: errno {}\n", libc::EINVAL), "{mode}: {run}");
        }
    });
}

/// The program's UDP sockets live in the supervisor's fd range, where its
/// receives are seen: a `dup` of a socket with an association stays there
/// and gets the payload, headerless, from the target; a copy below the
/// range (`dup2` to fd 10) of such a socket is refused, since a receive on
/// it would get the relay's datagram as it is; and a socket with a copy
/// below the range (made by `dup2`, or passed with `SCM_RIGHTS`) is not
/// carried: EPERM, nothing sent.
#[test]
fn copies_of_a_proxied_socket_never_show_the_relay_header() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = UdpTarget::echo(DIRECT);
        let port = target.addr.port().to_string();
        let payload = token("dup");
        let run = supervised(&ns, &server.url(), &programs().musl_udp).args(["dup", "127.0.0.1", &port, &payload]).run();
        assert_eq!(run.stdout, format!("dup in range\nreply {payload} from {}\n", target.addr), "{run}");
        let payload = token("lowcopy");
        let run = supervised(&ns, &server.url(), &programs().musl_udp).args(["lowcopy", "127.0.0.1", &port, &payload]).run();
        assert_eq!(run.stdout, format!("dup2: errno {}\nreply {payload} from {}\n", libc::EPERM, target.addr), "{run}");
        target.assert_peers(2, BUNDLED_OUT);
        for mode in ["pinned", "passed"] {
            let run = supervised(&ns, &server.url(), &programs().musl_udp).args([mode, "127.0.0.1", &port, "must-not-leak"]).run();
            assert_eq!(run.stdout, format!("sendto: errno {}\n", libc::EPERM), "{mode}: {run}");
            assert!(run.stderr.contains("has a copy below it"), "{mode}: the supervisor says why:\n{run}");
        }
        target.assert_peers(2, BUNDLED_OUT);
    });
}

/// The program's UDP socket is in the reserved range, below 1024 even when
/// the fd limit is far higher (`select` takes no fd from 1024 up).
#[test]
fn udp_sockets_stay_below_fd_setsize() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills one rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert!(lim.rlim_max > 1024, "test setup: the hard fd limit ({}) must exceed 1024", lim.rlim_max);
        for limit in ["1024".to_string(), lim.rlim_max.to_string()] {
            let run = Run::plain(require_program("prlimit", "util-linux"))
                .arg(format!("--nofile={limit}:{limit}"))
                .args(["ip", "netns", "exec", &ns.name])
                .arg(release_dir().join("socksify-cli"))
                .args(["supervise", "--"])
                .arg(&programs().musl_udp)
                .args(["fdnum", "127.0.0.1", "9", "x"])
                .env("SOCKSIFY_PROXY", &server.url())
                .run();
            let fd: u32 = run.stdout.trim().strip_prefix("fd ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{run}"));
            assert!((768..1024).contains(&fd), "limit {limit}: fd {fd}\n{run}");
        }
    });
}

/// The musl client under the supervisor with `args`, its stdin and stdout
/// piped (stdout read into the log), in a process group of its own.
fn interactive(ns: &NetNs, url: &str, args: &[&str]) -> (std::process::Child, LineLog) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(release_dir().join("socksify-cli"))
        .args(["supervise", "--"])
        .arg(&programs().musl_udp)
        .args(args)
        .env("SOCKSIFY_PROXY", url)
        .env("SOCKSIFY_NO_PROXY", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the supervisor");
    let lines = LineLog::spawn_reader(child.stdout.take().unwrap());
    (child, lines)
}

/// A program that closes its socket and lives on: the supervisor closes
/// the association (the bundled server logs it when it ends), for an
/// unconnected socket and for a connected one.
#[test]
fn the_association_ends_when_the_program_closes_its_socket() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = UdpTarget::echo(DIRECT);
        let port = target.addr.port().to_string();
        for (i, mode) in ["sendto", "connect"].into_iter().enumerate() {
            let (mut child, lines) = interactive(&ns, &server.url(), &[mode, "127.0.0.1", &port, mode, "close"]);
            let closed = lines.wait_line(&["closed"]);
            let ended = wait_until(WAIT, || (server.log.text().matches("cmd=udp-associate").count() > i).then_some(()));
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(b"go\n");
            drop(stdin);
            let _ = child.wait();
            kill_group(&mut child);
            assert!(closed.is_some(), "{mode}: output:\n{}", lines.text());
            assert!(ended.is_some(), "{mode}: the association must end while the program lives on; server log:\n{}", server.log.text());
        }
        target.assert_peers(2, BUNDLED_OUT);
    });
}
