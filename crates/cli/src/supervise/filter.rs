//! The seccomp filter the supervised program runs under, and installing it
//! (in the child, between `fork` and `execve`).
//!
//! Notified (one round trip to the supervisor): `connect`, `getpeername`,
//! `sendmsg`, `sendmmsg`, `sendto` with a destination address (a `sendto` without
//! one, as on any connected socket, is decided in the kernel: allowed),
//! `recvfrom` asking for the source address (for answers to DNS queries sent
//! unconnected, see `sent_dns.rs`, and datagrams of a UDP association,
//! `udp.rs`; TCP's `recv` passes none and stays in the kernel), and
//! `recvmsg` (whose address sits in a `msghdr` the filter cannot read: the
//! supervisor lets the kernel run it at once when it has no association).
//! `io_uring_setup` fails with ENOSYS: io_uring's own connect and sendmsg
//! never pass through a filter, so programs must fall back to plain calls.
//! Everything else is allowed in the kernel and costs a few BPF
//! instructions. A call of a foreign ABI (32-bit x86, x32) fails with
//! ENOSYS: its numbers are not the ones checked here.

use libc::{c_int, sock_filter, sock_fprog};

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
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
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter program. Jumps are relative; the three returns sit at the end
/// in a fixed order, so each jump counts the instructions up to its return.
pub fn program() -> Vec<sock_filter> {
    let notify_calls = [libc::SYS_connect, libc::SYS_getpeername, libc::SYS_sendmsg, libc::SYS_sendmmsg, libc::SYS_recvmsg];
    // Notified only when their address argument (args[4]) is not null.
    let addr_calls = [libc::SYS_sendto, libc::SYS_recvfrom];
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, NATIVE_ARCH, 0, 0), // jf patched: to FOREIGN
        stmt(BPF_LD_W_ABS, OFF_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 0), // jt patched: to FOREIGN
    ];
    for nr in notify_calls {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 0)); // jt patched: to NOTIFY
    }
    p.push(jump(BPF_JEQ_K, libc::SYS_io_uring_setup as u32, 0, 0)); // jt: to FOREIGN (ENOSYS)
    for nr in addr_calls {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 0)); // jt patched: to the address check
    }
    p.push(stmt(BPF_RET_K, RET_ALLOW)); // any other call
    // sendto, recvfrom: a null address (both halves of args[4]) is allowed.
    let check = p.len();
    p.push(stmt(BPF_LD_W_ABS, off_arg_lo(4)));
    p.push(jump(BPF_JEQ_K, 0, 0, 0)); // jf: to NOTIFY
    p.push(stmt(BPF_LD_W_ABS, off_arg_lo(4) + 4));
    p.push(jump(BPF_JEQ_K, 0, 0, 0)); // jt: ALLOW (next), jf: NOTIFY
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    let notify = p.len();
    p.push(stmt(BPF_RET_K, RET_USER_NOTIF));
    let foreign = p.len();
    p.push(stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32));
    let to = |from: usize, target: usize| (target - from - 1) as u8;
    p[1].jf = to(1, foreign);
    p[3].jt = to(3, foreign);
    for (i, ins) in p.iter_mut().enumerate().skip(4).take(notify_calls.len()) {
        ins.jt = to(i, notify);
    }
    let uring = 4 + notify_calls.len();
    p[uring].jt = to(uring, foreign);
    for (i, ins) in p.iter_mut().enumerate().skip(uring + 1).take(addr_calls.len()) {
        ins.jt = to(i, check);
    }
    p[check + 1].jf = to(check + 1, notify);
    p[check + 3].jf = to(check + 3, notify);
    p
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
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = p[pc];
            match ins.code {
                BPF_LD_W_ABS => acc = u32::from_ne_bytes(data[ins.k as usize..ins.k as usize + 4].try_into().unwrap()),
                BPF_JEQ_K | BPF_JGE_K => {
                    let hit = if ins.code == BPF_JEQ_K { acc == ins.k } else { acc >= ins.k };
                    pc += usize::from(if hit { ins.jt } else { ins.jf });
                }
                BPF_RET_K => return ins.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn decides_each_call_as_documented() {
        let p = program();
        let native = |nr: i64, args: [u64; 6]| run(&p, NATIVE_ARCH, nr, args);
        for nr in [libc::SYS_connect, libc::SYS_getpeername, libc::SYS_sendmsg, libc::SYS_sendmmsg, libc::SYS_recvmsg] {
            assert_eq!(native(nr, [0; 6]), RET_USER_NOTIF, "nr {nr}");
        }
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0, 0]), RET_ALLOW, "no destination");
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x7fff_0000_1000, 16]), RET_USER_NOTIF);
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x7fff_0000_0000, 16]), RET_USER_NOTIF, "low half zero");
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 10, 0, 0x1000, 16]), RET_USER_NOTIF, "high half zero");
        assert_eq!(native(libc::SYS_recvfrom, [3, 0x1000, 10, 0, 0, 0]), RET_ALLOW, "recv: no address asked for");
        assert_eq!(native(libc::SYS_recvfrom, [3, 0x1000, 10, 0, 0x7fff_0000_1000, 0x7fff_0000_2000]), RET_USER_NOTIF);
        assert_eq!(native(libc::SYS_recvfrom, [3, 0x1000, 10, 0, 0x7fff_0000_0000, 0x2000]), RET_USER_NOTIF, "low half zero");
        assert_eq!(native(libc::SYS_recvfrom, [3, 0x1000, 10, 0, 0x1000, 0x2000]), RET_USER_NOTIF, "high half zero");
        for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_socket, libc::SYS_recvmmsg, libc::SYS_getpid, libc::SYS_getsockname] {
            assert_eq!(native(nr, [0; 6]), RET_ALLOW, "nr {nr}");
        }
        assert_eq!(native(libc::SYS_io_uring_setup, [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(native(libc::SYS_connect | X32_SYSCALL_BIT as i64, [0; 6]), RET_ERRNO | libc::ENOSYS as u32, "x32");
        assert_eq!(run(&p, 0x4000_0003, 102, [0; 6]), RET_ERRNO | libc::ENOSYS as u32, "i386 socketcall");
    }
}
