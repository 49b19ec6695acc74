//! The checks that turn one database's read into findings: down, health, corruption, for a
//! pool the leak check, acquire timeouts rising and slow acquires, and for PostgreSQL its
//! servers.

use std::time::Duration;

use hive_db_core::{DbSnapshot, HealthStatus, PgFacts};

use crate::finding::{Finding, FindingKind};
use crate::rates::Rates;
use crate::sample::DbRead;
use crate::{fmt, status};

use HealthStatus::{Degraded, Unhealthy};

/// The checks: health, corruption, for a pool the leak check (holds past the leak threshold,
/// more connections than the maximum, acquire timeouts rising) and slow acquires, and for
/// PostgreSQL a primary it cannot reach or write to and replicas not taking reads. `rates`
/// are those of the interval before `read`, when there was one.
pub(crate) fn assess(read: &DbRead, rates: Option<&Rates>, slow: Duration) -> Vec<Finding> {
    if let Some(error) = &read.error {
        return vec![Finding::new(Unhealthy, FindingKind::Down, error)];
    }
    let mut out = Vec::new();
    let servers = read
        .snapshot
        .as_ref()
        .and_then(|s| s.postgres.as_ref())
        .map(servers)
        .unwrap_or_default();
    if let Some(s) = &read.snapshot {
        out.extend(closed(s));
        out.extend(leak(s, rates));
        out.extend(over_max(s));
        out.extend(timeouts(s, rates));
        out.extend(slow_acquire(s, rates, slow));
        out.extend(busy(rates));
    }
    out.extend(corrupt(read));
    out.extend(health(read, &servers));
    out.extend(servers);
    out
}

/// A PostgreSQL database's servers as its registry last measured them: a primary it cannot
/// reach or write to, and each replica not taking reads, make it degraded. Reads still work
/// (they fall back to the primary; a primary that is really gone fails the health check).
/// The messages are the registry's own health notes, word for word, so the health finding
/// that repeats them can leave them out.
fn servers(pg: &PgFacts) -> Vec<Finding> {
    let primary = pg
        .primary_notes()
        .into_iter()
        .map(|note| Finding::new(Degraded, FindingKind::Primary, note));
    let replicas = pg
        .replica_notes()
        .into_iter()
        .map(|note| Finding::new(Degraded, FindingKind::Replica, note));
    primary.chain(replicas).collect()
}

fn closed(s: &DbSnapshot) -> Option<Finding> {
    (!s.open).then(|| {
        Finding::new(
            Unhealthy,
            FindingKind::Down,
            "closed: registered once, not open now",
        )
    })
}

/// Degraded while a connection is held past the threshold now, or (live) when one was in the
/// last interval; a leak given back long ago is history, in the counters.
fn leak(s: &DbSnapshot, rates: Option<&Rates>) -> Option<Finding> {
    let recent = rates.filter(|r| r.leaks > 0);
    if s.held_past_leak_threshold == 0 && recent.is_none() {
        return None;
    }
    let interval = recent.map_or(String::new(), |r| {
        format!(", {} new in the last {:.1}s", r.leaks, r.seconds)
    });
    Some(Finding::new(
        Degraded,
        FindingKind::Leak,
        format!(
            "{} connection(s) held past leak_threshold now{interval} ({} since the application \
             started); its log names the checkout site",
            s.held_past_leak_threshold, s.totals.leaks
        ),
    ))
}

fn over_max(s: &DbSnapshot) -> Option<Finding> {
    (s.live > s.max_size).then(|| {
        Finding::new(
            Degraded,
            FindingKind::OverMax,
            format!("{} live connections, above max_size {}", s.live, s.max_size),
        )
    })
}

fn timeouts(s: &DbSnapshot, rates: Option<&Rates>) -> Option<Finding> {
    let r = rates.filter(|r| r.timeouts > 0)?;
    Some(Finding::new(
        Degraded,
        FindingKind::Timeouts,
        format!(
            "acquire timeouts rising: {} in the last {:.1}s ({} since start)",
            r.timeouts, r.seconds, s.totals.acquire_timeouts
        ),
    ))
}

/// The oldest waiter's wait now, else the interval's p99 wait, against `slow`.
fn slow_acquire(s: &DbSnapshot, rates: Option<&Rates>, slow: Duration) -> Option<Finding> {
    let maxwait = Duration::from_nanos(s.maxwait_ns);
    let message = if maxwait > slow {
        format!(
            "the oldest caller has waited {} for a connection (--slow {})",
            fmt::duration(maxwait),
            fmt::duration(slow)
        )
    } else {
        let p99 = rates
            .and_then(|r| r.acquire_wait_p99_ms)
            .filter(|ms| *ms > slow.as_secs_f64() * 1e3)?;
        format!(
            "p99 acquire wait {} in the last interval (--slow {})",
            fmt::millis(p99),
            fmt::duration(slow)
        )
    };
    Some(Finding::new(Degraded, FindingKind::SlowAcquire, message))
}

fn busy(rates: Option<&Rates>) -> Option<Finding> {
    let r = rates.filter(|r| r.busy > 0)?;
    Some(Finding::new(
        Degraded,
        FindingKind::Busy,
        format!(
            "{} SQLITE_BUSY errors in the last {:.1}s: another process holds locks",
            r.busy, r.seconds
        ),
    ))
}

fn corrupt(read: &DbRead) -> Option<Finding> {
    let f = read.facts.as_ref().filter(|f| f.corrupt)?;
    Some(Finding::new(
        Unhealthy,
        FindingKind::Corrupt,
        format!(
            "quick_check: {}",
            f.quick_check.as_deref().unwrap_or("failed")
        ),
    ))
}

/// A health check that is not healthy, unless it only repeats the corruption of a file or
/// the `servers` findings (those notes are left out of its message); an open pool without a
/// health check at all.
fn health(read: &DbRead, servers: &[Finding]) -> Option<Finding> {
    let Some(h) = &read.health else {
        return read.snapshot.as_ref().is_some_and(|s| s.open).then(|| {
            Finding::new(
                Degraded,
                FindingKind::Health,
                "open, but missing from the endpoint's health report",
            )
        });
    };
    let repeats_corrupt = read.facts.as_ref().is_some_and(|f| f.corrupt) && read.snapshot.is_none();
    if h.status == HealthStatus::Healthy || repeats_corrupt {
        return None;
    }
    let message = match &h.error {
        // The registry joins its notes with "; ".
        Some(error) if !servers.is_empty() => {
            let rest: Vec<&str> = error
                .split("; ")
                .filter(|note| servers.iter().all(|f| f.message != *note))
                .collect();
            if rest.is_empty() {
                if h.status == Degraded {
                    return None;
                }
                format!("health check {}", status::word(h.status))
            } else {
                rest.join("; ")
            }
        }
        Some(error) => error.clone(),
        None => format!("health check {}", status::word(h.status)),
    };
    Some(Finding::new(h.status, FindingKind::Health, message))
}
