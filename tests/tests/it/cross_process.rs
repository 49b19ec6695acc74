//! Behaviour against another process using the same database file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, HealthStatus};
use hive_tests::{NO_HANG, registry_with};

const PEER: &str = env!("CARGO_BIN_EXE_hive-peer");

fn create_table(
    registry: &hive_db_core::Registry,
    db: &hive_db_core::DbName,
) -> anyhow::Result<()> {
    registry.write_with(db, |tx| -> anyhow::Result<_> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        )?;
        Ok(())
    })
}

/// Bug caught: a health check that hangs behind a lock. Another process holds the write
/// lock of one database while SQLite's busy timeout is 60 s; the check still ends near its own
/// timeout, names the blocked database, and the other database stays healthy.
#[test]
fn health_stays_bounded_when_another_process_holds_the_lock() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DbConfig {
        busy_timeout: Duration::from_secs(60),
        ..DbConfig::default()
    };
    let (registry, locked) = registry_with(dir.path(), "locked", config.clone())?;
    create_table(&registry, &locked)?;
    let other = hive_db_core::DbName::new("other")?;
    registry.register(
        &other,
        dir.path().join("other.db"),
        DbConfig {
            create_if_missing: true,
            ..config
        },
    )?;

    let mut peer = Command::new(PEER)
        .args(["hold", &dir.path().join("locked.db").display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(peer.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    assert_eq!(line.trim(), "locked", "peer did not take the lock");

    let start = Instant::now();
    let report = registry.health(Duration::from_millis(300));
    let elapsed = start.elapsed();
    drop(peer.stdin.take()); // lets the peer roll back and exit
    let status = peer.wait()?;
    assert!(status.success());

    assert!(elapsed < NO_HANG, "health took {elapsed:?}");
    let by_name = |n: &str| {
        report
            .databases
            .iter()
            .find(|d| d.name.as_str() == n)
            .expect("database in report")
    };
    assert_eq!(
        by_name("locked").status,
        HealthStatus::Degraded,
        "{report:#?}"
    );
    assert_eq!(
        by_name("other").status,
        HealthStatus::Healthy,
        "{report:#?}"
    );
    assert_eq!(report.status, HealthStatus::Degraded);
    // Once the peer is gone, the database is healthy again and the peer's row never landed.
    assert_eq!(
        registry.health(Duration::from_secs(2)).status,
        HealthStatus::Healthy
    );
    let n: i64 = registry.read(&locked, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
    })?;
    assert_eq!(n, 0);
    Ok(())
}

/// Two processes, each with its own registry, write the same file at once: no write is lost
/// or doubled, and neither side sees an error (the writer lane serialises in-process; SQLite's
/// busy timeout covers the other process).
#[test]
fn two_processes_write_the_same_database_without_losing_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (registry, db) = registry_with(
        dir.path(),
        "shared",
        DbConfig {
            busy_timeout: Duration::from_secs(20),
            ..DbConfig::default()
        },
    )?;
    create_table(&registry, &db)?;
    let per_side = 300;
    let peer = Command::new(PEER)
        .args([
            "write",
            &dir.path().join("shared.db").display().to_string(),
            &per_side.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    for i in 0..per_side {
        registry.write(&db, |tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
            Ok(())
        })?;
    }
    let out = peer.wait_with_output()?;
    assert!(out.status.success(), "peer failed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("done {per_side}")
    );
    let (mine, theirs): (i64, i64) = registry.read(&db, |c| {
        c.query_row(
            "SELECT count(*) FILTER (WHERE v < 1000000), count(DISTINCT v) FILTER (WHERE v >= 1000000) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    })?;
    assert_eq!((mine, theirs), (per_side, per_side));
    let integrity: String = registry.read(&db, |c| {
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
    })?;
    assert_eq!(integrity, "ok");
    Ok(())
}
