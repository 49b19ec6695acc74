//! `--attach` against a registry serving its endpoint inside the test.
//!
//! Over 400 lines on purpose: one test per finding the monitor reports on a live endpoint,
//! sharing one serving registry fixture.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, Registry};

use crate::server::{BUSY, FakeServer, serve_registry};
use crate::{TestResult, monitor, run};

fn registry_with(
    dir: &std::path::Path,
    name: &str,
    config: DbConfig,
) -> Result<(Registry, DbName), Box<dyn std::error::Error>> {
    let registry = Registry::new();
    let name = DbName::new(name)?;
    let config = DbConfig {
        create_if_missing: true,
        ..config
    };
    registry.register(&name, dir.join(format!("{name}.db")), config)?;
    registry.write(&name, |tx| {
        tx.execute_batch("CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT)")?;
        Ok(())
    })?;
    Ok((registry, name))
}

/// Bug caught: the pool state or counters of the endpoint not carried into the report
/// (max, live, commits), or a healthy registry not exiting 0.
#[test]
fn healthy_registry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = registry_with(
        dir.path(),
        "inventory",
        DbConfig {
            max_size: 4,
            ..DbConfig::default()
        },
    )?;
    for i in 0..5 {
        registry.write(&name, |tx| {
            tx.execute("INSERT INTO item (label) VALUES (?1)", [format!("n{i}")])?;
            Ok(())
        })?;
    }
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--interval",
        "100ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["status"], "healthy");
    let d = &v["databases"][0];
    assert_eq!(d["name"], "inventory");
    assert_eq!(d["source"], format!("http://{}", server.addr()));
    assert_eq!(d["pool"]["max"], 4);
    assert_eq!(d["pool"]["open"], true);
    assert!(d["pool"]["live"].as_u64().is_some_and(|n| n >= 1), "{d}");
    assert_eq!(d["totals"]["commits"], 6);
    assert_eq!(d["health"]["status"], "healthy");
    assert!(
        d["rates"]["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{d}"
    );
    assert!(
        d["latency"]["acquire_wait"]["count"]
            .as_u64()
            .is_some_and(|n| n >= 6),
        "{d}"
    );
    // The table shows the pool too.
    let r = run(monitor(dir.path()).args([
        "--interval",
        "100ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    for want in ["Pools", "live/max", "Counters", "Latency", "acquire wait"] {
        assert!(r.stdout.contains(want), "no {want:?} in\n{}", r.stdout);
    }
    Ok(())
}

/// Bug caught: the HTTP client took its proxy from the environment (`http_proxy`,
/// `HTTP_PROXY`, `ALL_PROXY`), so a monitor run from a shell with a proxy set sent its
/// loopback requests to the proxy, and reported a healthy registry unreachable (exit 2), or
/// whatever the proxy's host served.
#[test]
fn a_proxy_in_the_environment_is_not_used() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, _name) = registry_with(dir.path(), "inventory", DbConfig::default())?;
    let server = serve_registry(&registry)?;
    // A proxy that refuses every connection.
    let proxy = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", l.local_addr()?)
    };
    let mut cmd = monitor(dir.path());
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, &proxy);
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let r = run(cmd.args([
        "--json",
        "--interval",
        "100ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.json()?["status"], "healthy");
    Ok(())
}

/// Bug caught: an endpoint at its connection limit answers 503 with `Retry-After: 1` (it
/// evicted the monitor's connection to make room, and says to ask again); the monitor took
/// that for "not a hive-db endpoint" (exit 3), or for an unhealthy registry.
#[test]
fn an_endpoint_at_its_connection_limit_is_asked_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, _name) = registry_with(dir.path(), "inventory", DbConfig::default())?;
    let server = serve_registry(&registry)?;
    let real = format!("http://{}", server.addr());
    // In front of the real endpoint: the first answer to each path is the busy one.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let front = FakeServer::start(move |path| {
        let first = seen
            .lock()
            .map(|mut s| s.insert(path.to_owned()))
            .unwrap_or(false);
        if first {
            return (503, BUSY.to_owned());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
        match agent.get(&format!("{real}{path}")).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(ureq::Error::StatusCode(code)) => (code, String::new()),
            Err(e) => (500, e.to_string()),
        }
    })?;
    let r =
        run(monitor(dir.path()).args(["--json", "--interval", "100ms", "--attach", &front.url()]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.json()?["status"], "healthy");

    // Busy past the timeout: said so, not "not a hive-db endpoint".
    let busy = FakeServer::start(|_| (503, BUSY.to_owned()))?;
    let r = run(monitor(dir.path()).args(["--timeout", "0.5", "--attach", &busy.url()]))?;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("connection limit"), "{}", r.stderr);
    Ok(())
}

