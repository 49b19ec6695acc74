//! The report: each database's pool state, counters, latencies, rates, SQLite facts, health
//! and findings, with the overall status. Tables and JSON are both rendered from it.

use std::path::PathBuf;
use std::time::Duration;

use hive_db_core::{Backend, DbSnapshot, HealthStatus, LatencySummary, PgFacts, Totals};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::checks::assess;
use crate::file::{FileFacts, HealthFacts};
use crate::finding::Finding;
use crate::probe::ProbeResult;
use crate::rates::{self, Rates};
use crate::sample::{DbRead, Sample};
use crate::status;

/// The version of the report's JSON shape.
pub(crate) const REPORT_VERSION: u32 = 1;

/// Everything one report says. Its JSON (`--json`) also carries `report_version`, `status`,
/// `exit_code` and `total`, all derived from these fields.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// When the (last) read started, in ms since the Unix epoch.
    pub taken_at_unix_ms: u64,
    /// Every database, in the order of the sources.
    pub databases: Vec<DbReport>,
}

/// `name`, and `@host:port` of its `source` when there are several sources (a file's
/// source is its path, shown apart).
pub(crate) fn label(name: &str, source: &str, many_sources: bool) -> String {
    if many_sources && source != "file" {
        format!("{name} @{}", source.trim_start_matches("http://"))
    } else {
        name.to_owned()
    }
}

impl Report {
    /// How a database is named for people: its name, and with databases from several
    /// endpoints its endpoint too (`inventory @127.0.0.1:9187`), so that two registries'
    /// databases of one name are told apart in every table, line and finding.
    /// Whether there are several sources is found once, not per label (a render names
    /// every database several times).
    pub(crate) fn labeler(&self) -> impl Fn(&DbReport) -> String + '_ {
        let many_sources = self
            .databases
            .iter()
            .any(|other| other.source != self.databases[0].source);
        move |d| label(&d.name, &d.source, many_sources)
    }

    /// The worst status of any database (healthy without databases).
    pub fn status(&self) -> HealthStatus {
        self.databases
            .iter()
            .map(DbReport::status)
            .max()
            .unwrap_or(HealthStatus::Healthy)
    }

    /// The exit code of [`Report::status`]: 0 healthy, 1 degraded, 2 unhealthy.
    pub fn exit_code(&self) -> u8 {
        status::exit_code(self.status())
    }

    /// Every pool added up (`maxwait_ms` the largest); `None` without pools.
    pub fn total(&self) -> Option<Total> {
        let mut t = Total::default();
        for d in &self.databases {
            let Some(p) = &d.pool else { continue };
            t.add(p, d.rates.as_ref());
        }
        (t.pools > 0).then_some(t)
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Report", 6)?;
        s.serialize_field("report_version", &REPORT_VERSION)?;
        s.serialize_field("taken_at_unix_ms", &self.taken_at_unix_ms)?;
        s.serialize_field("status", &self.status())?;
        s.serialize_field("exit_code", &self.exit_code())?;
        s.serialize_field("databases", &self.databases)?;
        s.serialize_field("total", &self.total())?;
        s.end()
    }
}

/// The pools of every database added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Total {
    /// Databases with a pool.
    pub pools: u32,
    /// Open connections.
    pub live: u32,
    /// The pools' maximum sizes.
    pub max: u32,
    /// Connections checked out.
    pub active: u32,
    /// Connections idle in their pool.
    pub idle: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
    /// The largest maxwait of any pool, in milliseconds.
    pub maxwait_ms: f64,
    /// Writers queued for their database's writer lane.
    pub writer_queue: u32,
    /// Successful acquires per second, summed over the pools that have rates.
    pub acquires_per_s: f64,
    /// Acquires that waited, per second.
    pub waits_per_s: f64,
    /// Acquire timeouts per second.
    pub timeouts_per_s: f64,
    /// SQLITE_BUSY errors per second.
    pub busy_per_s: f64,
    /// Write transactions per second.
    pub tx_per_s: f64,
}

impl Total {
    /// `pool` alone, with its `rates`.
    pub(crate) fn of(pool: &Pool, rates: Option<&Rates>) -> Self {
        let mut t = Self::default();
        t.add(pool, rates);
        t
    }

