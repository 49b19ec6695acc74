//! The checks that turn one database's read into findings: down, health, corruption, and for
//! a pool the leak check, acquire timeouts rising and slow acquires.

use std::time::Duration;

use hive_db_core::HealthStatus;

use crate::rates::Rates;
use crate::report::{Finding, status_word};
use crate::sample::DbRead;

/// The checks: health, corruption, and for a pool the leak check (holds past the leak
/// threshold, more connections than the maximum, acquire timeouts rising) and slow acquires.
pub(crate) fn assess(read: &DbRead, rates: Option<&Rates>, slow: Duration) -> Vec<Finding> {
    use HealthStatus::{Degraded, Unhealthy};
    let mut out = Vec::new();
    let mut add = |status, kind: &str, message: String| {
        out.push(Finding {
            status,
            kind: kind.to_owned(),
            message,
        });
    };
    if let Some(error) = &read.error {
        add(Unhealthy, "down", error.clone());
        return out;
    }
    if let Some(s) = &read.snapshot {
        if !s.open {
            add(
                Unhealthy,
                "down",
                "closed: registered once, not open now".to_owned(),
            );
        }
        let t = &s.totals;
        // Degraded while a connection is held past the threshold now, or (live) when one
        // was in the last interval; a leak given back long ago is history, in the counters.
        let recent = rates.map_or(0, |r| r.leaks);
        if s.held_past_leak_threshold > 0 || recent > 0 {
            let interval = rates.filter(|r| r.leaks > 0).map_or(String::new(), |r| {
                format!(", {} new in the last {:.1}s", r.leaks, r.seconds)
            });
            add(
                Degraded,
                "leak",
                format!(
                    "{} connection(s) held past leak_threshold now{interval} ({} since the application started); its log names the checkout site",
                    s.held_past_leak_threshold, t.leaks
                ),
            );
        }
        if s.live > s.max_size {
            add(
                Degraded,
                "over_max",
                format!("{} live connections, above max_size {}", s.live, s.max_size),
            );
        }
        if let Some(r) = rates.filter(|r| r.timeouts > 0) {
            add(
                Degraded,
                "timeouts",
                format!(
                    "acquire timeouts rising: {} in the last {:.1}s ({} since start)",
                    r.timeouts, r.seconds, t.acquire_timeouts
                ),
            );
        }
        let maxwait = Duration::from_nanos(s.maxwait_ns);
        if maxwait > slow {
            add(
                Degraded,
                "slow_acquire",
                format!(
                    "the oldest caller has waited {} for a connection (--slow {})",
                    crate::fmt::duration(maxwait),
                    crate::fmt::duration(slow)
                ),
            );
        } else if let Some(p99) = rates
            .and_then(|r| r.acquire_wait_p99_ms)
            .filter(|ms| *ms > slow.as_secs_f64() * 1e3)
        {
            add(
                Degraded,
                "slow_acquire",
                format!(
                    "p99 acquire wait {} in the last interval (--slow {})",
                    crate::fmt::millis(p99),
                    crate::fmt::duration(slow)
                ),
            );
        }
        if let Some(r) = rates.filter(|r| r.busy > 0) {
            add(
                Degraded,
                "busy",
                format!(
                    "{} SQLITE_BUSY errors in the last {:.1}s: another process holds locks",
                    r.busy, r.seconds
                ),
            );
        }
    }
    if let Some(f) = read.facts.as_ref().filter(|f| f.corrupt) {
        add(
            Unhealthy,
            "corrupt",
            format!(
                "quick_check: {}",
                f.quick_check.as_deref().unwrap_or("failed")
            ),
        );
    }
    if let Some(h) = &read.health {
        if h.status > HealthStatus::Healthy
            && !(read.facts.as_ref().is_some_and(|f| f.corrupt) && read.snapshot.is_none())
        {
            let message = h
                .error
                .clone()
                .unwrap_or_else(|| format!("health check {}", status_word(h.status)));
            add(h.status, "health", message);
        }
    } else if read.snapshot.as_ref().is_some_and(|s| s.open) {
        add(
            Degraded,
            "health",
            "open, but missing from the endpoint's health report".to_owned(),
        );
    }
    out
}
