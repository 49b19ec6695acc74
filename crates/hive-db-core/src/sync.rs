//! Helpers every other module uses: a mutex lock that ignores poisoning, a guard that runs a
//! closure when dropped, and a caught panic's message.
//!
//! Poisoning is ignored because every mutex here guards data that stays consistent between
//! statements (a queue, a list of slots, a last error): a panic elsewhere does not leave it
//! half-written, and refusing to lock it would turn one panic into many.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `m`, taking the data even if a panicking thread held the lock.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv` for at most `timeout`, like [`Condvar::wait_timeout`], ignoring poisoning.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

/// Runs its closure when dropped, also while unwinding.
#[must_use = "the closure runs when the guard is dropped"]
pub(crate) struct ScopeGuard<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> std::fmt::Debug for ScopeGuard<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeGuard").finish_non_exhaustive()
    }
}

impl<F: FnOnce()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// A guard that runs `f` when dropped.
pub(crate) fn defer<F: FnOnce()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(Some(f))
}

/// The message of a caught panic, when it is a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Waits up to `wait` for the thread of `handle` to end, and joins it if it did; one still
/// running is left to end on its own.
#[cfg(feature = "postgres")]
pub(crate) fn join_within(handle: std::thread::JoinHandle<()>, wait: std::time::Duration) {
    let deadline = std::time::Instant::now() + wait;
    while !handle.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// Bug caught: the guard's closure skipped when the scope unwinds, or run twice.
    #[test]
    fn the_guard_runs_once_also_on_unwind() {
        let runs = AtomicU32::new(0);
        drop(defer(|| {
            runs.fetch_add(1, Relaxed);
        }));
        let unwound = std::panic::catch_unwind(|| {
            let _guard = defer(|| {
                runs.fetch_add(1, Relaxed);
            });
            panic!("unwinding");
        });
        assert!(unwound.is_err());
        assert_eq!(runs.load(Relaxed), 2);
    }

    /// Bug caught: a lock that panics (or deadlocks) after another thread panicked with it.
    #[test]
    fn a_poisoned_lock_still_locks() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _held = m.lock();
            panic!("poison");
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
