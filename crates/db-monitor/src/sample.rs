//! One read of every source: what each endpoint and each file says now.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use hive_db_core::{Backend, DbSnapshot, HealthStatus};

use crate::attach::Endpoint;
use crate::cli::DbSpec;
use crate::discover::Discovered;
use crate::file::{self, FileFacts, HealthFacts};
use crate::probe::{self, ProbeResult};

/// What one database looked like at one read.
#[derive(Debug, Clone)]
pub(crate) struct DbRead {
    /// The endpoint's `http://host:port`, or `file`.
    pub(crate) source: String,
    /// The database's name (`(endpoint)` for an endpoint that could not be read).
    pub(crate) name: String,
    /// Its file.
    pub(crate) path: Option<PathBuf>,
    /// The registry's snapshot (endpoints only).
    pub(crate) snapshot: Option<DbSnapshot>,
    /// The registry's clock when it took the snapshot, in ms since the Unix epoch.
    pub(crate) taken_at_unix_ms: Option<u64>,
    /// How long the registry's process had run, in ms: smaller than at the last read means
    /// it restarted and its counters began again at zero (so does a start, `taken_at_unix_ms`
    /// less this, that moved).
    pub(crate) uptime_ms: Option<u64>,
    /// When the registry's process started, as it says itself (newer registries): another
    /// value than at the last read means another process.
    pub(crate) started_at_unix_ms: Option<u64>,
    /// Its health check.
    pub(crate) health: Option<HealthFacts>,
    /// What SQLite says about the file, when the monitor could open it.
    pub(crate) facts: Option<FileFacts>,
    /// `--probe`'s result.
    pub(crate) probe: Option<ProbeResult>,
    /// Why the source could not be read at all.
    pub(crate) error: Option<String>,
}

impl DbRead {
    /// The key that matches a database across two reads.
    pub(crate) fn key(&self) -> (&str, &str) {
        (&self.source, &self.name)
    }

    /// The engine: the snapshot's for an endpoint's database, SQLite for a file, `None` for
    /// an endpoint that could not be read.
    pub(crate) fn backend(&self) -> Option<Backend> {
        match &self.snapshot {
            Some(s) => Some(s.backend),
            None => self.error.is_none().then_some(Backend::Sqlite),
        }
    }
}

/// Every database at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// When the read started, in ms since the Unix epoch.
    pub(crate) taken_at_unix_ms: u64,
    pub(crate) dbs: Vec<DbRead>,
    /// Endpoints named with `--attach` that could not be read, with why.
    pub(crate) endpoint_errors: Vec<String>,
}

/// What a read includes beyond the basics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Depth {
    /// Run `quick_check` on files (it reads every page: once per run, not per interval).
    pub(crate) quick_check: bool,
    /// Open an endpoint's database files too for their SQLite facts.
    pub(crate) endpoint_files: bool,
    /// Run a performance probe this long.
    pub(crate) probe: Option<Duration>,
}

impl Depth {
    /// The basics: what the reads between a run's first and last include.
    pub(crate) const BASIC: Self = Self {
        quick_check: false,
        endpoint_files: false,
        probe: None,
    };

    /// Everything, and a probe this long when given.
    pub(crate) const fn full(probe: Option<Duration>) -> Self {
        Self {
            quick_check: true,
            endpoint_files: true,
            probe,
        }
    }
}

/// Reads its sources on request.
#[derive(Debug)]
pub(crate) struct Sampler {
    /// The endpoints named with `--attach`.
    pub(crate) endpoints: Vec<Endpoint>,
    /// With no source named: the endpoints this user's registries announce.
    pub(crate) discovered: Option<Discovered>,
    pub(crate) files: Vec<DbSpec>,
    pub(crate) timeout: Duration,
}

