//! Re-entrancy guard: while a thread runs our code, our hooks pass every
//! call straight to libc. Our own sockets and look-ups (and anything libc or
//! std does on our behalf) must never be proxied a second time.

use std::cell::Cell;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Proof that this thread is inside the shim; leaving drops it.
pub struct Inside(());

/// Enters the shim, or `None` if this thread already is inside (or is being
/// torn down and has no thread-locals left).
pub fn enter() -> Option<Inside> {
    // `then`, not `then_some`: an `Inside` built for a refused entry would
    // be dropped at once, and its drop would clear the flag of the entry
    // that is still running.
    let entered = INSIDE.try_with(|inside| (!inside.replace(true)).then(|| Inside(()))).ok().flatten();
    if entered.is_some() {
        // Closes a signal handler could not finish (see fd_table::forget_closed).
        crate::fd_table::release_pending();
    }
    entered
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|inside| inside.set(false));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nested_entry_is_refused() {
        let outer = super::enter().expect("first entry");
        assert!(super::enter().is_none());
        assert!(super::enter().is_none(), "a refused entry must not clear the flag");
        drop(outer);
        assert!(super::enter().is_some());
    }
}
