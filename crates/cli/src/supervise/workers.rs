//! Threads for calls answered after round trips to the proxy (a
//! handshake): kept for reuse, so a connect does not pay for a new thread
//! (×1.10–1.13 supervised connects per second, scripts/bench-supervise).
//! A job runs on an idle worker if there is one, else on a new one (as
//! many at once as calls wait: one slow handshake never holds up
//! another); a worker idle for 10 seconds exits. A wait for a datagram or
//! a peer keeps a thread of its own: on a worker, UDP request/response ran
//! ×0.8 (a new thread's first `poll` comes late enough to find the
//! datagram there; a worker's sleeps and is woken).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue { jobs: VecDeque::new(), idle: 0 });
static READY: Condvar = Condvar::new();

const IDLE_FOR: Duration = Duration::from_secs(10);

/// Runs `job` on a worker thread.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
    let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    if q.idle > q.jobs.len() {
        q.jobs.push_back(Box::new(job));
        drop(q); // the worker woken takes the lock next
        READY.notify_one();
        return;
    }
    drop(q);
    std::thread::spawn(move || {
        job();
        work();
    });
}

/// A worker's life after its first job: the next ones, until idle too long.
fn work() {
    let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job();
            q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        q.idle += 1;
        let (next, timeout) = READY.wait_timeout(q, IDLE_FOR).unwrap_or_else(|e| e.into_inner());
        q = next;
        q.idle -= 1;
        if timeout.timed_out() && q.jobs.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn every_job_runs_and_a_slow_one_holds_up_no_other() {
        let (tx, rx) = mpsc::channel();
        let (release, wait) = mpsc::channel::<()>();
        // A job that blocks until released: the others must still run.
        let blocked = tx.clone();
        spawn(move || {
            let _ = wait.recv_timeout(Duration::from_secs(30));
            blocked.send(usize::MAX).unwrap();
        });
        for i in 0..50 {
            let tx = tx.clone();
            spawn(move || tx.send(i).unwrap());
        }
        let mut got: Vec<usize> = (0..50).map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("a job ran")).collect();
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        release.send(()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(usize::MAX));
    }
}
