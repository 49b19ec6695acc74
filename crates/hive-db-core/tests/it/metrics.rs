//! The Prometheus view: parsed back and checked value by value against its snapshot, checked
//! by `promtool` where installed, and free of paths and SQL.

use std::collections::BTreeSet;
use std::time::Duration;

use hive_db_core::{DbName, DbSnapshot, LatencySummary, RegistrySnapshot, prometheus_text};
use prometheus_parse::{Scrape, Value};

use crate::support::{TestResult, config, create_table, fixture};

fn parse(text: &str) -> anyhow::Result<Scrape> {
    Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?)
}

/// A registry snapshot with real histograms and a closed database, whose counters and gauges
/// are then set to distinct values (through the wire format), so that one field shown under
/// another's name cannot go unnoticed.
fn distinct_snapshot() -> anyhow::Result<RegistrySnapshot> {
    let f = fixture("alpha", config())?;
    create_table(&f)?;
    for i in 0..20 {
        f.registry.write(&f.name, |tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
            Ok(())
        })?;
    }
    let _ = f.registry.write_with(&f.name, |_| -> anyhow::Result<()> {
        anyhow::bail!("roll back")
    });
    let beta = DbName::new("beta")?;
    f.registry
        .register(&beta, f.dir.path().join("beta.db"), config())?;
    drop(f.registry.get(&beta)?);
    f.registry.close(&beta, Duration::from_secs(5))?;

    let mut json = serde_json::to_value(f.registry.stats())?;
    let mut next = 1000u64;
    let mut distinct = |v: &mut serde_json::Value| {
        next += 7;
        *v = next.into();
    };
    let dbs = json["databases"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("no databases"))?;
    for db in dbs {
        for key in [
            "max_size",
            "min_idle",
            "live",
            "waiting",
            "writer_queue",
            "held_past_leak_threshold",
            "async_read_queue",
            "async_write_queue",
        ] {
            distinct(&mut db[key]);
        }
        // Idle below live, so that active is positive and differs from both.
        db["idle"] = (db["live"].as_u64().unwrap_or(0) / 3).into();
        db["maxwait_ns"] = 1_234_567_891_u64.into();
        for key in ["file_bytes", "wal_bytes"] {
            distinct(&mut db["sqlite"][key]);
        }
        let totals = db["totals"]
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("no totals"))?;
        for (key, value) in totals.iter_mut() {
            if key == "connections_closed" {
                if let Some(closed) = value.as_object_mut() {
                    closed.values_mut().for_each(&mut distinct);
                }
            } else {
                distinct(value);
            }
        }
        // A sum whose seconds need more digits than an f64 keeps, and one hold past the
        // last bound: in `+Inf` only.
        db["hold_time"]["sum_ns"] = 12_345_678_901_234_567_891_u64.into();
        let last = db["hold_time"]["buckets"]
            .as_array()
            .and_then(|b| b.last())
            .and_then(|b| b["count"].as_u64())
            .unwrap_or(0);
        db["hold_time"]["count"] = (last + 1).into();
    }
    json["uptime_ms"] = 86_400_123_u64.into();
    Ok(serde_json::from_value(json)?)
}

