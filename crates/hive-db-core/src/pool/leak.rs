//! The leak scanner: it reports checkouts held longer than `leak_threshold`, reading each
//! connection's checkout record (`slot.rs`).

use std::sync::Weak;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use scheduled_thread_pool::JobHandle;

use super::maintenance;
use super::shared::PoolShared;

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
                shared.info().counters.leaks.fetch_add(1, Relaxed);
                tracing::warn!(
                    db = %shared.info().name,
                    held = ?now.saturating_duration_since(leak.at),
                    site = %leak.site,
                    "connection held longer than the leak threshold"
                );
            }
        }
        shared.set_held_past_threshold(held_past);
    })
}
