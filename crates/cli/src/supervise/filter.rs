//! The seccomp filter the supervised program runs under, and installing it
//! (in the child, between `fork` and `execve`).
//!
//! Notified (one round trip to the supervisor): `connect`, `getpeername`,
//! `getsockname`, `sendmsg`, `sendmmsg`, `pidfd_getfd`, `sendto` with a destination
//! address (a `sendto` without one, as on any connected socket, is decided
//! in the kernel: allowed), and `socket` for an IPv4/IPv6 datagram socket
//! (rare: the supervisor opens it in the reserved fd range, `reserved.rs`).
//! On an fd of the reserved range only: every receive (`read`, `readv`,
//! `preadv2`, `recvfrom`, `recvmsg`, `recvmmsg`: the datagrams of a UDP
//! association reach the program's socket with the relay's header, which
//! the supervisor strips, `udp.rs`; answers to DNS queries sent unconnected
//! are reported from the nameserver, `sent_dns.rs`), and `splice` from
//! it; `io_submit` (an AIO read of a socket is a receive too); `dup`,
//! `dup2`, `dup3` and
//! `fcntl(F_DUPFD*)` from that range, and `dup2`/`dup3`/`F_DUPFD` into it
//! (so no copy of a socket the supervisor may proxy leaves the range
//! unseen). The program's UDP sockets live in that range and its other
//! fds below it, so a receive on a TCP, Unix, netlink or file descriptor
//! stays in the kernel. `io_uring_setup` fails with ENOSYS: io_uring's
//! own connect and sendmsg never pass through a filter, so programs must
//! fall back to plain calls. Everything else is allowed in the kernel and
//! costs a few BPF instructions. A call of a foreign ABI (32-bit x86, x32)
//! fails with ENOSYS: its numbers are not the ones checked here.

use libc::{c_int, sock_filter, sock_fprog};

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
const FILTER_FLAG_NEW_LISTENER: libc::c_long = 1 << 3;
/// Linux 5.19: once the supervisor has read a call, only a fatal signal
/// interrupts its wait, so a signal handler cannot restart a connect the
/// supervisor is still handshaking for.
const FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_long = 1 << 5;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
/// x32 system calls come in with this bit set and the x86_64 arch.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low half of argument `i`: an `int` argument (fd, domain, type,
/// command) is all there (the kernel ignores the high half).
const fn lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn hi(i: u32) -> u32 {
    lo(i) + 4
}

/// `dup2` exists only on some architectures (not aarch64).
#[cfg(target_arch = "x86_64")]
const DUP2: Option<i64> = Some(libc::SYS_dup2);
#[cfg(not(target_arch = "x86_64"))]
const DUP2: Option<i64> = None;

/// Where a jump goes: the next instruction, or a label.
#[derive(Clone)]
enum To {
    Next,
    L(String),
}

fn l(name: &str) -> To {
    To::L(name.to_string())
}

/// One instruction of the program before its jumps are resolved.
enum Ins {
    Label(String),
    Ld(u32),
    And(u32),
    Jeq(u32, To, To),
    Jge(u32, To, To),
    Ret(u32),
}

/// Lays the program out: labels become relative jump offsets.
fn assemble(src: &[Ins]) -> Vec<sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut pc = 0usize;
    for ins in src {
        match ins {
            Ins::Label(name) => {
                at.insert(name.as_str(), pc);
            }
            _ => pc += 1,
        }
    }
    let mut out = Vec::with_capacity(pc);
    let offset = |from: usize, to: &To| -> u8 {
        match to {
            To::Next => 0,
            To::L(name) => u8::try_from(at[name.as_str()] - from - 1).expect("a filter jump longer than 255"),
        }
    };
    for ins in src {
        let here = out.len();
        out.push(match ins {
            Ins::Label(_) => continue,
            Ins::Ld(k) => sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: *k },
            Ins::And(k) => sock_filter { code: BPF_AND_K, jt: 0, jf: 0, k: *k },
            Ins::Jeq(k, t, f) => sock_filter { code: BPF_JEQ_K, jt: offset(here, t), jf: offset(here, f), k: *k },
            Ins::Jge(k, t, f) => sock_filter { code: BPF_JGE_K, jt: offset(here, t), jf: offset(here, f), k: *k },
            Ins::Ret(k) => sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: *k },
        });
    }
    out
}

