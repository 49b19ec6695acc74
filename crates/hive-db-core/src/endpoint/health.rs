//! `/health`: one check at a time, its answer cached for `health_cache`, paths redacted.
//!
//! The cache lives on the polling thread (no lock); the check itself runs on a worker.

use std::path::Path;
use std::time::{Duration, Instant};

use super::response::Response;
use super::state::State;
use crate::health::{HealthReport, HealthStatus};
use crate::stats::RegistrySnapshot;

/// The last check's answer and who waits for the next one. Owned by the polling thread.
#[derive(Debug, Default)]
pub(super) struct HealthCache {
    /// The last check's answer and when it came.
    last: Option<(Instant, Response)>,
    /// A check is running on a worker.
    checking: bool,
    /// Connections waiting for the running check's answer.
    waiting: Vec<usize>,
}

/// What to do with a `/health` request.
#[derive(Debug)]
pub(super) enum Ask {
    /// Answer this now.
    Answer(Response),
    /// The connection waits for the running check; start one first when `start` is set.
    Wait { start: bool },
}

impl HealthCache {
    /// The cached answer while it is younger than `fresh_for`; else, while a check runs, the
    /// previous answer; else (or before the first answer) a place among the check's waiters.
    pub(super) fn ask(&mut self, conn: usize, now: Instant, fresh_for: Duration) -> Ask {
        if let Some((at, response)) = &self.last {
            let fresh = now.saturating_duration_since(*at) < fresh_for;
            if fresh || self.checking {
                return Ask::Answer(response.clone());
            }
        }
        self.waiting.push(conn);
        let start = !self.checking;
        self.checking = true;
        Ask::Wait { start }
    }

    /// A check ended with `response`: kept for the next requests when `keep`, and returned
    /// with the connections to send it to.
    pub(super) fn checked(&mut self, response: &Response, now: Instant, keep: bool) -> Vec<usize> {
        self.checking = false;
        if keep {
            self.last = Some((now, response.clone()));
        }
        std::mem::take(&mut self.waiting)
    }
}

/// Runs the health check, within `health_timeout`, and renders its answer.
pub(super) fn check(state: &State) -> Response {
    let mut report = state.registry.health(state.config.health_timeout);
    if !state.config.expose_paths {
        redact_paths(&mut report, &state.registry.stats());
    }
    let status = if report.status == HealthStatus::Unhealthy {
        503
    } else {
        200
    };
    Response::json(status, &report)
}