    fn add(&mut self, p: &Pool, rates: Option<&Rates>) {
        // Saturating: the counts come from endpoints, and a sum past `u32::MAX` (one that
        // reports absurd counts, or very many pools) panicked the monitor.
        self.pools = self.pools.saturating_add(1);
        self.live = self.live.saturating_add(p.live);
        self.max = self.max.saturating_add(p.max);
        self.active = self.active.saturating_add(p.active);
        self.idle = self.idle.saturating_add(p.idle);
        self.waiting = self.waiting.saturating_add(p.waiting);
        self.maxwait_ms = self.maxwait_ms.max(p.maxwait_ms);
        self.writer_queue = self.writer_queue.saturating_add(p.writer_queue);
        if let Some(r) = rates {
            self.acquires_per_s += r.per_second(r.acquires);
            self.waits_per_s += r.per_second(r.waits);
            self.timeouts_per_s += r.per_second(r.timeouts);
            self.busy_per_s += r.per_second(r.busy);
            self.tx_per_s += r.per_second(r.tx);
        }
    }
}

/// One database. Its JSON also carries `status`, derived from the findings.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct DbReport {
    /// `http://host:port` of its endpoint, or `file`.
    pub source: String,
    /// Its name in the registry, or the one given with `--db` or `--config`.
    pub name: String,
    /// The engine it runs on; `None` for an endpoint that could not be read, and in reports
    /// of older versions.
    #[serde(default)]
    pub backend: Option<Backend>,
    /// Its file, or for PostgreSQL `postgres://user@host:port/db` (`None` when the endpoint
    /// hides paths).
    pub path: Option<PathBuf>,
    /// Why the status is not healthy, worst first.
    pub findings: Vec<Finding>,
    /// The pool (endpoints only: a pool lives in its application's process).
    pub pool: Option<Pool>,
    /// Cumulative counters since the application started (endpoints only).
    pub totals: Option<Totals>,
    /// Latencies since the application started (endpoints only).
    pub latency: Option<Latencies>,
    /// Rates between the last two reads (endpoints only, from the second read on).
    pub rates: Option<Rates>,
    /// Its health check.
    pub health: Option<HealthFacts>,
    /// What SQLite says about its file (SQLite only).
    pub sqlite: Option<FileFacts>,
    /// A PostgreSQL database's servers as its registry last measured them: the primary,
    /// each replica, the reads that fell back to the primary. `None` for SQLite.
    #[serde(default)]
    pub postgres: Option<PgFacts>,
    /// `--probe`'s result.
    pub probe: Option<ProbeResult>,
}

impl DbReport {
    /// The worst status of its findings (healthy without findings).
    pub fn status(&self) -> HealthStatus {
        self.findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(HealthStatus::Healthy)
    }
}

impl Serialize for DbReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("DbReport", 14)?;
        s.serialize_field("source", &self.source)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("backend", &self.backend)?;
        // Lossily: a Unix file name may be any bytes, and serde's own `PathBuf` refuses
        // those that are not UTF-8, which failed the whole report for one such path.
        s.serialize_field(
            "path",
            &self.path.as_deref().map(std::path::Path::to_string_lossy),
        )?;
        s.serialize_field("status", &self.status())?;
        s.serialize_field("findings", &self.findings)?;
        s.serialize_field("pool", &self.pool)?;
        s.serialize_field("totals", &self.totals)?;
        s.serialize_field("latency", &self.latency)?;
        s.serialize_field("rates", &self.rates)?;
        s.serialize_field("health", &self.health)?;
        s.serialize_field("sqlite", &self.sqlite)?;
        s.serialize_field("postgres", &self.postgres)?;
        s.serialize_field("probe", &self.probe)?;
        s.end()
    }
}

/// A pool's state now, in pgbouncer's and HikariCP's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pool {
    /// Registered and open.
    pub open: bool,
    /// Open connections.
    pub live: u32,
    /// `max_size`.
    pub max: u32,
    /// `min_idle`.
    pub min_idle: u32,
    /// Connections checked out.
    pub active: u32,
    /// Connections idle in the pool.
    pub idle: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
    /// Age of the oldest waiter, in milliseconds.
    pub maxwait_ms: f64,
    /// Writers queued for the writer lane.
    pub writer_queue: u32,
    /// Connections checked out longer than the leak threshold now.
    #[serde(default)]
    pub held_past_leak_threshold: u32,
}

/// Latency summaries, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Latencies {
    /// Waits for a connection.
    pub acquire_wait: Percentiles,
    /// How long connections were held.
    pub hold_time: Percentiles,
    /// Waits for the writer lane.
    pub writer_wait: Percentiles,
}

/// One histogram's count and percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// How many were recorded.
    pub count: u64,
    /// Their mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl From<&LatencySummary> for Percentiles {
    fn from(s: &LatencySummary) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: s.count,
            mean_ms: ms(s.mean_ns()),
            p50_ms: ms(s.p50_ns),
            p99_ms: ms(s.p99_ns),
            p999_ms: ms(s.p999_ns),
            max_ms: ms(s.max_ns),
        }
    }
}

