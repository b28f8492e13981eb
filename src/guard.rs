//! Re-entrancy guard: while a thread runs our code, our hooks do not run a
//! second time. Our own sockets and look-ups (and anything libc or std does
//! on our behalf) must never be proxied twice.
//!
//! A nested call has two possible sources, and they are treated apart:
//! libc's resolver, which a resolver hook calls for names that resolve
//! locally (an NSS module may connect on its own: that goes direct, as the
//! look-up does), and a signal handler that interrupted the shim on this
//! thread (`connect` and `sendto` are async-signal-safe). The second must
//! not go direct to a destination that should be proxied, and cannot use
//! our tables, which the interrupted code may be changing: it fails with
//! `EINTR` ([`nested_may_go_direct`]).

use std::cell::Cell;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// Set while libc's resolver runs on our behalf (see [`as_resolver`]).
    static IN_RESOLVER: Cell<bool> = const { Cell::new(false) };
}

/// Proof that this thread is inside the shim; leaving drops it.
pub struct Inside(());

/// Enters the shim, or `None` if this thread already is inside (or is being
/// torn down and has no thread-locals left).
pub fn enter() -> Option<Inside> {
    // `then`, not `then_some`: an `Inside` built for a refused entry would
    // be dropped at once, and its drop would clear the flag of the entry
    // that is still running.
    INSIDE.try_with(|inside| (!inside.replace(true)).then(|| Inside(()))).ok().flatten()
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|inside| inside.set(false));
    }
}

/// Marks this thread as running libc's resolver for us until dropped, then
/// restores what was there (also when the marked code panics).
struct ResolverMark(bool);

impl ResolverMark {
    fn set() -> ResolverMark {
        ResolverMark(IN_RESOLVER.try_with(|r| r.replace(true)).unwrap_or(false))
    }
}

impl Drop for ResolverMark {
    fn drop(&mut self) {
        let _ = IN_RESOLVER.try_with(|r| r.set(self.0));
    }
}

/// [`enter`] for the resolver hooks: for as long as the entry lasts, nested
/// calls come from libc's resolver (see the module doc).
pub fn enter_resolver() -> Option<InsideResolver> {
    let inside = enter()?;
    Some(InsideResolver { _mark: ResolverMark::set(), _inside: inside })
}

/// An entry of a resolver hook; leaving drops it.
pub struct InsideResolver {
    // Dropped in order: the mark first, then the entry.
    _mark: ResolverMark,
    _inside: Inside,
}

/// Runs `f`, a call into libc's resolver, marked as such: calls it makes
/// into our hooks pass to libc (see the module doc).
pub fn as_resolver<R>(f: impl FnOnce() -> R) -> R {
    let _mark = ResolverMark::set();
    f()
}

/// For a hook that found the shim already entered on this thread: whether
/// the nested call comes from libc's resolver working for us (it may go
/// to libc as it is), rather than from a signal handler (it must not).
pub fn nested_may_go_direct() -> bool {
    IN_RESOLVER.try_with(Cell::get).unwrap_or(false)
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

    #[test]
    fn only_the_resolver_may_go_direct_when_nested() {
        assert!(!super::nested_may_go_direct());
        assert!(super::as_resolver(super::nested_may_go_direct));
        assert!(!super::nested_may_go_direct());
    }
}