/// What each counter and gauge must show for a database, written here independently of
/// the view's own table.
/// A series: its metric name, the label besides `db` if any, and its value.
type Series = (&'static str, Option<(&'static str, &'static str)>, f64);

fn expected(db: &DbSnapshot) -> Vec<Series> {
    let t = &db.totals;
    let c = &t.connections_closed;
    let n = |v: u64| v as f64;
    vec![
        ("hive_db_up", None, if db.open { 1.0 } else { 0.0 }),
        ("hive_db_connections_max", None, db.max_size.into()),
        ("hive_db_connections_min_idle", None, db.min_idle.into()),
        ("hive_db_connections_pending", None, db.waiting.into()),
        ("hive_db_writer_lane_queued", None, db.writer_queue.into()),
        (
            "hive_db_async_read_queued",
            None,
            db.async_read_queue.into(),
        ),
        (
            "hive_db_async_write_queued",
            None,
            db.async_write_queue.into(),
        ),
        (
            "hive_db_async_cancelled_before_start_total",
            None,
            n(t.async_cancelled_before_start),
        ),
        (
            "hive_db_async_cancelled_after_start_total",
            None,
            n(t.async_cancelled_after_start),
        ),
        (
            "hive_db_async_queue_full_total",
            None,
            n(t.async_queue_full),
        ),
        ("hive_db_maxwait_seconds", None, db.maxwait_ns as f64 / 1e9),
        (
            "hive_db_connections_held_past_leak_threshold",
            None,
            db.held_past_leak_threshold.into(),
        ),
        ("hive_db_file_size_bytes", None, n(db.sqlite.file_bytes)),
        ("hive_db_wal_size_bytes", None, n(db.sqlite.wal_bytes)),
        (
            "hive_db_connections",
            Some(("state", "active")),
            db.active().into(),
        ),
        (
            "hive_db_connections",
            Some(("state", "idle")),
            db.idle.into(),
        ),
        ("hive_db_acquires_total", None, n(db.acquire_wait.count)),
        ("hive_db_acquires_waited_total", None, n(t.acquires_waited)),
        (
            "hive_db_acquire_timeouts_total",
            None,
            n(t.acquire_timeouts),
        ),
        (
            "hive_db_writer_lane_timeouts_total",
            None,
            n(t.writer_timeouts),
        ),
        (
            "hive_db_connections_created_total",
            None,
            n(t.connections_created),
        ),
        ("hive_db_connect_errors_total", None, n(t.connect_errors)),
        ("hive_db_busy_errors_total", None, n(t.busy_errors)),
        ("hive_db_leaks_total", None, n(t.leaks)),
        ("hive_db_commits_total", None, n(t.commits)),
        ("hive_db_rollbacks_total", None, n(t.rollbacks)),
        (
            "hive_db_write_transactions_total",
            None,
            n(t.write_transactions),
        ),
        ("hive_db_checkpoints_total", None, n(t.checkpoints)),
        (
            "hive_db_failed_transactions_total",
            None,
            n(t.failed_transactions),
        ),
        ("hive_db_write_retries_total", None, n(t.write_retries)),
        (
            "hive_db_backend_info",
            Some(("backend", db.backend.as_str())),
            1.0,
        ),
        (
            "hive_db_connections_closed_total",
            Some(("reason", "broken")),
            n(c.broken),
        ),
        (
            "hive_db_connections_closed_total",
            Some(("reason", "validation_failed")),
            n(c.validation_failed),
        ),
        (
            "hive_db_connections_closed_total",
            Some(("reason", "max_lifetime")),
            n(c.max_lifetime),
        ),
        (
            "hive_db_connections_closed_total",
            Some(("reason", "idle_timeout")),
            n(c.idle_timeout),
        ),
        (
            "hive_db_connections_closed_total",
            Some(("reason", "pool_closed")),
            n(c.pool_closed),
        ),
        (
            "hive_db_connections_closed_total",
            Some(("reason", "session_changed")),
            n(c.session_changed),
        ),
    ]
}

fn histograms(db: &DbSnapshot) -> [(&'static str, &LatencySummary); 3] {
    [
        ("hive_db_acquire_wait_seconds", &db.acquire_wait),
        ("hive_db_connection_hold_seconds", &db.hold_time),
        ("hive_db_writer_wait_seconds", &db.writer_wait),
    ]
}

/// Bug caught: a metric showing another field's value, a missing family or database, a
/// closed database shown as up, a histogram whose buckets are not the snapshot's, not
/// cumulative, or end anywhere but at `_count`, or a `_sum` rounded or in the wrong unit.
#[test]
fn prometheus_output_matches_its_snapshot_value_by_value() -> TestResult {
    let snap = distinct_snapshot()?;
    assert_eq!(snap.databases.len(), 2);
    let text = prometheus_text(&snap);
    let scrape = parse(&text)?;
    let find = |metric: &str, db: &str, extra: Option<(&str, &str)>| {
        let found: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric
                    && s.labels.get("db") == Some(db)
                    && extra.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{metric} {db} {extra:?}: {found:?}");
        found[0].value.clone()
    };
    for db in &snap.databases {
        let name = db.name.as_str();
        for (metric, extra, want) in expected(db) {
            let got = match find(metric, name, extra) {
                Value::Counter(v) => {
                    assert!(metric.ends_with("_total"), "{metric} typed counter");
                    v
                }
                Value::Gauge(v) => {
                    assert!(!metric.ends_with("_total"), "{metric} typed gauge");
                    v
                }
                other => panic!("{metric}: {other:?}"),
            };
            assert_eq!(got, want, "{metric} {extra:?} of {name}");
        }
        for (metric, summary) in histograms(db) {
            let Value::Histogram(buckets) = find(metric, name, None) else {
                panic!("{metric} is not a histogram");
            };
            assert_eq!(buckets.len(), summary.buckets.len() + 1, "{metric}");
            for (got, want) in buckets.iter().zip(&summary.buckets) {
                assert_eq!((got.less_than, got.count), (want.le, want.count as f64));
            }
            for pair in buckets.windows(2) {
                assert!(pair[0].less_than < pair[1].less_than, "{metric} bounds");
                assert!(pair[0].count <= pair[1].count, "{metric} not cumulative");
            }
            let last = buckets.last().expect("+Inf bucket");
            assert!(last.less_than.is_infinite());
            assert_eq!(last.count, summary.count as f64, "{metric} +Inf");
            let untyped = |suffix: &str| match find(&format!("{metric}{suffix}"), name, None) {
                Value::Untyped(v) => v,
                other => panic!("{metric}{suffix}: {other:?}"),
            };
            assert_eq!(untyped("_count"), summary.count as f64);
            let sum = summary.sum_ns as f64 / 1e9;
            assert!((untyped("_sum") - sum).abs() <= sum * 1e-15, "{metric}_sum");
        }
    }
    assert!(
        snap.get("alpha")
            .is_some_and(|d| d.open && d.acquire_wait.count > 0)
    );
    assert!(snap.get("beta").is_some_and(|d| !d.open));
    // The exact decimal, which an f64 would round.
    assert!(
        text.contains("hive_db_connection_hold_seconds_sum{db=\"alpha\"} 12345678901.234567891\n"),
        "{text}"
    );
    assert!(text.contains("hive_db_maxwait_seconds{db=\"beta\"} 1.234567891\n"));
    assert!(text.contains("\nhive_db_uptime_seconds 86400.123\n"));

    // Every family documented and typed once; only the labels the view promises.
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(families.insert(name.to_owned()), "{name} typed twice");
            assert!(scrape.docs.contains_key(name), "{name} has no HELP");
        }
    }
    assert_eq!(families.len(), 35, "{families:?}");
    let allowed: BTreeSet<&str> = ["db", "state", "reason", "backend"].into();
    for s in &scrape.samples {
        assert!(s.metric.starts_with("hive_db_"), "{}", s.metric);
        for key in s.labels.keys() {
            assert!(
                allowed.contains(key.as_str()),
                "{} has label {key}",
                s.metric
            );
        }
    }
    Ok(())
}