/// A registry whose `inventory` (leak threshold 50 ms) has a connection held until the
/// registry reported it as a leak; the connection is returned still held.
fn leaked() -> Result<
    (
        tempfile::TempDir,
        Registry,
        DbName,
        hive_db_core::PooledConnection,
    ),
    Box<dyn std::error::Error>,
> {
    let dir = tempfile::tempdir()?;
    let (registry, name) = registry_with(
        dir.path(),
        "inventory",
        DbConfig {
            leak_threshold: Some(Duration::from_millis(50)),
            ..DbConfig::default()
        },
    )?;
    let held = registry.get(&name)?;
    let start = Instant::now();
    while registry.db_stats(&name)?.totals.leaks == 0 {
        assert!(start.elapsed() < crate::HANG, "the leak was never reported");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((dir, registry, name, held))
}

/// Bug caught: a leak check that can never fire: a connection held past `leak_threshold`
/// reported healthy, exit 0.
#[test]
fn leaking_registry_is_degraded() -> TestResult {
    let (dir, registry, _name, held) = leaked()?;
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--interval",
        "100ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    drop(held);
    assert_eq!(r.code, Some(1), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["status"], "degraded");
    let findings = v["databases"][0]["findings"]
        .as_array()
        .ok_or("no findings")?;
    assert!(findings.iter().any(|f| f["kind"] == "leak"), "{findings:?}");
    Ok(())
}

/// Bug caught: a leak finding that sticks once any connection was ever held past the
/// threshold (read from the cumulative count), so a leak given back keeps the monitor at
/// "degraded", exit 1, until the application restarts.
#[test]
fn a_leak_given_back_is_no_longer_degraded() -> TestResult {
    let (dir, registry, name, held) = leaked()?;
    let start = Instant::now();
    drop(held);
    while registry.db_stats(&name)?.held_past_leak_threshold > 0 {
        assert!(
            start.elapsed() < crate::HANG,
            "the leak gauge never went down"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--interval",
        "100ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["status"], "healthy", "{v}");
    assert_eq!(v["databases"][0]["totals"]["leaks"], 1, "{v}");
    assert_eq!(
        v["databases"][0]["pool"]["held_past_leak_threshold"], 0,
        "{v}"
    );
    Ok(())
}

/// Bug caught: acquire timeouts rising between the two reads not noticed (only totals
/// looked at, or the reads compared the wrong way round).
#[test]
fn timeouts_rising_is_degraded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = registry_with(
        dir.path(),
        "inventory",
        DbConfig {
            max_size: 1,
            min_idle: 0,
            connection_timeout: Duration::from_millis(20),
            ..DbConfig::default()
        },
    )?;
    let held = registry.get(&name)?;
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (registry, name, stop) = (registry.clone(), name.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = registry.get(&name);
            }
        })
    };
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--interval",
        "300ms",
        "--attach",
        &server.addr().to_string(),
    ]));
    stop.store(true, Ordering::Relaxed);
    hammer.join().map_err(|_| "hammer panicked")?;
    drop(held);
    let r = r?;
    // Degraded at least; the registry's own health check may find no connection either.
    assert!(matches!(r.code, Some(1 | 2)), "{r:?}");
    let v = r.json()?;
    let d = &v["databases"][0];
    let findings = d["findings"].as_array().ok_or("no findings")?;
    assert!(
        findings.iter().any(|f| f["kind"] == "timeouts"),
        "{findings:?}"
    );
    assert!(
        d["rates"]["timeouts_per_s"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{d}"
    );
    Ok(())
}

/// Bug caught: a closed database (down) reported healthy because it still has counters.
#[test]
fn closed_database_is_unhealthy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = registry_with(dir.path(), "inventory", DbConfig::default())?;
    registry.close(&name, Duration::from_secs(1))?;
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--interval",
        "50ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    assert_eq!(r.code, Some(2), "{r:?}");
    let d = &r.json()?["databases"][0];
    assert_eq!(d["findings"][0]["kind"], "down");
    Ok(())
}

