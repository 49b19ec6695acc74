//! The maintenance threads every pool in the process shares: r2d2's connection opening and
//! reaping (SQLite's pools; a PostgreSQL server's pool opens its connections on a thread of
//! its own, see `Engine::OWN_CONNECT_THREADS`), the bag's sweeps and the leak scans. r2d2 would otherwise start three threads
//! per pool. Beside them, one clock thread advances the coarse clock every [`clock::TICK`]
//! and runs the checks hooked onto its tick (the async readers' stall checks).
//!
//! The tick has a thread of its own because on the shared threads it woke all three of them
//! 200 times a second: the pool notifies every thread when a job becomes the earliest, as
//! the tick does each time it is rescheduled. An idle process spent about 2% of a core on
//! that.

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

/// Starts the coarse clock that checkouts read, from the first pool on: the clock thread, or,
/// if no thread can be started, a fixed-rate job on the shared threads.
static TICKER: Lazy<()> = Lazy::new(|| {
    clock::tick();
    let started = std::thread::Builder::new()
        .name("hive-db-clock".to_owned())
        .spawn(|| {
            loop {
                std::thread::sleep(clock::TICK);
                on_each_tick();
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "no clock thread: the maintenance threads tick the clock");
        // Never cancelled: the clock ticks for the life of the process.
        let _ticking = MAINTENANCE.execute_at_fixed_rate(clock::TICK, clock::TICK, on_each_tick);
    }
});

/// One tick: the clock, then the hooks.
fn on_each_tick() {
    clock::tick();
    run_tick_hooks();
}

/// Checks run on every tick of the coarse clock ([`on_tick`]).
static TICK_HOOKS: std::sync::Mutex<Vec<fn()>> = std::sync::Mutex::new(Vec::new());

/// Panics of tick hooks so far.
static HOOK_PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run_tick_hooks() {
    let hooks = crate::sync::lock(&TICK_HOOKS).clone();
    for hook in hooks {
        // A hook that panics must not end the tick: unwinding would end the clock thread
        // (or the fixed-rate job, which the pool does not run again), and the coarse clock
        // would stop.
        if let Err(panic) = std::panic::catch_unwind(hook) {
            // A hook that panics on every tick would log 200 lines a second: the 1st, 2nd,
            // 4th, 8th... panic is logged, with the count.
            let panics = HOOK_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if panics.is_power_of_two() {
                let cause = crate::sync::panic_message(&*panic);
                tracing::error!(panics, cause, "a check on the coarse clock's tick panicked");
            }
        }
    }
}

/// The shared threads, for r2d2; the coarse clock is ticking once this returns.
pub(super) fn threads() -> Arc<ScheduledThreadPool> {
    Lazy::force(&TICKER);
    Arc::clone(&MAINTENANCE)
}

/// `n` threads for one pool alone (see `Engine::OWN_CONNECT_THREADS`); they end when the
/// pool does. When the system refuses a thread (the thread pool's builder then panics), the
/// shared threads, with a warning.
pub(super) fn own_threads(n: usize) -> Arc<ScheduledThreadPool> {
    let built = std::panic::catch_unwind(|| {
        ScheduledThreadPool::builder()
            .num_threads(n)
            .thread_name_pattern("hive-db-conn-{}")
            // The pool's pending jobs (r2d2's reaper, hours away) do not keep the threads once
            // the pool is gone.
            .on_drop_behavior(scheduled_thread_pool::OnPoolDropBehavior::DiscardPendingScheduled)
            .build()
    });
    match built {
        Ok(pool) => {
            Lazy::force(&TICKER);
            Arc::new(pool)
        }
        Err(_) => {
            tracing::warn!(
                "cannot start a connect thread for a pool of its own; it opens its connections \
                 on the threads every pool shares"
            );
            threads()
        }
    }
}

/// Runs `hook` on every tick of the coarse clock (every [`clock::TICK`]) from now on, on the
/// clock thread, at no cost in wake-ups: the tick runs anyway. For cheap checks only: the
/// clock waits for them.
pub(crate) fn on_tick(hook: fn()) {
    Lazy::force(&TICKER);
    crate::sync::lock(&TICK_HOOKS).push(hook);
}

/// Runs `job` once, soon, on the shared threads: for work the clock's tick hands off.
pub(crate) fn in_background(job: impl FnOnce() + Send + 'static) {
    MAINTENANCE.execute(job);
}

/// Runs `job` every `period` on the shared threads until the handle is cancelled.
pub(super) fn every(period: Duration, job: impl Fn() + Send + Sync + 'static) -> JobHandle {
    MAINTENANCE.execute_at_fixed_rate(period, period, job)
}

#[cfg(test)]
mod tests {
    /// Bug caught: a tick hook that panics ends the clock thread, so the coarse clock that
    /// checkouts read stops, and every later hook with it.
    #[cfg(feature = "async")]
    #[test]
    fn a_panicking_tick_hook_leaves_the_clock_ticking() {
        use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
        use std::time::{Duration, Instant};

        use super::{clock, on_tick};

        static CALLS: AtomicU32 = AtomicU32::new(0);
        fn hook() {
            if CALLS.fetch_add(1, SeqCst) == 0 {
                panic!("the first call of this hook panics");
            }
        }
        on_tick(hook);
        let patience = Instant::now() + Duration::from_secs(30);
        while CALLS.load(SeqCst) < 3 {
            assert!(
                Instant::now() < patience,
                "the tick stopped after its hook panicked ({} calls)",
                CALLS.load(SeqCst)
            );
            std::thread::sleep(clock::TICK);
        }
        let before = clock::coarse_now();
        while clock::coarse_now() == before {
            assert!(Instant::now() < patience, "the coarse clock stopped");
            std::thread::sleep(clock::TICK);
        }
    }
}
