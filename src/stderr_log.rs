//! Our logger: `SOCKSIFY_LOG` filters (env_logger's syntax, via its env_filter crate), each line goes
//! to stderr in one `write(2)`.
//!
//! Not env_logger's writer: it takes std's stderr lock, and a thread that
//! held it when another forked would leave the child's first log line
//! waiting forever. One write per line needs no lock, and lines from many
//! threads or processes stay whole.

use env_filter::{Builder, Filter};
use log::{Log, Metadata, Record};

struct StderrLog {
    filter: Filter,
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        // SAFETY: getpid has no preconditions; read per line so a forked
        // child logs its own pid.
        let pid = unsafe { libc::getpid() };
        let line = format!("socksify[{pid}] {}: {}\n", record.level().as_str().to_ascii_lowercase(), record.args());
        let mut bytes = line.as_bytes();
        while !bytes.is_empty() {
            // SAFETY: writing our own buffer to fd 2; the real write, so a
            // hooked write cannot see it.
            let n = unsafe { crate::real::write(2, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
            if n <= 0 {
                break; // stderr closed or full: drop the line rather than block or spin
            }
            bytes = &bytes[n as usize..];
        }
    }

    fn flush(&self) {}
}

/// Installs the logger with `spec`, the value of `SOCKSIFY_LOG` (`None`: `warn`).
pub fn init(spec: Option<String>) {
    let filter = Builder::new().parse(spec.as_deref().unwrap_or("warn")).build();
    let max = filter.filter();
    if log::set_boxed_logger(Box::new(StderrLog { filter })).is_ok() {
        log::set_max_level(max);
    }
}
