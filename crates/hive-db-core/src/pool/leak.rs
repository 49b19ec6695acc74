//! Leak tracking: each live connection's public face (when and where it was checked out),
//! and the scanner that reports holds longer than `leak_threshold`.

use std::panic::Location;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use scheduled_thread_pool::JobHandle;

use super::maintenance;
use super::shared::PoolShared;
use crate::clock::{AtomicStamp, Stamp};
use crate::sync::lock;

/// A checkout still out, as `close` and the leak scanner see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkout {
    pub(super) at: Instant,
    pub(super) site: &'static Location<'static>,
}

/// One live connection's public face: what the leak scanner and `close` can see of it. The
/// owner writes it with plain atomic stores on checkout and return; the site sits behind a
/// mutex that is only taken when a connection is checked out from a new place.
#[derive(Debug, Default)]
pub(crate) struct ConnSlot {
    /// When the current checkout began; `None` while idle.
    checked_out_at: AtomicStamp,
    /// The `checked_out_at` of the checkout last reported as a leak.
    leak_reported: AtomicStamp,
    site: Mutex<Option<&'static Location<'static>>>,
}

impl ConnSlot {
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
        self.checked_out_at.store(Some(at), Release);
    }

    /// Marks the connection returned; gives back the checkout if it had been reported leaked.
    #[inline]
    pub(super) fn check_in(&self) -> Option<Checkout> {
        let at = self.checked_out_at.load(Relaxed);
        self.checked_out_at.store(None, Release);
        match at {
            Some(at) if self.leak_reported.load(Relaxed) == Some(at) => self.checkout_at(at),
            _ => None,
        }
    }

    fn checkout_at(&self, at: Stamp) -> Option<Checkout> {
        (*lock(&self.site)).map(|site| Checkout {
            at: at.instant(),
            site,
        })
    }

    /// The checkout in progress, if any.
    pub(super) fn checkout(&self) -> Option<Checkout> {
        self.checked_out_at
            .load(Acquire)
            .and_then(|at| self.checkout_at(at))
    }

    /// For a checkout in progress that has been out at least `threshold`: `Some(Some(it))`
    /// the first time it is seen so (it is marked as reported), `Some(None)` after that.
    fn report_leak(&self, now: Instant, threshold: Duration) -> Option<Option<Checkout>> {
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

/// Scans the pool's connections every half `threshold` (5 ms to 1 s), reports, once each,
/// checkouts held longer than `threshold`, and counts those held past it now (the gauge the
/// snapshot shows, so a leak that was given back stops showing at the next scan). Stops by
/// itself once the pool is gone.
pub(super) fn spawn_scanner(shared: Weak<PoolShared>, threshold: Duration) -> JobHandle {
    let period = (threshold / 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
    maintenance::every(period, move || {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut held_past = 0u32;
        for slot in shared.slots().iter() {
            let Some(first_seen) = slot.report_leak(now, threshold) else {
                continue;
            };
            held_past = held_past.saturating_add(1);
            if let Some(leak) = first_seen {
                shared.counters().leaks.fetch_add(1, Relaxed);
                tracing::warn!(
                    db = %shared.name(),
                    held = ?now.saturating_duration_since(leak.at),
                    site = %leak.site,
                    "connection held longer than the leak threshold"
                );
            }
        }
        shared.set_held_past_threshold(held_past);
    })
}
