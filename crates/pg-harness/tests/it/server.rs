//! One server: databases of its own, restarts on the same port, and the end of its folder.

use hive_pg_harness::{Server, require_postgres, server};

/// Bug caught: two tests handed the same database, or a URL that does not reach the server.
#[test]
fn fresh_databases_are_distinct_and_reachable() -> anyhow::Result<()> {
    require_postgres!();
    let srv = server()?;
    let (a, b) = (srv.fresh_db()?, srv.fresh_db()?);
    assert_ne!(a, b);
    let mut client = postgres::Client::connect(&a, postgres::NoTls)?;
    client.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")?;
    let mut other = postgres::Client::connect(&b, postgres::NoTls)?;
    let seen: Option<String> = other
        .query_one("SELECT to_regclass('t')::text", &[])?
        .try_get(0)?;
    assert_eq!(seen, None, "the second database is not empty");
    Ok(())
}

/// Bug caught: a restart on another port or data folder (the data gone), a kill -9 the node
/// cannot start after, or a dropped server whose postmaster and folder stay behind.
#[test]
fn a_server_survives_restart_and_crash_and_goes_when_dropped() -> anyhow::Result<()> {
    require_postgres!();
    let srv = Server::start()?;
    let url = srv.fresh_db()?;
    let port = srv.port();
    postgres::Client::connect(&url, postgres::NoTls)?
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")?;
    srv.node().restart()?;
    assert_eq!(srv.port(), port);
    srv.node().kill9()?;
    assert!(
        srv.admin().is_err(),
        "still accepting connections after kill -9"
    );
    srv.node().start()?;
    let n: i64 = postgres::Client::connect(&url, postgres::NoTls)?
        .query_one("SELECT count(*) FROM t", &[])?
        .try_get(0)?;
    assert_eq!(n, 1);
    let folder = srv
        .node()
        .data()
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("no folder"))?;
    drop(srv);
    assert!(!folder.exists(), "{} left behind", folder.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens"
    );
    Ok(())
}

/// Bug caught: a server or cluster that cannot be shared between test threads.
#[test]
fn handles_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<hive_pg_harness::Server>();
    shared::<hive_pg_harness::Cluster>();
    shared::<hive_pg_harness::Node>();
}

/// Bug caught: a frozen server thawed with its postmaster alone: as root the postmaster runs
/// under `runuser`, which stops itself when its child stops and, left stopped, never reaped
/// it, so the node's stop waited for good. Also a freeze that let the server answer.
#[test]
fn a_frozen_server_answers_nothing_and_stops_once_thawed() -> anyhow::Result<()> {
    require_postgres!();
    let srv = Server::start()?;
    let url = srv.fresh_db()?;
    srv.node().freeze()?;
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(std::time::Duration::from_millis(500));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(config.connect(postgres::NoTls).is_ok());
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(2)).is_err(),
        "a frozen server answered a connect"
    );
    srv.node().thaw()?;
    postgres::Client::connect(&url, postgres::NoTls)?.batch_execute("SELECT 1")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(srv.node().stop().is_ok());
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(60)).ok(),
        Some(true),
        "the thawed server did not stop"
    );
    Ok(())
}