/// Bug caught: a family printed only for some databases, or a snapshot with no databases
/// rendering malformed text (a family with no samples is fine, a broken line is not).
#[test]
fn an_empty_registry_renders_headers_only() -> TestResult {
    let snap = hive_db_core::Registry::new().stats();
    let text = prometheus_text(&snap);
    let scrape = parse(&text)?;
    let samples: Vec<_> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(samples, ["hive_db_uptime_seconds"]);
    assert_eq!(scrape.docs.len(), 35);
    Ok(())
}

/// Bug caught: the view showing where a database lives, or what ran on it: a path, its
/// folder, a table name from the SQL, a checkout site.
#[test]
fn no_path_or_sql_in_the_output() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("secret-folder-7f3a");
    let registry = hive_db_core::Registry::new();
    let name = DbName::new("plain")?;
    registry.register(&name, folder.join("hidden-file-91c2.db"), config())?;
    registry.write(&name, |tx| {
        tx.execute_batch(
            "CREATE TABLE tbl_recognisable_9 (x); INSERT INTO tbl_recognisable_9 VALUES (1)",
        )?;
        Ok(())
    })?;
    let _ = registry.read(&name, |c| c.execute_batch("SELECT * FROM missing_tbl_5d"));
    let text = prometheus_text(&registry.stats());
    assert!(text.contains("hive_db_up{db=\"plain\"} 1"), "{text}");
    for secret in [
        "secret-folder-7f3a",
        "hidden-file-91c2",
        &dir.path().display().to_string(),
        "tbl_recognisable_9",
        "missing_tbl_5d",
        "SELECT",
        "INSERT",
        ".rs",
    ] {
        assert!(!text.contains(secret), "{secret} in the output");
    }
    Ok(())
}

/// Bug caught: output that Prometheus's own linter rejects (bad names, units, types,
/// histogram shape, help text). Skips, saying so, where `promtool` is not installed.
#[test]
fn promtool_accepts_the_output() -> TestResult {
    let Some(promtool) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("skipped: promtool is not installed (Debian package `prometheus`)");
        return Ok(());
    };
    let text = prometheus_text(&distinct_snapshot()?);
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
    Ok(())
}