/// The dispatch on the system call number (in the accumulator): a binary
/// search over `table` (sorted by number), so any call, the many the
/// filter lets through included, costs a handful of comparisons; a number
/// not in it goes to `allow`.
fn dispatch(p: &mut Vec<Ins>, table: &[(u32, &str)], name: &str) {
    p.push(Ins::Label(name.to_string()));
    if table.len() <= 3 {
        for (nr, target) in table {
            p.push(Ins::Jeq(*nr, l(target), To::Next));
        }
        p.push(Ins::Ret(RET_ALLOW));
        return;
    }
    let (low, high) = table.split_at(table.len() / 2);
    let right = format!("{name}r");
    p.push(Ins::Jge(high[0].0, To::L(right.clone()), To::Next));
    dispatch(p, low, &format!("{name}l"));
    dispatch(p, high, &right);
}

/// What the filter notifies beyond what it always does.
#[derive(Clone, Copy)]
pub struct Notified {
    /// The first fd of the range where the supervisor keeps the program's
    /// UDP sockets (`reserved.rs`). Without one, no `socket` call and no
    /// receive is notified.
    pub reserved: Option<u32>,
    /// `bind`, `listen`, `accept`, `accept4` (`bind.rs`).
    pub bind: bool,
}

/// The filter program.
pub fn program(notified: Notified) -> Vec<sock_filter> {
    use Ins::*;
    use To::Next;
    let Notified { reserved, bind } = notified;
    let nr = |n: i64| n as u32;
    let mut table: Vec<(u32, &str)> = vec![];
    let always = [libc::SYS_connect, libc::SYS_getpeername, libc::SYS_getsockname, libc::SYS_sendmsg, libc::SYS_sendmmsg, libc::SYS_pidfd_getfd, libc::SYS_io_submit];
    for n in always {
        table.push((nr(n), "notify"));
    }
    if bind {
        for n in [libc::SYS_bind, libc::SYS_listen, libc::SYS_accept, libc::SYS_accept4] {
            table.push((nr(n), "notify"));
        }
    }
    table.push((nr(libc::SYS_io_uring_setup), "foreign"));
    table.push((nr(libc::SYS_sendto), "address"));
    if reserved.is_some() {
        table.push((nr(libc::SYS_socket), "socket"));
        let receives = [libc::SYS_read, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_recvmmsg, libc::SYS_readv, libc::SYS_preadv2, libc::SYS_splice];
        for n in receives.into_iter().chain([libc::SYS_dup]) {
            table.push((nr(n), "fd_in_range"));
        }
        table.push((nr(libc::SYS_dup3), "dup2"));
        if let Some(dup2) = DUP2 {
            table.push((nr(dup2), "dup2"));
        }
        table.push((nr(libc::SYS_fcntl), "fcntl"));
    }
    table.sort_unstable();
    // fd -1 (as u32) and above: the kernel answers EBADF by itself.
    let reserved = reserved.unwrap_or(u32::MAX);
    let mut p = vec![Ld(OFF_ARCH), Jeq(NATIVE_ARCH, Next, l("foreign")), Ld(OFF_NR), Jge(X32_SYSCALL_BIT, l("foreign"), Next)];
    dispatch(&mut p, &table, "nr");
    p.extend([
        // sendto: a null address (both halves of args[4]) is allowed.
        Label("address".into()),
        Ld(lo(4)),
        Jeq(0, Next, l("notify")),
        Ld(hi(4)),
        Jeq(0, l("allow"), l("notify")),
        // fcntl: F_DUPFD and F_DUPFD_CLOEXEC, from the range or into it.
        Label("fcntl".into()),
        Ld(lo(1)),
        Jeq(libc::F_DUPFD as u32, l("dup_into"), Next),
        Jeq(libc::F_DUPFD_CLOEXEC as u32, l("dup_into"), l("allow")),
        Label("dup_into".into()),
        Ld(lo(2)),
        Jge(reserved, l("notify"), l("fd_in_range")),
        // dup2, dup3: from the range or into it.
        Label("dup2".into()),
        Ld(lo(1)),
        Jge(reserved, l("notify"), l("fd_in_range")),
        // socket: an IPv4 or IPv6 datagram socket.
        Label("socket".into()),
        Ld(lo(0)),
        Jeq(libc::AF_INET as u32, l("datagram"), Next),
        Jeq(libc::AF_INET6 as u32, l("datagram"), l("allow")),
        Label("datagram".into()),
        Ld(lo(1)),
        And(0xf), // the type without SOCK_NONBLOCK, SOCK_CLOEXEC
        Jeq(libc::SOCK_DGRAM as u32, l("notify"), l("allow")),
        // The call's fd (args[0]) in the reserved range.
        Label("fd_in_range".into()),
        Ld(lo(0)),
        Jge(reserved, l("notify"), l("allow")),
        Label("allow".into()),
        Ret(RET_ALLOW),
        Label("notify".into()),
        Ret(RET_USER_NOTIF),
        Label("foreign".into()),
        Ret(RET_ERRNO | libc::ENOSYS as u32),
    ]);
    assemble(&p)
}

