//! Which `read` and `write` closures this thread is running, so that a call that could only
//! wait for one of them fails at once with [`Error::Reentrant`](crate::Error::Reentrant)
//! instead of waiting out its timeout. It belongs to the layer that owns writes: the pool
//! below knows nothing of closures or writer lanes.

use crate::sync::{ScopeGuard, defer};

thread_local! {
    /// The closures this thread is running, innermost last: their database's key (see
    /// `Pool::key`), and whether it is a `write` (which holds the writer lane). Each holds one
    /// connection.
    static INSIDE: std::cell::RefCell<Vec<(usize, bool)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks this thread as running a `read` (`lane` false) or `write` closure of the database
/// `key` until the guard drops.
#[inline]
pub(crate) fn enter(key: usize, lane: bool) -> ScopeGuard<impl FnOnce()> {
    INSIDE.with_borrow_mut(|inside| inside.push((key, lane)));
    defer(|| {
        INSIDE.with_borrow_mut(|inside| inside.pop());
    })
}

/// True when this thread is running a `write` closure of the database `key`.
#[inline]
pub(crate) fn inside_write(key: usize) -> bool {
    INSIDE.with_borrow(|inside| inside.iter().any(|&(k, lane)| lane && k == key))
}

/// True when this thread runs no `read` or `write` closure of any database.
#[inline]
pub(crate) fn outside_closures() -> bool {
    INSIDE.with_borrow(Vec::is_empty)
}

/// How many connections of the database `key` this thread's closures hold.
pub(crate) fn connections_held(key: usize) -> usize {
    INSIDE.with_borrow(|inside| inside.iter().filter(|(k, _)| *k == key).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a guard that does not pop its entry (a later call refused for a closure
    /// long ended), or a read counted as holding the writer lane.
    #[test]
    fn entries_last_as_long_as_their_guards() {
        assert_eq!(connections_held(1), 0);
        {
            let _read = enter(1, false);
            assert!(!inside_write(1));
            {
                let _write = enter(1, true);
                let _other = enter(2, true);
                assert!(inside_write(1) && inside_write(2));
                assert_eq!(connections_held(1), 2);
            }
            assert!(!inside_write(1) && !inside_write(2));
            assert_eq!(connections_held(1), 1);
        }
        assert_eq!(connections_held(1), 0);
    }
}
