//! Which `addrinfo` lists are ours: every list our `getaddrinfo` hands out
//! is registered by its head until the program gives it back, so
//! `freeaddrinfo` frees ours and hands libc's to libc. Only the heads are
//! kept here; laying out and freeing a list is the hook's
//! (`hooks/resolve/addrinfo.rs`).

use crate::fork_safe::ForkSafeMutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Heads of the lists we handed out and that are not freed yet.
static OURS: ForkSafeMutex<Option<HashSet<usize>>> = ForkSafeMutex::new(None);
/// How many there are: `freeaddrinfo` skips the lock while there are none.
static OURS_LIVE: AtomicUsize = AtomicUsize::new(0);

/// Registers `head`, a list we built and are handing out.
pub fn register(head: *const libc::addrinfo) {
    if OURS.lock().get_or_insert_with(HashSet::new).insert(head as usize) {
        OURS_LIVE.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `head` is a list we handed out; if so it is ours no longer
/// (the caller frees it). One atomic load while we have none out.
pub fn take_back(head: *const libc::addrinfo) -> bool {
    if OURS_LIVE.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let ours = OURS.lock().as_mut().is_some_and(|set| set.remove(&(head as usize)));
    if ours {
        OURS_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_head_is_taken_back_once_and_others_never() {
        let (a, b) = (Box::new(0u64), Box::new(0u64));
        let (a, b) = (&*a as *const u64 as *const libc::addrinfo, &*b as *const u64 as *const libc::addrinfo);
        assert!(!take_back(a), "nothing registered");
        register(a);
        assert!(!take_back(b), "not ours");
        assert!(take_back(a));
        assert!(!take_back(a), "given back once");
    }
}
