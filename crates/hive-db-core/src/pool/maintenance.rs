//! The maintenance threads every pool in the process shares: r2d2's connection opening and
//! reaping, the leak scans, and the coarse clock's tick. r2d2 would otherwise start three
//! threads per pool.

use std::sync::Arc;
use std::time::Duration;

use once_cell::sync::Lazy;
use scheduled_thread_pool::{JobHandle, ScheduledThreadPool};

use crate::clock;

static MAINTENANCE: Lazy<Arc<ScheduledThreadPool>> = Lazy::new(|| {
    Arc::new(
        ScheduledThreadPool::builder()
            .num_threads(3)
            .thread_name_pattern("hive-db-maint-{}")
            .build(),
    )
});

/// Advances the coarse clock that checkouts read, from the first pool on.
static TICKER: Lazy<JobHandle> = Lazy::new(|| {
    clock::tick();
    MAINTENANCE.execute_at_fixed_rate(clock::TICK, clock::TICK, clock::tick)
});

/// The shared threads, for r2d2; the coarse clock is ticking once this returns.
pub(super) fn threads() -> Arc<ScheduledThreadPool> {
    Lazy::force(&TICKER);
    Arc::clone(&MAINTENANCE)
}

/// Runs `job` once after `delay` on the shared threads.
#[cfg(feature = "async")]
pub(crate) fn after(delay: Duration, job: impl FnOnce() + Send + 'static) {
    MAINTENANCE.execute_after(delay, job);
}

/// Runs `job` every `period` on the shared threads until the handle is cancelled.
pub(super) fn every(period: Duration, job: impl Fn() + Send + Sync + 'static) -> JobHandle {
    MAINTENANCE.execute_at_fixed_rate(period, period, job)
}