/// The report of `cur`, with rates and the checks that need two reads when `prev` is given.
/// `slow` is the acquire wait above which a database is degraded.
pub(crate) fn build(prev: Option<&Sample>, cur: &Sample, slow: Duration) -> Report {
    let databases: Vec<DbReport> = cur
        .dbs
        .iter()
        .map(|read| {
            let before = prev.and_then(|p| p.dbs.iter().find(|d| d.key() == read.key()));
            db_report(before, read, slow)
        })
        .collect();
    Report {
        taken_at_unix_ms: cur.taken_at_unix_ms,
        databases,
    }
}

/// How far apart two reads may put their process's start and still be one process, when
/// the registry does not say when it started (older versions): the start is then worked out
/// from a wall clock and a monotonic one, read a moment apart.
const SAME_START_MS: u64 = 1000;

/// Whether `read` comes from another process than `before` (a restart on the same address).
/// A registry that says when its process started is another process when that changed (or
/// its uptime went down). For an older one, whose start is worked out from its wall clock
/// less its uptime, a start that moved by more than [`SAME_START_MS`] is taken as another
/// process too; that also takes a step of its wall clock, or a suspend, for a restart. The
/// uptime alone missed a new process that had run longer than the old one had at the last
/// read (a crash loop, a service manager restarting it), and its counters were taken from
/// the dead process's.
fn restarted(before: &DbRead, read: &DbRead) -> bool {
    let went_down = before
        .uptime_ms
        .zip(read.uptime_ms)
        .is_some_and(|(was, now)| now < was);
    if let (Some(was), Some(now)) = (before.started_at_unix_ms, read.started_at_unix_ms) {
        return went_down || was != now;
    }
    let started = |r: &DbRead| {
        r.taken_at_unix_ms
            .zip(r.uptime_ms)
            .map(|(at, up)| at.saturating_sub(up))
    };
    let moved = started(before)
        .zip(started(read))
        .is_some_and(|(was, now)| was.abs_diff(now) > SAME_START_MS);
    went_down || moved
}

fn db_report(before: Option<&DbRead>, read: &DbRead, slow: Duration) -> DbReport {
    let snap = read.snapshot.as_ref();
    let restarted = before.is_some_and(|b| restarted(b, read));
    let rates = match (before.and_then(|b| b.snapshot.as_ref()), snap) {
        (Some(p), Some(c)) if !restarted => {
            let ms = |r: &DbRead| r.taken_at_unix_ms.unwrap_or(0);
            let seconds = before.map_or(0.0, |b| ms(read).saturating_sub(ms(b)) as f64 / 1e3);
            rates::between(p, c, seconds)
        }
        _ => None,
    };
    let mut findings = assess(read, rates.as_ref(), slow);
    findings.sort_by_key(|f| std::cmp::Reverse(f.status));
    DbReport {
        source: read.source.clone(),
        name: read.name.clone(),
        backend: read.backend(),
        path: read.path.clone(),
        findings,
        pool: snap.map(pool_of),
        totals: snap.map(|s| s.totals),
        latency: snap.map(|s| Latencies {
            acquire_wait: (&s.acquire_wait).into(),
            hold_time: (&s.hold_time).into(),
            writer_wait: (&s.writer_wait).into(),
        }),
        rates,
        health: read.health.clone(),
        sqlite: read.facts.clone().or_else(|| {
            snap.filter(|s| s.backend == Backend::Sqlite)
                .map(|s| FileFacts {
                    file_bytes: s.sqlite.file_bytes,
                    wal_bytes: s.sqlite.wal_bytes,
                    ..FileFacts::default()
                })
        }),
        postgres: snap.and_then(|s| s.postgres.clone()),
        probe: read.probe.clone(),
    }
}