/// Replaces each database's path, and its folder, in the report's error messages.
fn redact_paths(report: &mut HealthReport, snapshot: &RegistrySnapshot) {
    let mut paths: Vec<String> = Vec::new();
    for db in &snapshot.databases {
        paths.push(db.path.display().to_string());
        for replica in db.postgres.iter().flat_map(|p| &p.replicas) {
            paths.push(replica.target.display().to_string());
        }
        if let Some(parent) = db.path.parent().filter(|p| *p != Path::new("/")) {
            paths.push(parent.display().to_string());
        }
    }
    paths.retain(|p| !p.is_empty());
    // Longest first, so a file's path goes before its folder's.
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for replica in report
        .databases
        .iter_mut()
        .filter_map(|d| d.postgres.as_mut())
        .flat_map(|p| &mut p.replicas)
    {
        replica.target = std::path::PathBuf::new();
    }
    for error in report.databases.iter_mut().filter_map(|d| d.error.as_mut()) {
        for path in &paths {
            if error.contains(path.as_str()) {
                *error = error.replace(path.as_str(), "<path>");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a check started for every request (scrapes loading the writer lane), a
    /// request held up by a running check when an older answer exists, a waiter forgotten
    /// when the check ends, or a stale answer served as fresh for ever.
    #[test]
    fn one_check_at_a_time_and_its_answer_cached() {
        let t0 = Instant::now();
        let cache_for = Duration::from_secs(1);
        let mut cache = HealthCache::default();
        assert!(matches!(
            cache.ask(1, t0, cache_for),
            Ask::Wait { start: true }
        ));
        assert!(matches!(
            cache.ask(2, t0, cache_for),
            Ask::Wait { start: false }
        ));
        let ok = Response::text(200, "ok");
        assert_eq!(cache.checked(&ok, t0, true), vec![1, 2]);
        let within = t0 + Duration::from_millis(500);
        assert!(matches!(cache.ask(3, within, cache_for), Ask::Answer(r) if r.status == 200));
        let later = t0 + Duration::from_secs(2);
        assert!(matches!(
            cache.ask(4, later, cache_for),
            Ask::Wait { start: true }
        ));
        // While that check runs, the stale answer is served at once.
        assert!(matches!(cache.ask(5, later, cache_for), Ask::Answer(r) if r.status == 200));
        let failed = Response::text(500, "panicked");
        assert_eq!(cache.checked(&failed, later, false), vec![4]);
        assert!(matches!(
            cache.ask(6, later, cache_for),
            Ask::Wait { start: true }
        ));
        let mut uncached = HealthCache::default();
        uncached.checked(&ok, t0, true);
        assert!(matches!(
            uncached.ask(7, t0, Duration::ZERO),
            Ask::Wait { start: true }
        ));
    }

    /// Bug caught: a health error message showing where a database lives (its file or its
    /// folder) without `expose_paths`.
    #[test]
    fn health_errors_lose_their_paths() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let folder = dir.path().join("secret-folder-3b7e");
        let registry = crate::registry::Registry::new();
        let name = crate::name::DbName::new("hidden")?;
        let config = crate::config::DbConfig {
            create_if_missing: true,
            ..crate::config::DbConfig::default()
        };
        registry.register(&name, folder.join("file-5c1d.db"), config)?;
        let snapshot = registry.stats();
        let path = snapshot.databases[0].path.display().to_string();
        let mut report = HealthReport {
            status: HealthStatus::Unhealthy,
            databases: vec![crate::health::DbHealth {
                name,
                status: HealthStatus::Unhealthy,
                latency: Duration::ZERO,
                error: Some(format!(
                    "cannot open {path}: gone; cannot create {}: denied",
                    folder.display()
                )),
                postgres: None,
            }],
            elapsed: Duration::ZERO,
            notes: Vec::new(),
        };
        redact_paths(&mut report, &snapshot);
        let error = report.databases[0].error.clone().unwrap_or_default();
        assert_eq!(
            error,
            "cannot open <path>: gone; cannot create <path>: denied"
        );
        Ok(())
    }

    /// Bug caught: a PostgreSQL replica's address (in its health line, or in the server
    /// facts of the report) shown without `expose_paths`.
    #[cfg(feature = "postgres")]
    #[test]
    fn replica_addresses_are_hidden_too() {
        let target = std::path::PathBuf::from("postgres://app@replica-host-9f2a:5432/shop");
        let replica = crate::stats::ReplicaSnapshot {
            target: target.clone(),
            status: crate::stats::ReplicaStatus::Down,
            lag_ms: None,
            server: None,
            error: None,
            live: 0,
            idle: 0,
            reads: 0,
        };
        let facts = crate::stats::PgFacts {
            replicas: vec![replica],
            ..crate::stats::PgFacts::default()
        };
        let name = crate::name::DbName::new("shop").expect("a valid name");
        let mut snapshot = crate::registry::Registry::new().stats();
        let mut db = crate::pool::DbInfo::on_server(
            name.clone(),
            "postgres://app@primary-host/shop".into(),
            crate::config::DbConfig::default(),
            std::sync::Arc::default(),
        )
        .snapshot(None);
        db.postgres = Some(facts.clone());
        snapshot.databases.push(db);
        let mut report = HealthReport {
            status: HealthStatus::Degraded,
            databases: vec![crate::health::DbHealth {
                name,
                status: HealthStatus::Degraded,
                latency: Duration::ZERO,
                error: Some(format!("replica1 ({}) down: refused", target.display())),
                postgres: Some(facts),
            }],
            elapsed: Duration::ZERO,
            notes: Vec::new(),
        };
        redact_paths(&mut report, &snapshot);
        let text = serde_json::to_string(&report).expect("serialises");
        assert!(!text.contains("replica-host-9f2a"), "{text}");
        assert!(text.contains("replica1 (<path>) down"), "{text}");
    }
}
