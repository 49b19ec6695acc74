//! `--attach` and discovery against a registry with a PostgreSQL database beside a SQLite
//! one, on a private PostgreSQL server the test starts (`hive_pg_harness`).

use std::time::{Duration, Instant};

use hive_db_core::endpoint::{self, Announce, EndpointConfig};
use hive_db_core::{DbConfig, DbName, PgConfig, Registry, ReplicaStatus};
use hive_pg_harness::require_postgres;

use crate::server::serve_registry;
use crate::{TestResult, monitor, run, runtime_dir};

/// A loopback port nothing listens on: bound, then let go.
pub(crate) fn closed_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A registry with `inventory`, a SQLite file in `dir`, and `orders`, a fresh database on
/// the test's PostgreSQL server with one replica that cannot be reached; returned once the
/// registry has measured the primary and found the replica down.
pub(crate) fn mixed_registry(
    dir: &std::path::Path,
    replica_port: u16,
) -> Result<(Registry, String), Box<dyn std::error::Error>> {
    let registry = Registry::new();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let orders = DbName::new("orders")?;
    registry.register_postgres(
        &orders,
        &url,
        PgConfig {
            pool: DbConfig {
                max_size: 4,
                min_idle: 1,
                connection_timeout: Duration::from_secs(10),
                ..DbConfig::default()
            },
            replicas: vec![format!(
                "postgres://postgres@127.0.0.1:{replica_port}/orders?connect_timeout=2"
            )],
            monitor_interval: Duration::from_millis(50),
            ..PgConfig::default()
        },
    )?;
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    registry.register(&DbName::new("inventory")?, dir.join("inventory.db"), config)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pg = registry
            .db_stats(&orders)?
            .postgres
            .ok_or("no postgres facts")?;
        if pg.primary.is_some()
            && pg.replicas.first().map(|r| r.status) == Some(ReplicaStatus::Down)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the registry never measured its servers: {pg:#?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((registry, url))
}

/// Bug caught: a PostgreSQL database read from a live endpoint shown without its engine or
/// its servers (the primary's version and connections, the replica's status), its down
/// replica not making it degraded (exit 1) or shown twice (a finding and the health note
/// repeating it), a SQLite row for it, or the SQLite database beside it losing its own.
#[test]
fn attach_shows_engines_and_servers() -> TestResult {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let replica_port = closed_port()?;
    let (registry, url) = mixed_registry(dir.path(), replica_port)?;
    let server = serve_registry(&registry)?;
    let attach = [
        "--interval",
        "100ms",
        "--attach",
        &server.addr().to_string(),
    ];

    let r = run(monitor(dir.path()).arg("--json").args(attach))?;
    assert_eq!(r.code, Some(1), "{r:?}");
    let v = r.json()?;
    let dbs = v["databases"].as_array().ok_or("no databases")?;
    let db = |name: &str| {
        dbs.iter()
            .find(|d| d["name"] == name)
            .ok_or(name.to_owned())
    };
    let (orders, inventory) = (db("orders")?, db("inventory")?);
    assert_eq!(orders["backend"], "postgres");
    assert_eq!(inventory["backend"], "sqlite");
    assert_eq!(inventory["status"], "healthy", "{inventory}");
    assert!(inventory["postgres"].is_null());
    assert!(
        inventory["sqlite"]["page_size"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert_eq!(orders["status"], "degraded", "{orders}");
    // The path is the URL the endpoint shows: the test's, as it has no password.
    assert_eq!(orders["path"], url.as_str());
    assert!(orders["sqlite"].is_null(), "{orders}");
    let primary = &orders["postgres"]["primary"];
    assert!(
        primary["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("15")),
        "{primary}"
    );
    assert_eq!(primary["in_recovery"], false);
    assert!(primary["connections"].as_u64().is_some_and(|n| n >= 1));
    assert!(primary["max_connections"].as_u64().is_some_and(|n| n > 1));
    let replica = &orders["postgres"]["replicas"][0];
    assert_eq!(replica["status"], "down", "{replica}");
    let kinds: Vec<&serde_json::Value> = orders["findings"]
        .as_array()
        .ok_or("no findings")?
        .iter()
        .map(|f| &f["kind"])
        .collect();
    assert_eq!(kinds, ["replica"], "{orders}");

    let r = run(monitor(dir.path()).args(attach))?;
    assert_eq!(r.code, Some(1), "{r:?}");
    let out = &r.stdout;
    let line = |parts: &[&str]| {
        out.lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .ok_or_else(|| format!("no line with {parts:?} in\n{out}"))
    };
    line(&["orders", "postgres", "degraded"])?;
    line(&["inventory", "sqlite", "healthy"])?;
    assert!(out.contains("\nPostgreSQL servers\n"), "{out}");
    // The primary, not a standby, with its version and connections.
    let primary_row = line(&["orders", "primary", " up ", " 15."])?;
    assert!(!primary_row.contains("standby"), "{primary_row}");
    let conns = primary_row
        .split_whitespace()
        .find(|w| w.contains('/') && !w.contains(':'))
        .ok_or(primary_row.clone())?;
    assert!(
        conns.split('/').all(|n| n.parse::<u32>().is_ok()),
        "{conns}"
    );
    line(&[
        "orders",
        "replica",
        &format!(":{replica_port}/orders"),
        " down ",
    ])?;
    line(&["orders: 0 replica fallbacks"])?;
    let sqlite = out
        .split("\nSQLite\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .ok_or(out.clone())?;
    assert!(
        sqlite.contains("inventory") && !sqlite.contains("orders"),
        "{out}"
    );
    Ok(())
}

/// Bug caught: a registry found by discovery (no --attach) showing its PostgreSQL
/// database without its engine or servers: the mode that most people run.
#[test]
fn discovery_shows_engines_and_servers() -> TestResult {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let (registry, _) = mixed_registry(dir.path(), closed_port()?)?;
    std::fs::create_dir_all(runtime_dir(dir.path()))?;
    let folder = runtime_dir(dir.path()).join("hive-db");
    let _endpoint = endpoint::serve(
        &registry,
        EndpointConfig {
            expose_paths: true,
            announce: Announce::Folder(folder),
            ..EndpointConfig::default()
        },
    )?;
    let r = run(monitor(dir.path()).args(["--json", "--interval", "100ms"]))?;
    assert_eq!(r.code, Some(1), "{r:?}");
    let v = r.json()?;
    let orders = v["databases"]
        .as_array()
        .and_then(|dbs| dbs.iter().find(|d| d["name"] == "orders"))
        .ok_or(r.stdout.clone())?;
    assert_eq!(orders["backend"], "postgres");
    assert_eq!(orders["postgres"]["replicas"][0]["status"], "down");
    Ok(())
}