/// Bug caught: per-interval rates computed from totals instead of differences (or not at
/// all) in the JSON lines of `--continuous`.
#[test]
fn continuous_rates_from_deltas() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = registry_with(dir.path(), "inventory", DbConfig::default())?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (registry, name, stop) = (registry.clone(), name.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = registry.read(&name, |c| {
                    c.query_row("SELECT count(*) FROM item", [], |r| r.get::<_, i64>(0))
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--continuous",
        "--duration",
        "1s",
        "--interval",
        "250ms",
        "--attach",
        &server.addr().to_string(),
    ]));
    stop.store(true, Ordering::Relaxed);
    reader.join().map_err(|_| "reader panicked")?;
    let r = r?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(lines.len() >= 2, "{}", r.stdout);
    assert!(
        lines[0]["databases"][0]["rates"].is_null(),
        "no rates without a previous read"
    );
    // The interval counts add up to the difference of the first and last totals, which a
    // rate taken from totals would overshoot many times.
    let count =
        |l: &serde_json::Value| l["databases"][0]["latency"]["acquire_wait"]["count"].as_f64();
    let (first, last) = (
        count(&lines[0]).ok_or("no count")?,
        count(&lines[lines.len() - 1]).ok_or("no count")?,
    );
    let mut summed = 0.0;
    for l in &lines[1..] {
        let rates = &l["databases"][0]["rates"];
        let per_s = rates["acquires_per_s"].as_f64().ok_or("no rate")?;
        let seconds = rates["seconds"].as_f64().ok_or("no seconds")?;
        summed += per_s * seconds;
        assert!(rates["acquire_wait_p99_ms"].as_f64().is_some(), "{rates}");
    }
    assert!(last > first, "the reader did not read");
    assert!(
        (summed - (last - first)).abs() < 0.5,
        "rates add to {summed}, totals grew by {}",
        last - first
    );
    Ok(())
}

/// Bug caught: an endpoint that hides paths (its default) sending empty ones that the
/// monitor then opens as a file name, or shows as a path.
#[test]
fn endpoint_hiding_paths() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, _name) = registry_with(dir.path(), "inventory", DbConfig::default())?;
    // Announced nowhere: the user's own monitors never see a test's registry.
    let server = hive_db_core::endpoint::serve(
        &registry,
        hive_db_core::endpoint::EndpointConfig {
            announce: hive_db_core::endpoint::Announce::Off,
            ..hive_db_core::endpoint::EndpointConfig::default()
        },
    )?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--interval",
        "50ms",
        "--attach",
        &server.addr().to_string(),
    ]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let d = &r.json()?["databases"][0];
    assert!(d["path"].is_null(), "{d}");
    assert!(d["sqlite"]["quick_check"].is_null(), "{d}");
    assert!(
        d["sqlite"]["file_bytes"].as_u64().is_some_and(|b| b > 0),
        "{d}"
    );
    Ok(())
}

/// Bug caught: slow acquires (callers queued behind a connection held for long) reported
/// healthy because the lifetime percentiles are still low, or `--slow` ignored.
#[test]
fn slow_acquires_are_degraded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = registry_with(
        dir.path(),
        "inventory",
        DbConfig {
            max_size: 1,
            min_idle: 0,
            ..DbConfig::default()
        },
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let users: Vec<_> = (0..2)
        .map(|_| {
            let (registry, name, stop) = (registry.clone(), name.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(conn) = registry.get(&name) {
                        std::thread::sleep(Duration::from_millis(200));
                        drop(conn);
                    }
                }
            })
        })
        .collect();
    let server = serve_registry(&registry)?;
    let r = run(monitor(dir.path()).args([
        "--json",
        "--slow",
        "50ms",
        "--interval",
        "1s",
        "--attach",
        &server.addr().to_string(),
    ]));
    stop.store(true, Ordering::Relaxed);
    for u in users {
        u.join().map_err(|_| "user panicked")?;
    }
    let r = r?;
    assert!(matches!(r.code, Some(1 | 2)), "{r:?}");
    let v = r.json()?;
    let findings = v["databases"][0]["findings"]
        .as_array()
        .ok_or("no findings")?;
    assert!(
        findings.iter().any(|f| f["kind"] == "slow_acquire"),
        "{findings:?}"
    );
    Ok(())
}

/// Bug caught: the total row adding up the wrong figures, or one endpoint's databases
/// reported as one.
#[test]
fn two_databases_add_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, _) = registry_with(
        dir.path(),
        "alpha",
        DbConfig {
            max_size: 3,
            ..DbConfig::default()
        },
    )?;
    let beta = DbName::new("beta")?;
    let config = DbConfig {
        create_if_missing: true,
        max_size: 5,
        ..DbConfig::default()
    };
    registry.register(&beta, dir.path().join("beta.db"), config)?;
    let held = registry.get(&beta)?;
    let server = serve_registry(&registry)?;
    let addr = server.addr().to_string();
    let r = run(monitor(dir.path()).args(["--json", "--interval", "50ms", "--attach", &addr]))?;
    drop(held);
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    let names: Vec<_> = v["databases"]
        .as_array()
        .ok_or("no databases")?
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let t = &v["total"];
    assert_eq!(t["pools"], 2);
    assert_eq!(t["max"], 8);
    assert_eq!(t["active"], 1);
    let live = |i: usize| v["databases"][i]["pool"]["live"].as_u64().unwrap_or(0);
    assert_eq!(t["live"].as_u64(), Some(live(0) + live(1)));
    let r = run(monitor(dir.path()).args(["--interval", "50ms", "--attach", &addr]))?;
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("total") && l.contains("/8")),
        "{}",
        r.stdout
    );
    Ok(())
}