/// One source of a sample.
enum Either<'a> {
    Endpoint(&'a Endpoint),
    File(&'a DbSpec),
}

/// What reading one source gave.
enum Answer {
    Endpoint(anyhow::Result<Vec<DbRead>>),
    File(file::FileLook),
}

/// How many sources are read at once.
const AT_ONCE: usize = 8;

/// `f` of each of `items`, in their order, run on up to [`AT_ONCE`] threads at once (this
/// one among them, so it also works when no thread can be had); a panic in `f` is resumed
/// here.
fn each_at_once<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, f(item)));
        }
        done
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..items.len().min(AT_ONCE))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("db-monitor-read".to_owned())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mut all = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => all.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for (i, r) in all {
            results[i] = Some(r);
        }
    });
    results.into_iter().flatten().collect()
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Sampler {
    /// Whether any endpoint is read, named or found.
    pub(crate) fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
            || self
                .discovered
                .as_ref()
                .is_some_and(|d| d.endpoints().next().is_some())
    }

    /// Looks for announced endpoints again (when discovering); the warnings not given
    /// before (files there that are ignored).
    pub(crate) fn refresh(&mut self) -> Vec<String> {
        self.discovered
            .as_mut()
            .map(Discovered::refresh)
            .unwrap_or_default()
    }

    /// The stale announcements found while reading (registries killed during a sample),
    /// not said yet: for a report that does not refresh again.
    pub(crate) fn late_warnings(&self) -> Vec<String> {
        self.discovered
            .as_ref()
            .map(Discovered::late_warnings)
            .unwrap_or_default()
    }

    /// Reads every source once. An endpoint that fails is noted as an unhealthy row (and,
    /// when named with `--attach`, in `endpoint_errors`); it does not stop the others. A
    /// found endpoint that fails and is no longer announced stopped meanwhile: it is left
    /// out.
    pub(crate) fn take(&self, depth: Depth) -> Sample {
        let taken_at_unix_ms = unix_ms();
        let named = self.endpoints.iter().map(|e| (e, true));
        let found = self
            .discovered
            .iter()
            .flat_map(Discovered::endpoints)
            .map(|e| (e, false));
        let endpoints: Vec<(&Endpoint, bool)> = named.chain(found).collect();
        // Each read is bounded by the timeout, but one after another they were bounded by
        // the timeout times the number of silent endpoints (and Ctrl-C waited as long).
        // Endpoints and files in one pass, so that a sample takes about one timeout.
        let sources: Vec<Either<'_>> = endpoints
            .iter()
            .map(|&(e, _)| Either::Endpoint(e))
            .chain(self.files.iter().map(Either::File))
            .collect();
        let mut answers = each_at_once(&sources, |source| match source {
            Either::Endpoint(e) => Answer::Endpoint(self.read_endpoint(e, depth)),
            Either::File(spec) => Answer::File(file::look(
                &spec.path,
                self.timeout,
                depth.quick_check,
                depth.probe,
            )),
        })
        .into_iter();
        let read: Vec<_> = answers
            .by_ref()
            .take(endpoints.len())
            .filter_map(|a| match a {
                Answer::Endpoint(r) => Some(r),
                Answer::File(_) => None,
            })
            .collect();
        let looked: Vec<_> = answers
            .filter_map(|a| match a {
                Answer::File(l) => Some(l),
                Answer::Endpoint(_) => None,
            })
            .collect();
        let mut dbs = Vec::new();
        let mut endpoint_errors = Vec::new();
        for ((endpoint, named), read) in endpoints.into_iter().zip(read) {
            match read {
                Ok(rows) => dbs.extend(rows),
                Err(_)
                    if !named
                        && !self
                            .discovered
                            .as_ref()
                            .is_some_and(|d| d.still_announced(endpoint.base())) => {}
                Err(e) => {
                    let message = format!("{e:#}");
                    dbs.push(DbRead {
                        source: endpoint.base().to_owned(),
                        name: "(endpoint)".to_owned(),
                        path: None,
                        snapshot: None,
                        taken_at_unix_ms: None,
                        uptime_ms: None,
                        started_at_unix_ms: None,
                        health: Some(HealthFacts {
                            status: HealthStatus::Unhealthy,
                            latency_ms: 0.0,
                            error: Some(message.clone()),
                        }),
                        facts: None,
                        probe: None,
                        error: Some(message.clone()),
                    });
                    if named {
                        endpoint_errors.push(message);
                    }
                }
            }
        }
        for (spec, look) in self.files.iter().zip(looked) {
            dbs.push(DbRead {
                source: "file".to_owned(),
                name: spec.name.as_str().to_owned(),
                path: Some(spec.path.clone()),
                snapshot: None,
                taken_at_unix_ms: None,
                uptime_ms: None,
                started_at_unix_ms: None,
                health: Some(look.health),
                facts: look.facts,
                probe: look.probe,
                error: None,
            });
        }
        Sample {
            taken_at_unix_ms,
            dbs,
            endpoint_errors,
        }
    }

    /// The first read of a run: as [`Sampler::take`], but an endpoint named with `--attach`
    /// that cannot be read is an error, since a run cannot start without it (later reads
    /// report it as a row).
    ///
    /// # Errors
    ///
    /// The first endpoint that could not be read, and why.
    pub(crate) fn take_first(&self, depth: Depth) -> anyhow::Result<Sample> {
        let sample = self.take(depth);
        if let Some(e) = sample.endpoint_errors.first() {
            anyhow::bail!("{e}");
        }
        Ok(sample)
    }

    fn read_endpoint(&self, endpoint: &Endpoint, depth: Depth) -> anyhow::Result<Vec<DbRead>> {
        let snapshot = endpoint.stats()?;
        let health = endpoint.health()?;
        // One probe per endpoint, reported on its first database.
        let mut probe = depth.probe.map(|d| probe::stats(endpoint, d));
        Ok(snapshot
            .databases
            .into_iter()
            .map(|db| {
                let health = health
                    .databases
                    .iter()
                    .find(|h| h.name == db.name)
                    .map(|h| HealthFacts {
                        status: h.status,
                        latency_ms: h.latency.as_secs_f64() * 1e3,
                        error: h.error.clone(),
                    });
                // A PostgreSQL database's path is its URL (no password): no file to look at.
                let facts = (depth.endpoint_files
                    && db.backend == Backend::Sqlite
                    && !db.path.as_os_str().is_empty())
                .then(|| file::facts_of(&db.path, self.timeout, depth.quick_check))
                .flatten();
                // An endpoint that hides paths sends them empty.
                let path = Some(db.path.clone()).filter(|p| !p.as_os_str().is_empty());
                DbRead {
                    source: endpoint.base().to_owned(),
                    name: db.name.as_str().to_owned(),
                    path,
                    taken_at_unix_ms: Some(snapshot.taken_at_unix_ms),
                    uptime_ms: Some(snapshot.uptime_ms),
                    started_at_unix_ms: snapshot.started_at_unix_ms,
                    snapshot: Some(db),
                    health,
                    facts,
                    probe: probe.take(),
                    error: None,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::*;

    /// Bug caught: sources read one after another, so a sample took the timeout once per
    /// silent endpoint (three stopped registries: 15 s a sample at a 5 s timeout, and Ctrl-C
    /// waited as long). Each call here waits until all three are running at once, which
    /// only reads side by side ever see; answers keep the sources' order.
    #[test]
    fn sources_are_read_side_by_side_in_their_order() {
        let entered = Mutex::new(0_usize);
        let all_in = Condvar::new();
        let items = [10, 20, 30];
        let answers = each_at_once(&items, |item| {
            let mut n = entered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *n += 1;
            all_in.notify_all();
            let (n, waited) = all_in
                .wait_timeout_while(n, Duration::from_secs(10), |n| *n < items.len())
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (*item, *n == items.len() && !waited.timed_out())
        });
        assert_eq!(answers, [(10, true), (20, true), (30, true)]);
        // More sources than threads: every one answered, in order.
        let many: Vec<usize> = (0..50).collect();
        assert_eq!(
            each_at_once(&many, |i| i * 2),
            (0..50).map(|i| i * 2).collect::<Vec<_>>()
        );
    }
}