/// In the child after `fork`: no new privileges, then the filter; returns
/// the listener fd. Async-signal-safe: system calls only, on memory the
/// parent prepared (`filter`).
pub fn install(filter: &[sock_filter]) -> Result<c_int, i32> {
    let prog = sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut sock_filter };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(errno());
    }
    let mut flags = FILTER_FLAG_NEW_LISTENER | FILTER_FLAG_WAIT_KILLABLE_RECV;
    loop {
        // SAFETY: prog points to a valid program for the duration of the call.
        let fd = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog as *const sock_fprog) };
        if fd >= 0 {
            return Ok(fd as c_int);
        }
        let e = errno();
        if e == libc::EINVAL && flags & FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
            flags &= !FILTER_FLAG_WAIT_KILLABLE_RECV; // before Linux 5.19
            continue;
        }
        return Err(e);
    }
}

fn errno() -> i32 {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small interpreter for the instructions `program` uses: what the
    /// kernel would return for a call.
    fn run(p: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        run_counted(p, arch, nr, args).0
    }

    /// The answer, and how many instructions ran to it.
    fn run_counted(p: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> (u32, usize) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let ins = p[pc];
            steps += 1;
            match ins.code {
                BPF_LD_W_ABS => acc = u32::from_ne_bytes(data[ins.k as usize..ins.k as usize + 4].try_into().unwrap()),
                BPF_AND_K => acc &= ins.k,
                BPF_JEQ_K | BPF_JGE_K => {
                    let hit = if ins.code == BPF_JEQ_K { acc == ins.k } else { acc >= ins.k };
                    pc += usize::from(if hit { ins.jt } else { ins.jf });
                }
                BPF_RET_K => return (ins.k, steps),
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    const R: u32 = 768;

    #[test]
    fn decides_each_call_as_documented() {
        let p = program(Notified { reserved: Some(R), bind: true });
        let native = |nr: i64, args: [u64; 6]| run(&p, NATIVE_ARCH, nr, args);
        for nr in [libc::SYS_connect, libc::SYS_getpeername, libc::SYS_getsockname, libc::SYS_sendmsg, libc::SYS_sendmmsg, libc::SYS_pidfd_getfd, libc::SYS_io_submit] {
            assert_eq!(native(nr, [0; 6]), RET_USER_NOTIF, "nr {nr}");
        }
        for nr in [libc::SYS_bind, libc::SYS_listen, libc::SYS_accept, libc::SYS_accept4] {
            assert_eq!(native(nr, [3, 0, 0, 0, 0, 0]), RET_USER_NOTIF, "BIND: nr {nr}");
        }
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0, 0]), RET_ALLOW, "no destination");
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x7fff_0000_1000, 16]), RET_USER_NOTIF);
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x7fff_0000_0000, 16]), RET_USER_NOTIF, "low half zero");
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x1000, 16]), RET_USER_NOTIF, "high half zero");
        // Receives: only on the reserved range, recvfrom only asking for the source.
        let fd = u64::from(R);
        for nr in [libc::SYS_read, libc::SYS_readv, libc::SYS_preadv2, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_recvmmsg, libc::SYS_splice] {
            assert_eq!(native(nr, [fd, 0x1000, 10, 0, 0, 0]), RET_USER_NOTIF, "receive {nr} in the range");
            assert_eq!(native(nr, [fd + 200, 0x1000, 10, 0, 0x7fff_0000_1000, 0x2000]), RET_USER_NOTIF, "receive {nr} in the range");
            assert_eq!(native(nr, [fd - 1, 0x1000, 10, 0, 0x7fff_0000_1000, 0x2000]), RET_ALLOW, "receive {nr} below the range");
            assert_eq!(native(nr, [3, 0x1000, 10, 0, 0, 0]), RET_ALLOW, "receive {nr} below the range");
        }
        assert_eq!(native(libc::SYS_recvmsg, [u64::from(u32::MAX), 0x1000, 0, 0, 0, 0]), RET_USER_NOTIF, "fd -1: the supervisor lets the kernel say EBADF");
        // socket: IPv4/IPv6 datagram sockets only, whatever their flags.
        let dgram = libc::SOCK_DGRAM as u64;
        let flags = (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
        for (domain, ty, want) in [
            (libc::AF_INET, dgram, RET_USER_NOTIF),
            (libc::AF_INET6, dgram | flags, RET_USER_NOTIF),
            (libc::AF_INET, libc::SOCK_STREAM as u64, RET_ALLOW),
            (libc::AF_INET6, libc::SOCK_STREAM as u64 | flags, RET_ALLOW),
            (libc::AF_UNIX, dgram, RET_ALLOW),
            (libc::AF_NETLINK, libc::SOCK_RAW as u64, RET_ALLOW),
        ] {
            assert_eq!(native(libc::SYS_socket, [domain as u64, ty, 0, 0, 0, 0]), want, "socket({domain}, {ty:#x})");
        }
        // Copies from the range, and into it.
        assert_eq!(native(libc::SYS_dup, [fd, 0, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(native(libc::SYS_dup, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(native(libc::SYS_dup3, [fd, 4, 0, 0, 0, 0]), RET_USER_NOTIF, "out of the range");
        assert_eq!(native(libc::SYS_dup3, [3, fd, 0, 0, 0, 0]), RET_USER_NOTIF, "into the range");
        assert_eq!(native(libc::SYS_dup3, [3, 4, 0, 0, 0, 0]), RET_ALLOW);
        if let Some(dup2) = DUP2 {
            assert_eq!(native(dup2, [fd, 4, 0, 0, 0, 0]), RET_USER_NOTIF);
            assert_eq!(native(dup2, [3, 4, 0, 0, 0, 0]), RET_ALLOW);
        }
        for cmd in [libc::F_DUPFD, libc::F_DUPFD_CLOEXEC] {
            assert_eq!(native(libc::SYS_fcntl, [fd, cmd as u64, 0, 0, 0, 0]), RET_USER_NOTIF);
            assert_eq!(native(libc::SYS_fcntl, [3, cmd as u64, fd, 0, 0, 0]), RET_USER_NOTIF, "into the range");
            assert_eq!(native(libc::SYS_fcntl, [3, cmd as u64, 10, 0, 0, 0]), RET_ALLOW);
        }
        assert_eq!(native(libc::SYS_fcntl, [fd, libc::F_GETFL as u64, 0, 0, 0, 0]), RET_ALLOW, "other fcntls");
        for nr in [libc::SYS_write, libc::SYS_pread64, libc::SYS_getpid, libc::SYS_close, libc::SYS_sendfile] {
            assert_eq!(native(nr, [fd, 0, 0, 0, 0, 0]), RET_ALLOW, "nr {nr}");
        }
        assert_eq!(native(libc::SYS_io_uring_setup, [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(native(libc::SYS_connect | X32_SYSCALL_BIT as i64, [0; 6]), RET_ERRNO | libc::ENOSYS as u32, "x32");
        assert_eq!(run(&p, 0x4000_0003, 102, [0; 6]), RET_ERRNO | libc::ENOSYS as u32, "i386 socketcall");
    }

    /// Every system call number the filter does not name is let through,
    /// whatever its arguments; the ones it names are decided as above.
    #[test]
    fn every_other_call_is_allowed() {
        let p = program(Notified { reserved: Some(R), bind: true });
        let named = [
            libc::SYS_connect, libc::SYS_getpeername, libc::SYS_sendmsg, libc::SYS_sendmmsg, libc::SYS_pidfd_getfd, libc::SYS_io_submit,
            libc::SYS_bind, libc::SYS_listen, libc::SYS_getsockname, libc::SYS_accept, libc::SYS_accept4, libc::SYS_io_uring_setup,
            libc::SYS_sendto, libc::SYS_socket, libc::SYS_read, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_recvmmsg, libc::SYS_readv,
            libc::SYS_preadv2, libc::SYS_splice, libc::SYS_dup, libc::SYS_dup3, libc::SYS_fcntl,
        ];
        let fd = u64::from(R);
        for n in 0..1000i64 {
            if named.contains(&n) || DUP2 == Some(n) {
                continue;
            }
            for args in [[fd, 0x1000, fd, 0, 0x7fff_0000_1000, 16], [3, libc::SOCK_DGRAM as u64, 0, 0, 0, 0], [u64::MAX; 6]] {
                assert_eq!(run(&p, NATIVE_ARCH, n, args), RET_ALLOW, "nr {n} {args:?}");
            }
        }
        // The binary search: a call the filter does not name runs at most
        // 15 instructions (the filter before the reserved range: 13, with
        // 11 calls named).
        let most = (0..1000).map(|n| run_counted(&p, NATIVE_ARCH, n, [3, 0, 0, 0, 0, 0]).1).max().unwrap();
        assert!(most <= 15, "{most} instructions");
    }

    #[test]
    fn without_a_range_no_receive_and_no_socket_is_notified() {
        let p = program(Notified { reserved: None, bind: false });
        let native = |nr: i64, args: [u64; 6]| run(&p, NATIVE_ARCH, nr, args);
        assert_eq!(native(libc::SYS_socket, [libc::AF_INET as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0]), RET_ALLOW);
        for fd in [3, 900, 4000, i32::MAX as u64] {
            for nr in [libc::SYS_read, libc::SYS_readv, libc::SYS_preadv2, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_recvmmsg, libc::SYS_dup] {
                assert_eq!(native(nr, [fd, 0x1000, 10, 0, 0x7fff_0000_1000, 0x2000]), RET_ALLOW, "nr {nr} fd {fd}");
            }
        }
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x7fff_0000_1000, 16]), RET_USER_NOTIF);
        assert_eq!(native(libc::SYS_connect, [3, 0, 0, 0, 0, 0]), RET_USER_NOTIF);
        for nr in [libc::SYS_bind, libc::SYS_listen, libc::SYS_accept, libc::SYS_accept4] {
            assert_eq!(native(nr, [3, 0, 0, 0, 0, 0]), RET_ALLOW, "SOCKSIFY_BIND=off: nr {nr}");
        }
        assert_eq!(native(libc::SYS_getsockname, [3, 0, 0, 0, 0, 0]), RET_USER_NOTIF, "getsockname: the other family's sockets");
    }
}
