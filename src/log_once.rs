//! Messages logged at warn the first time and at debug after that: a
//! program that retries a refused send must not flood its stderr. The
//! memory of what was said is bounded (a program that sends to ever new
//! destinations must not grow it without end): past [`REMEMBERED`]
//! messages the oldest is forgotten, and said once more if it comes again.

use crate::fork_safe::ForkSafeMutex;
use std::collections::{HashSet, VecDeque};

/// How many distinct messages are remembered.
const REMEMBERED: usize = 256;

/// Logs `msg` at warn the first time (of the last [`REMEMBERED`]), at debug afterwards.
pub fn log_once(msg: String) {
    static SEEN: ForkSafeMutex<Option<Recent>> = ForkSafeMutex::new(None);
    let first = SEEN.lock().get_or_insert_with(Recent::default).first_time(&msg);
    if first {
        log::warn!("{msg}");
    } else {
        log::debug!("{msg}");
    }
}

/// The last [`REMEMBERED`] distinct messages, oldest first in `order`.
#[derive(Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// Whether `msg` is not among the remembered ones; remembers it.
    fn first_time(&mut self, msg: &str) -> bool {
        if self.set.contains(msg) {
            return false;
        }
        if self.order.len() == REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.set.insert(msg.to_owned());
        self.order.push_back(msg.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_recognized_and_the_memory_stays_bounded() {
        let mut recent = Recent::default();
        assert!(recent.first_time("udp to 192.0.2.1:53 refused"));
        assert!(!recent.first_time("udp to 192.0.2.1:53 refused"));
        for i in 0..10 * REMEMBERED {
            assert!(recent.first_time(&format!("udp to 10.0.{}.{}:9 refused", i / 256, i % 256)));
            assert!(!recent.first_time(&format!("udp to 10.0.{}.{}:9 refused", i / 256, i % 256)));
        }
        assert!(recent.set.len() <= REMEMBERED && recent.order.len() <= REMEMBERED, "{} remembered", recent.set.len());
        // The oldest were forgotten: said once more.
        assert!(recent.first_time("udp to 192.0.2.1:53 refused"));
    }
}
