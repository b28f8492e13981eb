//! Reused threads for sessions and relay directions.
//!
//! Promise: a job submitted with [`run`] starts at once, on an idle thread
//! when one is waiting, else on a new thread; it is never queued behind
//! another job. A thread that found no work for [`IDLE`] exits, and at most
//! [`MAX_IDLE`] threads wait at a time, so an idle server holds few threads.
//! A panicking job ends only its own thread.

use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How long a thread waits for a job before it exits.
pub const IDLE: Duration = Duration::from_secs(10);
/// The most threads kept waiting; a thread finishing a job beyond that exits.
pub const MAX_IDLE: usize = 64;
/// Stack size of every pool thread (a session's handshake and relay need little).
const STACK: usize = 512 * 1024;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    /// Jobs handed to an idle thread and not yet picked up.
    jobs: VecDeque<Job>,
    /// Threads waiting for a job, minus the jobs already promised to them.
    idle: usize,
}

struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

impl Pool {
    fn new() -> Pool {
        Pool { state: Mutex::new(State { jobs: VecDeque::new(), idle: 0 }), wake: Condvar::new() }
    }
}

/// Runs `job` on an idle pool thread, or on a new one when none is idle.
/// Fails only when a thread is needed and cannot be created.
pub fn run(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    static POOL: OnceLock<Pool> = OnceLock::new();
    run_on(POOL.get_or_init(Pool::new), job)
}

fn run_on(pool: &'static Pool, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    {
        let mut st = pool.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.idle > 0 {
            st.idle -= 1;
            st.jobs.push_back(Box::new(job));
            drop(st);
            pool.wake.notify_one();
            return Ok(());
        }
    }
    std::thread::Builder::new().stack_size(STACK).spawn(move || {
        job();
        worker(pool);
    })?;
    Ok(())
}

/// Waits for jobs and runs them until idle for [`IDLE`].
fn worker(pool: &'static Pool) {
    loop {
        let job = {
            let mut st = pool.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.idle >= MAX_IDLE {
                return;
            }
            st.idle += 1;
            loop {
                if let Some(job) = st.jobs.pop_front() {
                    break job; // the submitter already took us off `idle`
                }
                let (next, timeout) = pool.wake.wait_timeout(st, IDLE).unwrap_or_else(|e| e.into_inner());
                st = next;
                if timeout.timed_out() && st.jobs.is_empty() {
                    st.idle -= 1;
                    return;
                }
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn run(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        run_on(pool(), job)
    }

    /// A pool of this test's own, so other tests cannot take its threads.
    fn pool() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::new)
    }

    #[test]
    fn jobs_run_concurrently_and_threads_are_reused() {
        // Two jobs that each wait for the other: they must run at the same time.
        let (a_tx, a_rx) = mpsc::channel();
        let (b_tx, b_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let d1 = done_tx.clone();
        run(move || {
            a_tx.send(()).unwrap();
            b_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            d1.send(std::thread::current().id()).unwrap();
        })
        .unwrap();
        let d2 = done_tx.clone();
        run(move || {
            b_tx.send(()).unwrap();
            a_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            d2.send(std::thread::current().id()).unwrap();
        })
        .unwrap();
        let first = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(first, second);
        // Once both are idle again, later jobs run on those same threads.
        for _ in 0..100 {
            if pool().state.lock().unwrap().idle >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let d3 = done_tx.clone();
        run(move || d3.send(std::thread::current().id()).unwrap()).unwrap();
        let third = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(third == first || third == second, "an idle thread was reused");
    }
}
