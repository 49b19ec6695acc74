//! `/health`: one check at a time, its answer cached for `health_cache`, paths redacted.

use std::path::Path;
use std::sync::TryLockError;
use std::time::Instant;

use super::State;
use super::response::Response;
use crate::health::{HealthReport, HealthStatus};
use crate::stats::RegistrySnapshot;
use crate::sync::lock;

/// The cached answer to `/health`, or a new check when it is older than `health_cache`.
/// One check runs at a time: requests that arrive meanwhile get the previous answer, or,
/// before the first one, wait for it.
pub(super) fn health(state: &State) -> Response {
    let cached = |fresh_only: bool| {
        lock(&state.health)
            .as_ref()
            .filter(|(at, _)| !fresh_only || at.elapsed() < state.config.health_cache)
            .map(|(_, response)| response.clone())
    };
    if let Some(response) = cached(true) {
        return response;
    }
    let _turn = match state.checking.try_lock() {
        Ok(turn) => turn,
        Err(TryLockError::Poisoned(turn)) => turn.into_inner(),
        Err(TryLockError::WouldBlock) => match cached(false) {
            Some(stale) => return stale,
            None => lock(&state.checking),
        },
    };
    // Another request may have finished a check while this one waited for its turn.
    if let Some(response) = cached(true) {
        return response;
    }
    let mut report = state.registry.health(state.config.health_timeout);
    if !state.config.expose_paths {
        redact_paths(&mut report, &state.registry.stats());
    }
    let status = if report.status == HealthStatus::Unhealthy {
        503
    } else {
        200
    };
    let response = Response::json(status, &report);
    *lock(&state.health) = Some((Instant::now(), response.clone()));
    response
}

/// Replaces each database's path, and its folder, in the report's error messages.
fn redact_paths(report: &mut HealthReport, snapshot: &RegistrySnapshot) {
    let mut paths: Vec<String> = Vec::new();
    for db in &snapshot.databases {
        paths.push(db.path.display().to_string());
        if let Some(parent) = db.path.parent().filter(|p| *p != Path::new("/")) {
            paths.push(parent.display().to_string());
        }
    }
    paths.retain(|p| !p.is_empty());
    // Longest first, so a file's path goes before its folder's.
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
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
    use std::time::Duration;

    use super::*;

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
            }],
            elapsed: Duration::ZERO,
        };
        redact_paths(&mut report, &snapshot);
        let error = report.databases[0].error.clone().unwrap_or_default();
        assert_eq!(
            error,
            "cannot open <path>: gone; cannot create <path>: denied"
        );
        Ok(())
    }
}