fn pool_of(s: &DbSnapshot) -> Pool {
    Pool {
        open: s.open,
        live: s.live,
        max: s.max_size,
        min_idle: s.min_idle,
        active: s.active(),
        idle: s.idle,
        waiting: s.waiting,
        maxwait_ms: s.maxwait_ns as f64 / 1e6,
        writer_queue: s.writer_queue,
        held_past_leak_threshold: s.held_past_leak_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::FindingKind;
    use crate::table::{full, pools, servers};
    use hive_db_core::{DbConfig, DbName, Registry};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Bug caught: the totals over every pool added with `+=`: two pools whose endpoint
    /// reported 4294967295 live connections panicked the monitor ("attempt to add with
    /// overflow"), or wrapped to a small total in a release build.
    #[test]
    fn totals_saturate() {
        let pool = Pool {
            open: true,
            live: u32::MAX,
            max: u32::MAX,
            min_idle: 0,
            active: u32::MAX,
            idle: u32::MAX,
            waiting: u32::MAX,
            maxwait_ms: 0.0,
            writer_queue: u32::MAX,
            held_past_leak_threshold: 0,
        };
        let mut total = Total::of(&pool, None);
        total.add(&pool, None);
        assert_eq!(total.pools, 2);
        assert_eq!(
            [
                total.live,
                total.max,
                total.active,
                total.idle,
                total.waiting,
                total.writer_queue
            ],
            [u32::MAX; 6]
        );
    }

    /// A read of `snapshot`'s first database with the uptime and start given (the start
    /// `None` as from an older registry).
    fn read_of(
        snapshot: hive_db_core::RegistrySnapshot,
        uptime_ms: u64,
        started_at_unix_ms: Option<u64>,
    ) -> Sample {
        let db = snapshot.databases[0].clone();
        Sample {
            taken_at_unix_ms: snapshot.taken_at_unix_ms,
            dbs: vec![DbRead {
                source: "http://127.0.0.1:1".to_owned(),
                name: db.name.as_str().to_owned(),
                path: None,
                taken_at_unix_ms: Some(snapshot.taken_at_unix_ms),
                uptime_ms: Some(uptime_ms),
                started_at_unix_ms,
                snapshot: Some(db),
                health: Some(HealthFacts {
                    status: HealthStatus::Healthy,
                    latency_ms: 1.0,
                    error: None,
                }),
                facts: None,
                probe: None,
                error: None,
            }],
            endpoint_errors: Vec::new(),
        }
    }

    /// A registry with one database, `inventory`, in `dir`.
    fn inventory(dir: &std::path::Path) -> (Registry, DbName) {
        let registry = Registry::new();
        let name = DbName::new("inventory").unwrap();
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        registry.register(&name, dir.join("i.db"), config).unwrap();
        (registry, name)
    }

    /// Bug caught: two registries with a database of one name could not be told apart
    /// outside the pools table: counters, latency, findings and the one-shot's lines all
    /// said "inventory", whichever registry it was.
    #[test]
    fn databases_of_one_name_in_two_registries_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = inventory(dir.path());
        let mut sample = read_of(registry.stats(), 1000, None);
        let mut other = sample.dbs[0].clone();
        other.source = "http://127.0.0.1:2".to_owned();
        other.health = Some(HealthFacts {
            status: HealthStatus::Unhealthy,
            latency_ms: 1.0,
            error: Some("the file is gone".to_owned()),
        });
        sample.dbs.push(other);
        let report = build(None, &sample, Duration::from_secs(1));
        let findings = crate::table::findings(&report);
        assert!(findings.contains("inventory @127.0.0.1:2: "), "{findings}");
        let full = crate::table::full(&report, Some(200));
        for label in ["inventory @127.0.0.1:1", "inventory @127.0.0.1:2"] {
            // The pools table, the counters and the three latency rows name each.
            assert!(full.matches(label).count() >= 5, "{label} in:\n{full}");
        }
        // One registry: the name alone.
        let one = build(
            None,
            &read_of(registry.stats(), 1000, None),
            Duration::from_secs(1),
        );
        assert_eq!(one.labeler()(&one.databases[0]), "inventory");
    }

    /// Bug caught: rates across an application restart (counters back at zero and grown
    /// again) taken as the interval's, also when the new process had run longer than the
    /// old one at the last read, or no rates at all between two ordinary reads.
    #[test]
    fn no_rates_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, name) = inventory(dir.path());
        let before = registry.stats();
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..3 {
            drop(registry.get(&name).unwrap());
        }
        let after = registry.stats();
        let slow = Duration::from_secs(1);
        // One process: its uptime grew by the time between the reads.
        let later = 1000 + (after.taken_at_unix_ms - before.taken_at_unix_ms);
        let ordinary = build(
            Some(&read_of(before.clone(), 1000, None)),
            &read_of(after.clone(), later, None),
            slow,
        );
        let rates = ordinary.databases[0]
            .rates
            .as_ref()
            .expect("rates between two reads");
        assert_eq!(rates.acquires, 3);
        let restarted = build(
            Some(&read_of(before.clone(), 5000, None)),
            &read_of(after.clone(), 10, None),
            slow,
        );
        assert!(restarted.databases[0].rates.is_none());
        // A new process that has run longer than the old one had at the last read: its
        // uptime grew, but by 4 s more than the time between the reads.
        let longer = build(
            Some(&read_of(before, 1000, None)),
            &read_of(after, later + 4000, None),
            slow,
        );
        assert!(
            longer.databases[0].rates.is_none(),
            "rates across two processes"
        );
    }

    /// Bug caught: a step of the registry's wall clock (NTP) or a suspend between two reads
    /// taken for a restart, so the interval's rates went missing, when the registry says
    /// when its process started; or, the other way, two processes that say they started at
    /// different times taken for one because their uptimes line up.
    #[test]
    fn the_registrys_own_start_decides_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, name) = inventory(dir.path());
        let before = registry.stats();
        let started = before.started_at_unix_ms;
        assert!(
            started.is_some(),
            "a snapshot says when its process started"
        );
        assert_eq!(registry.stats().started_at_unix_ms, started);
        for _ in 0..3 {
            drop(registry.get(&name).unwrap());
        }
        let mut after = registry.stats();
        let slow = Duration::from_secs(1);
        // The wall clock stepped 30 s ahead between the reads; the uptime grew by 1 s.
        after.taken_at_unix_ms = before.taken_at_unix_ms + 31_000;
        let stepped = build(
            Some(&read_of(before.clone(), 1000, started)),
            &read_of(after.clone(), 2000, started),
            slow,
        );
        let rates = stepped.databases[0]
            .rates
            .as_ref()
            .expect("rates across a step of the wall clock");
        assert_eq!(rates.acquires, 3);
        // The same clocks from an older registry, which does not say: taken for a restart.
        let older = build(
            Some(&read_of(before.clone(), 1000, None)),
            &read_of(after.clone(), 2000, None),
            slow,
        );
        assert!(older.databases[0].rates.is_none());
        // Uptimes that line up, but another start: another process.
        after.taken_at_unix_ms = before.taken_at_unix_ms + 1000;
        let other = build(
            Some(&read_of(before, 1000, started)),
            &read_of(after, 2000, started.map(|s| s + 5)),
            slow,
        );
        assert!(
            other.databases[0].rates.is_none(),
            "rates across two processes"
        );
    }

    /// A registry with one database, `inventory`, in `dir`; its snapshot with `live` and
    /// `max_size` set as given.
    fn snapshot_with(
        dir: &std::path::Path,
        live: u32,
        max_size: u32,
    ) -> Result<hive_db_core::RegistrySnapshot, Box<dyn std::error::Error>> {
        let registry = Registry::new();
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        registry.register(&DbName::new("inventory")?, dir.join("i.db"), config)?;
        let mut value = serde_json::to_value(registry.stats())?;
        value["databases"][0]["live"] = serde_json::json!(live);
        value["databases"][0]["max_size"] = serde_json::json!(max_size);
        Ok(serde_json::from_value(value)?)
    }

    /// Bug caught: the leak check's "more live connections than the maximum" never firing
    /// (it cannot happen in a healthy pool, so only a crafted snapshot shows it).
    #[test]
    fn more_live_than_max_is_degraded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let slow = Duration::from_secs(1);
        let fine = build(
            None,
            &read_of(snapshot_with(dir.path(), 0, 10)?, 1, None),
            slow,
        );
        assert!(
            fine.databases[0]
                .findings
                .iter()
                .all(|f| f.kind != FindingKind::OverMax)
        );
        let report = build(
            None,
            &read_of(snapshot_with(dir.path(), 11, 10)?, 1, None),
            slow,
        );
        let d = &report.databases[0];
        assert!(
            d.findings.iter().any(|f| f.kind == FindingKind::OverMax),
            "{:?}",
            d.findings
        );
        assert_eq!(d.status(), HealthStatus::Degraded);
        assert_eq!(report.exit_code(), 1);
        Ok(())
    }

    /// Bug caught: a derived figure (`status`, `exit_code`, `total`, a database's `status`)
    /// missing from the JSON, out of its place, or not following the findings, now that the
    /// report computes it instead of storing it; or the JSON not reading back.
    #[test]
    fn json_carries_what_is_derived() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let report = build(
            None,
            &read_of(snapshot_with(dir.path(), 11, 10)?, 1, None),
            Duration::from_secs(1),
        );
        let text = serde_json::to_string(&report)?;
        let at = |key: &str| text.find(&format!("\"{key}\":"));
        let order = [
            "report_version",
            "taken_at_unix_ms",
            "status",
            "exit_code",
            "databases",
            "total",
        ]
        .map(at);
        assert!(order.iter().all(Option::is_some), "{text}");
        assert!(order.is_sorted(), "top-level fields out of order: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(v["report_version"], REPORT_VERSION);
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["total"]["live"], 11);
        assert_eq!(v["databases"][0]["status"], "degraded");
        assert_eq!(v["databases"][0]["findings"][0]["kind"], "over_max");
        let back: Report = serde_json::from_str(&text)?;
        assert_eq!(serde_json::to_string(&back)?, text);
        Ok(())
    }

    /// A PostgreSQL primary at 15.10 with 7 of 100 connections in use.
    fn primary_facts() -> serde_json::Value {
        serde_json::json!({
            "version": "15.10 (Debian 15.10-0+deb12u1)",
            "in_recovery": false,
            "read_only": false,
            "connections": 7,
            "max_connections": 100,
            "age_ms": 120
        })
    }

    /// A replica at `port` with `status`, its lag, error and reads.
    fn replica(
        port: u16,
        status: &str,
        lag_ms: Option<u64>,
        error: Option<&str>,
        reads: u64,
    ) -> serde_json::Value {
        let mut server = primary_facts();
        server["in_recovery"] = true.into();
        server["connections"] = 3.into();
        serde_json::json!({
            "target": format!("postgres://app@127.0.0.1:{port}/orders"),
            "status": status,
            "lag_ms": lag_ms,
            // A down replica keeps the facts it gave when it last answered.
            "server": server,
            "error": error,
            "live": 1,
            "idle": 1,
            "reads": reads
        })
    }

    /// One read of a registry's PostgreSQL database `orders` whose servers are `pg` (the
    /// `postgres` field of its snapshot, `null` for none), and whose health check said
    /// `health`: a real snapshot of a SQLite pool in `dir`, made a PostgreSQL one as its
    /// JSON would say.
    fn pg_sample(
        dir: &std::path::Path,
        pg: serde_json::Value,
        health: HealthFacts,
    ) -> Result<Sample, Box<dyn std::error::Error>> {
        let mut value = serde_json::to_value(snapshot_with(dir, 0, 10)?)?;
        let db = &mut value["databases"][0];
        db["name"] = "orders".into();
        db["backend"] = "postgres".into();
        db["path"] = "postgres://app@127.0.0.1:5432/orders".into();
        db["sqlite"] = serde_json::json!({"file_bytes": 0, "wal_bytes": 0});
        db["postgres"] = pg;
        let mut sample = read_of(serde_json::from_value(value)?, 1, None);
        sample.dbs[0].path = Some("postgres://app@127.0.0.1:5432/orders".into());
        sample.dbs[0].health = Some(health);
        Ok(sample)
    }

    fn healthy() -> HealthFacts {
        HealthFacts {
            status: HealthStatus::Healthy,
            latency_ms: 1.0,
            error: None,
        }
    }

    /// Bug caught: a lagging or down replica, or a primary the registry cannot measure, left
    /// out of the status (healthy, exit 0) or judged unhealthy (exit 2) while reads still
    /// work; or replicas that take reads reported as a problem.
    #[test]
    fn servers_feed_the_status() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let slow = Duration::from_secs(1);
        let fine = serde_json::json!({
            "primary": primary_facts(),
            "primary_error": null,
            "replicas": [replica(5433, "up", Some(3), None, 40)],
            "replica_fallbacks": 0
        });
        let report = build(None, &pg_sample(dir.path(), fine, healthy())?, slow);
        assert_eq!(report.databases[0].findings, Vec::new());
        assert_eq!(report.exit_code(), 0);

        let troubled = serde_json::json!({
            "primary": null,
            "primary_error": "connection refused",
            "replicas": [
                replica(5433, "lagging", Some(4000), Some("4.0s behind, bound 1s"), 40),
                replica(5434, "down", None, Some("connection refused"), 0),
                replica(5435, "up", Some(3), None, 40)
            ],
            "replica_fallbacks": 12
        });
        let report = build(None, &pg_sample(dir.path(), troubled, healthy())?, slow);
        let d = &report.databases[0];
        let kinds: Vec<_> = d.findings.iter().map(|f| (f.kind, f.status)).collect();
        use FindingKind::{Primary, Replica};
        use HealthStatus::Degraded;
        assert_eq!(
            kinds,
            [
                (Primary, Degraded),
                (Replica, Degraded),
                (Replica, Degraded)
            ],
            "{:?}",
            d.findings
        );
        assert!(d.findings[1].message.contains("replica1 ("));
        assert!(d.findings[1].message.contains(":5433/orders) lagging"));
        assert!(d.findings[2].message.contains(":5434/orders) down"));
        assert_eq!(report.exit_code(), 1);
        Ok(())
    }

    /// Bug caught: a registry's health note that only repeats a replica's problem shown as a
    /// finding of its own too (every problem twice), or the health note's other part (a
    /// saturated pool) lost with it.
    #[test]
    fn health_notes_on_servers_are_not_repeated() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pg = serde_json::json!({
            "primary": primary_facts(),
            "primary_error": null,
            "replicas": [replica(5434, "down", None, Some("connection refused"), 0)],
            "replica_fallbacks": 2
        });
        let note = "replica1 (postgres://app@127.0.0.1:5434/orders) down: connection refused";
        let health = |error: &str| HealthFacts {
            status: HealthStatus::Degraded,
            latency_ms: 1.0,
            error: Some(error.to_owned()),
        };
        let slow = Duration::from_secs(1);
        let alone = build(
            None,
            &pg_sample(dir.path(), pg.clone(), health(note))?,
            slow,
        );
        let kinds: Vec<_> = alone.databases[0].findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::Replica], "{:?}", alone.databases[0]);
        assert_eq!(alone.databases[0].findings[0].message, note);

        let saturated = "pool saturated: 10 of 10 connections busy, 3 callers waiting";
        let both = build(
            None,
            &pg_sample(dir.path(), pg, health(&format!("{saturated}; {note}")))?,
            slow,
        );
        let findings = &both.databases[0].findings;
        let kinds: Vec<_> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::Health, FindingKind::Replica]);
        assert_eq!(findings[0].message, saturated);
        Ok(())
    }

    /// Bug caught: a PostgreSQL database's engine or servers missing from the JSON, a SQLite
    /// section of zeros for it, or the JSON not reading back into the same report.
    #[test]
    fn json_carries_engine_and_servers() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pg = serde_json::json!({
            "primary": primary_facts(),
            "primary_error": null,
            "replicas": [replica(5433, "lagging", Some(1500), Some("behind"), 9)],
            "replica_fallbacks": 4
        });
        let report = build(
            None,
            &pg_sample(dir.path(), pg, healthy())?,
            Duration::from_secs(1),
        );
        let text = serde_json::to_string(&report)?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let d = &v["databases"][0];
        assert_eq!(d["backend"], "postgres");
        assert_eq!(d["path"], "postgres://app@127.0.0.1:5432/orders");
        assert!(d["sqlite"].is_null(), "{d}");
        assert_eq!(d["postgres"]["primary"]["max_connections"], 100);
        assert_eq!(d["postgres"]["replicas"][0]["status"], "lagging");
        assert_eq!(d["postgres"]["replicas"][0]["lag_ms"], 1500);
        assert_eq!(d["postgres"]["replica_fallbacks"], 4);
        assert_eq!(d["findings"][0]["kind"], "replica");
        let back: Report = serde_json::from_str(&text)?;
        assert_eq!(serde_json::to_string(&back)?, text);
        Ok(())
    }

    /// Bug caught: a snapshot from a registry of an older version (no `backend`, no
    /// `postgres`) refused, or read as anything but a SQLite database with its file's sizes;
    /// or a report of an older version (no `backend`, no `postgres`) refused.
    #[test]
    fn older_snapshots_and_reports_read_as_sqlite() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut value = serde_json::to_value(snapshot_with(dir.path(), 0, 10)?)?;
        let db = value["databases"][0]
            .as_object_mut()
            .ok_or("a database is an object")?;
        assert!(db.remove("backend").is_some() && db.remove("postgres").is_some());
        db.insert(
            "sqlite".to_owned(),
            serde_json::json!({"file_bytes": 4096, "wal_bytes": 0}),
        );
        let report = build(
            None,
            &read_of(serde_json::from_value(value)?, 1, None),
            Duration::from_secs(1),
        );
        let d = &report.databases[0];
        assert_eq!(d.backend, Some(Backend::Sqlite));
        assert_eq!(d.postgres, None);
        assert_eq!(d.sqlite.as_ref().map(|s| s.file_bytes), Some(4096));
        assert_eq!(report.exit_code(), 0);

        let mut old = serde_json::to_value(&report)?;
        let db = old["databases"][0]
            .as_object_mut()
            .ok_or("a database is an object")?;
        assert!(db.remove("backend").is_some() && db.remove("postgres").is_some());
        let back: Report = serde_json::from_value(old)?;
        assert_eq!(back.databases[0].backend, None);
        assert_eq!(back.databases[0].postgres, None);
        Ok(())
    }

    /// The line of `text` that holds every one of `parts`.
    fn line_with<'a>(text: &'a str, parts: &[&str]) -> Option<&'a str> {
        text.lines().find(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// Bug caught: a PostgreSQL database shown without its engine, without its servers
    /// (primary's version, connections of max_connections, and whether it is a standby; a
    /// replica's status, lag and reads; the fallbacks), or with a SQLite section of zeros.
    #[test]
    fn postgres_engine_and_servers() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pg = serde_json::json!({
            "primary": primary_facts(),
            "primary_error": null,
            "replicas": [
                replica(5433, "lagging", Some(1500), Some("behind"), 9),
                replica(5434, "down", None, Some("connection refused"), 0)
            ],
            "replica_fallbacks": 4
        });
        let report = build(
            None,
            &pg_sample(dir.path(), pg, healthy())?,
            Duration::from_secs(1),
        );
        let text = full(&report, None);
        assert!(
            line_with(&text, &["orders", "postgres", "degraded", "0/10"]).is_some(),
            "{text}"
        );
        assert!(text.contains("\nPostgreSQL servers\n"), "{text}");
        let primary = line_with(&text, &["primary", ":5432/orders"]).ok_or(text.clone())?;
        for want in [" up ", "15.10 ", "7/100"] {
            assert!(primary.contains(want), "no {want:?} in {primary}");
        }
        assert!(
            !primary.contains("Debian") && !primary.contains("standby"),
            "{primary}"
        );
        let lagging = line_with(&text, &["replica", ":5433/orders"]).ok_or(text.clone())?;
        for want in ["lagging", "3/100", "1.50s", " 9 "] {
            assert!(lagging.contains(want), "no {want:?} in {lagging}");
        }
        let down = line_with(&text, &["replica", ":5434/orders"]).ok_or(text.clone())?;
        assert!(down.contains(" down "), "{down}");
        assert!(!down.contains("15.10") && !down.contains("/100"), "{down}");
        assert!(text.contains("orders: 4 replica fallbacks"), "{text}");
        assert!(!text.contains("\nSQLite\n"), "{text}");

        // A primary that turned out a standby says so where its role is, and that it takes
        // no writes.
        let mut standby = primary_facts();
        standby["in_recovery"] = true.into();
        let refusing = "the server is in recovery or read-only: it cannot take writes";
        let text = primary_only(dir.path(), standby, refusing)?;
        let row = line_with(&text, &["orders", "primary, standby", ":5432/orders"])
            .ok_or(text.clone())?;
        assert!(row.contains("no writes") && row.contains("7/100"), "{row}");
        assert!(!text.contains("fallbacks"), "{text}");

        // One the registry cannot reach: its facts from before are no longer so.
        let text = primary_only(dir.path(), primary_facts(), "connection refused")?;
        let row = line_with(&text, &["orders", "primary", ":5432/orders"]).ok_or(text.clone())?;
        assert!(
            row.contains("unreachable") && !row.contains("7/100"),
            "{row}"
        );
        Ok(())
    }

    /// The full report of `orders` with only a primary, of `facts`, and `error`.
    fn primary_only(
        dir: &std::path::Path,
        facts: serde_json::Value,
        error: &str,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let pg = serde_json::json!({
            "primary": facts,
            "primary_error": error,
            "replicas": [],
            "replica_fallbacks": 0
        });
        let report = build(
            None,
            &pg_sample(dir, pg, healthy())?,
            Duration::from_secs(1),
        );
        Ok(full(&report, None))
    }

    /// Bug caught: a SQLite-only report changed beyond the engine column (a servers section
    /// appearing, the SQLite section lost), or the engine column missing from the narrow
    /// table or out of its place after the name.
    #[test]
    fn sqlite_only_gains_only_the_engine() -> TestResult {
        let dir = tempfile::tempdir()?;
        let report = build(
            None,
            &read_of(snapshot_with(dir.path(), 0, 10)?, 1, None),
            Duration::from_secs(1),
        );
        let text = full(&report, None);
        assert!(!text.contains("PostgreSQL"), "{text}");
        assert!(text.contains("\nSQLite\n"), "{text}");
        assert_eq!(servers(&report, None), None);
        for width in [None, Some(100)] {
            let pools = pools(&report, width);
            let head = line_with(&pools, &["db", "status"]).ok_or(pools.clone())?;
            let words: Vec<&str> = head
                .split(|c: char| c.is_whitespace() || c == '│')
                .filter(|w| !w.is_empty())
                .collect();
            assert_eq!(words[..3], ["db", "engine", "status"], "{pools}");
            assert!(
                line_with(&pools, &["inventory", "sqlite", "healthy"]).is_some(),
                "{pools}"
            );
        }
        Ok(())
    }
}
