//! One connection's checkout record: when and where it was checked out, published with plain
//! atomic stores by its owner and read by `close` and the leak scanner; and whether a borrower
//! changed its session (set by its authorizer, `session.rs`).

use std::panic::Location;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::{Duration, Instant};

use crate::clock::{AtomicStamp, Stamp};
use crate::sync::lock;

/// A checkout still out, as `close` and the leak scanner see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkout {
    pub(super) at: Instant,
    pub(super) site: &'static Location<'static>,
}

/// One live connection's public face: what the leak scanner and `close` can see of it, and
/// the mark its authorizer sets (`session.rs`). The owner writes it with plain atomic stores
/// on checkout and return; the site sits behind a mutex that is only taken when a connection
/// is checked out from a new place. The mark lives here rather than in an allocation of its
/// own because the return path reads this cache line anyway: a separate one cost the
/// checkout bench about 10% of its median.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    /// Unique among the pool's live connections, from 0: the connection's place in the bag.
    index: usize,
    /// When the current checkout began; `None` while idle.
    checked_out_at: AtomicStamp,
    /// The `checked_out_at` of the checkout last reported as a leak.
    leak_reported: AtomicStamp,
    site: Mutex<Option<&'static Location<'static>>>,
    /// Set once a statement that changes the connection's session has been prepared on it.
    session_changed: AtomicBool,
    /// Set as its connection starts closing: its index may go to a new connection then,
    /// while `close` still waits for this one to be closed.
    closing: AtomicBool,
}

impl ConnSlot {
    pub(super) fn new(index: usize) -> Self {
        Self {
            index,
            checked_out_at: AtomicStamp::default(),
            leak_reported: AtomicStamp::default(),
            site: Mutex::new(None),
            session_changed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    /// The connection's place in the bag.
    #[inline]
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// Publishes a checkout. `last_site` is the owner's copy of the site in the slot.
    #[inline]
    pub(super) fn check_out(
        &self,
        at: Stamp,
        site: &'static Location<'static>,
        last_site: &mut Option<&'static Location<'static>>,
    ) {
        if !last_site.is_some_and(|s| std::ptr::eq(s, site)) {
            *lock(&self.site) = Some(site);
            *last_site = Some(site);
        }
        // A swap, `SeqCst`, not a store: `close` marks the pool closed and then looks at
        // the slots, a checkout marks its slot and then looks at `closed` (see
        // `Pool::handed_out`); with both sides `SeqCst`, one sees the other.
        self.checked_out_at.swap(Some(at), SeqCst);
    }

    /// Marks the connection returned at `now`: how long the checkout lasted (`None` if it
    /// was not checked out), and the checkout if it had been reported leaked.
    #[inline]
    pub(super) fn check_in(&self, now: Stamp) -> (Option<Duration>, Option<Checkout>) {
        let Some(at) = self.checked_out_at.load(Relaxed) else {
            return (None, None);
        };
        self.checked_out_at.store(None, Release);
        let held = Duration::from_nanos(now.nanos_since(at));
        if self.leak_reported.load(Relaxed) == Some(at) {
            return (Some(held), self.checkout_at(at));
        }
        (Some(held), None)
    }

    /// Whether a checkout is in progress.
    pub(super) fn is_checked_out(&self) -> bool {
        self.checked_out_at.load(Relaxed).is_some()
    }

    fn checkout_at(&self, at: Stamp) -> Option<Checkout> {
        (*lock(&self.site)).map(|site| Checkout {
            at: at.instant(),
            site,
        })
    }

    /// Marks the connection as not to be pooled again. Relaxed, as the read: the authorizer
    /// runs on the thread that holds the connection, and handing a connection to another
    /// thread orders what was done to it.
    /// Its connection is closing (see the field).
    pub(super) fn mark_closing(&self) {
        self.closing.store(true, Release);
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Acquire)
    }

    pub(super) fn mark_session_changed(&self) {
        self.session_changed.store(true, Relaxed);
    }

    /// Whether a borrower changed the connection's session.
    #[inline]
    pub(super) fn session_changed(&self) -> bool {
        self.session_changed.load(Relaxed)
    }

    /// The checkout in progress, if any.
    pub(super) fn checkout(&self) -> Option<Checkout> {
        self.checked_out_at
            .load(SeqCst)
            .and_then(|at| self.checkout_at(at))
    }

    /// For a checkout in progress that has been out at least `threshold`: `Some(Some(it))`
    /// the first time it is seen so (it is marked as reported), `Some(None)` after that.
    pub(super) fn report_leak(
        &self,
        now: Instant,
        threshold: Duration,
    ) -> Option<Option<Checkout>> {
        let at = self.checked_out_at.load(Acquire)?;
        if now.saturating_duration_since(at.instant()) < threshold {
            return None;
        }
        if self.leak_reported.swap(Some(at), Relaxed) == Some(at) {
            return Some(None);
        }
        Some(self.checkout_at(at))
    }
}
