//! PostgreSQL servers that are not what they are registered as, or that refuse us: typed
//! errors naming the database and the cause, at once rather than at the timeout; and the
//! server facts the registry measures. One private server (`hive_pg_harness`).

use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, Error, PgConfig, Refusal, Registry, prometheus_text};

use crate::support::TestResult;
use hive_pg_harness::{require_postgres, server};

/// A configuration whose timeout is long, so a refusal that waited for it shows.
fn patient(min_idle: u32) -> PgConfig {
    PgConfig {
        pool: DbConfig {
            max_size: 4,
            min_idle,
            connection_timeout: Duration::from_secs(20),
            ..DbConfig::default()
        },
        ..PgConfig::default()
    }
}

/// The database part of `url`, for SQL.
fn db_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// Bug caught: a role without the `CONNECT` privilege on the database (SQLSTATE 42501 at
/// connect) retried until `connection_timeout`, every later call too, and reported as a
/// plain timeout, where a refused login or a missing database is refused at once.
#[test]
fn a_role_that_may_not_connect_is_refused_at_once() -> TestResult {
    require_postgres!();
    let srv = server()?;
    let url = srv.fresh_db()?;
    let db = db_of(&url);
    srv.admin()?.batch_execute(&format!(
        "DROP ROLE IF EXISTS noconnect; CREATE ROLE noconnect LOGIN; \
         REVOKE CONNECT ON DATABASE {db} FROM PUBLIC"
    ))?;
    let url = srv.url(db).replacen("postgres@", "noconnect@", 1);
    let registry = Registry::new();
    let name = DbName::new("pg-no-connect")?;
    let start = Instant::now();
    let err = registry
        .register_postgres(&name, &url, patient(1))
        .expect_err("registered");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, Error::Refused { db, cause: Refusal::NoConnectPrivilege, code: Some(c), .. }
            if db == &name && c == "42501"),
        "{err:?}"
    );
    Ok(())
}

/// Bug caught: a database that does not exist retried until `connection_timeout` (every
/// caller stuck 20 s), or reported as a plain timeout; at register, and when it is dropped
/// under a registered pool.
#[test]
fn a_missing_database_is_refused_at_once() -> TestResult {
    require_postgres!();
    let srv = server()?;
    let registry = Registry::new();
    let name = DbName::new("pg-no-db")?;
    let start = Instant::now();
    let err = registry
        .register_postgres(&name, &srv.url("no_such_database"), patient(1))
        .expect_err("registered");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, Error::Refused { db, cause: Refusal::NoSuchDatabase, code: Some(c), .. }
            if db == &name && c == "3D000"),
        "{err:?}"
    );
    assert!(registry.stats().databases.is_empty());

    // Dropped while registered: a checkout that must connect is refused at once too.
    let url = srv.fresh_db()?;
    registry.register_postgres(&name, &url, patient(0))?;
    srv.admin()?
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db_of(&url)))?;
    let start = Instant::now();
    let err = registry
        .postgres(&name)?
        .read_primary(|c| c.batch_execute("SELECT 1"))
        .expect_err("read");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            &err,
            Error::Refused {
                cause: Refusal::NoSuchDatabase,
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

/// Bug caught: a primary registered as a read replica, so "replica" reads went to a server
/// the registry believes lags behind another, or lag measured against itself.
#[test]
fn a_replica_that_is_a_primary_is_refused() -> TestResult {
    require_postgres!();
    let url = server()?.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new("pg-not-replica")?;
    let config = PgConfig {
        replicas: vec![url.clone()],
        ..patient(1)
    };
    let err = registry
        .register_postgres(&name, &url, config)
        .expect_err("registered");
    assert!(
        matches!(&err, Error::Refused { db, cause: Refusal::NotAReplica, .. } if db == &name),
        "{err:?}"
    );
    assert!(registry.stats().databases.is_empty());
    Ok(())
}

/// Bug caught: a primary that refuses writes (read-only by default) registered, so every
/// write failed later with 25006 and its connections were evicted one by one.
#[test]
fn a_read_only_primary_is_refused() -> TestResult {
    require_postgres!();
    let srv = server()?;
    let url = srv.fresh_db()?;
    srv.admin()?.batch_execute(&format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on",
        db_of(&url)
    ))?;
    let registry = Registry::new();
    let name = DbName::new("pg-read-only-primary")?;
    let err = registry
        .register_postgres(&name, &url, patient(1))
        .expect_err("registered");
    assert!(
        matches!(
            &err,
            Error::Refused {
                cause: Refusal::NotWritable,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(error_text(&err).contains("pg-read-only-primary"));
    Ok(())
}

fn error_text(err: &Error) -> String {
    hive_db_core::error_chain(err)
}

/// Bug caught: a server (here, a role) at its connection limit making a checkout hang, or
/// fail with an error that does not say why; 53300 is not a refusal for good, so it waits
/// its timeout, then names the cause.
#[test]
fn a_server_at_its_connection_limit_gives_a_typed_error() -> TestResult {
    require_postgres!();
    let srv = server()?;
    let url = srv.fresh_db()?;
    srv.admin()?.batch_execute(
        "DO $$ BEGIN CREATE ROLE limited LOGIN CONNECTION LIMIT 2; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )?;
    let url = url.replacen("postgres@", "limited@", 1);
    let registry = Registry::new();
    let name = DbName::new("pg-at-limit")?;
    let timeout = Duration::from_millis(800);
    let mut config = patient(0);
    config.pool.connection_timeout = timeout;
    registry.register_postgres(&name, &url, config)?;
    let db = registry.postgres(&name)?;
    // The monitor holds one of the two (once its thread has connected), the checkouts the
    // rest: at most two succeed, then one fails.
    let mut held = Vec::new();
    let (err, took) = loop {
        let start = Instant::now();
        match db.get() {
            Ok(conn) => held.push(conn),
            Err(e) => break (e, start.elapsed()),
        }
        assert!(held.len() <= 2, "more connections than the role's limit");
    };
    assert!(took < timeout * 4, "{took:?}");
    let Error::Timeout {
        db: n, last_error, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(n, &name);
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("too many connections")),
        "{err:?}"
    );
    drop(held);
    Ok(())
}

/// Bug caught: a URL asking for TLS accepted and then failing on every connect with an
/// error that does not say the registry has no TLS.
#[test]
fn a_url_that_requires_tls_is_refused_as_unsupported() -> TestResult {
    let registry = Registry::new();
    let name = DbName::new("pg-tls")?;
    let err = registry
        .register_postgres(
            &name,
            "postgres://app:pw@127.0.0.1:1/db?sslmode=require",
            PgConfig::default(),
        )
        .expect_err("registered");
    assert!(matches!(&err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(error_text(&err).contains("TLS"), "{err:?}");
    Ok(())
}

/// Bug caught: the server facts (version, role, connections of max_connections) missing
/// from the snapshot, health or metrics of a PostgreSQL database, or wrong.
#[test]
fn server_facts_are_in_the_snapshot_health_and_metrics() -> TestResult {
    require_postgres!();
    let url = server()?.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new("pg-facts")?;
    registry.register_postgres(&name, &url, patient(1))?;
    let snapshot = registry.db_stats(&name)?;
    let facts = snapshot.postgres.clone().expect("postgres facts");
    let primary = facts.primary.expect("primary measured at register");
    assert!(primary.version.starts_with("15"), "{primary:?}");
    assert!(!primary.in_recovery && !primary.read_only);
    assert_eq!(primary.max_connections, 200);
    // The monitor's connection at least. The pool's may still have been opening when the
    // facts were first measured (the monitor measures before the pool's wait for
    // `min_idle`), so a later round (every 250 ms) must count both.
    assert!(primary.connections >= 1, "{primary:?}");
    let patience = Instant::now() + Duration::from_secs(30);
    loop {
        let counted = registry
            .db_stats(&name)?
            .postgres
            .and_then(|f| f.primary)
            .map_or(0, |p| p.connections);
        if counted >= 2 {
            break;
        }
        assert!(
            Instant::now() < patience,
            "the monitor never counted the pool's connection and its own: {counted}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(facts.replicas.is_empty());

    let health = registry.health(Duration::from_secs(5));
    let db = &health.databases[0];
    assert!(
        db.postgres
            .as_ref()
            .and_then(|p| p.primary.as_ref())
            .is_some(),
        "{db:?}"
    );

    let text = prometheus_text(&registry.stats());
    assert!(
        text.contains("hive_db_pg_server_max_connections{db=\"pg-facts\",server=\"primary\"} 200"),
        "{text}"
    );
    assert!(
        text.contains("hive_db_pg_primary_reachable{db=\"pg-facts\"} 1"),
        "{text}"
    );

    // SQLite-only registries print none of these families.
    assert!(!prometheus_text(&Registry::new().stats()).contains("hive_db_pg_"));
    Ok(())
}

/// Bug caught: a wrong password retried until `connection_timeout` (every caller stuck),
/// reported as a plain timeout, or quoted in the error; a server that lets a user in only
/// over TLS reported as anything but that.
#[test]
fn a_refused_login_and_a_tls_only_user_are_refused_at_once() -> TestResult {
    require_postgres!();
    // A server of its own: its pg_hba.conf changes.
    let srv = hive_pg_harness::Server::start()?;
    srv.admin()?
        .batch_execute("CREATE ROLE pwuser LOGIN PASSWORD 'right-pw'; CREATE ROLE tlsuser LOGIN")?;
    let hba = srv.node().data().join("pg_hba.conf");
    // Rewritten in place, so it keeps its owner.
    std::fs::write(
        &hba,
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all pwuser 127.0.0.1/32 scram-sha-256\n\
         hostssl all tlsuser 127.0.0.1/32 trust\n",
    )?;
    srv.admin()?.batch_execute("SELECT pg_reload_conf()")?;
    let url = |user: &str| srv.url("postgres").replacen("postgres@", user, 1);

    let registry = Registry::new();
    let name = DbName::new("pg-login")?;
    let start = Instant::now();
    let err = registry
        .register_postgres(&name, &url("pwuser:wrong-pw@"), patient(1))
        .expect_err("registered");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, Error::Refused { db, cause: Refusal::Authentication, code: Some(c), .. }
            if db == &name && c == "28P01"),
        "{err:?}"
    );
    assert!(
        !error_text(&err).contains("wrong-pw"),
        "{}",
        error_text(&err)
    );

    let err = registry
        .register_postgres(&name, &url("tlsuser@"), patient(1))
        .expect_err("registered");
    assert!(
        matches!(
            &err,
            Error::Refused {
                cause: Refusal::TlsRequired,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(error_text(&err).contains("TLS"), "{}", error_text(&err));

    // The right password gets in.
    registry.register_postgres(&name, &url("pwuser:right-pw@"), patient(1))?;
    registry
        .postgres(&name)?
        .read(|c| c.batch_execute("SELECT 1"))?;
    assert!(
        !serde_json::to_string(&registry.stats())?.contains("right-pw"),
        "a password in the snapshot"
    );
    Ok(())
}

/// Bug caught: a client of its own made some other way than the pool's (another host, no
/// connect timeout, not named after the database), counted in the pool, or a refusal that
/// is not typed.
#[test]
fn a_client_of_its_own_connects_as_the_pool_does() -> TestResult {
    require_postgres!();
    let srv = server()?;
    let url = srv.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new("pg-own-client")?;
    registry.register_postgres(&name, &url, patient(1))?;
    let db = registry.postgres(&name)?;
    let live = db.stats().live;
    let mut own = db.connect()?;
    let (app, dbname): (String, String) = {
        let row = own.query_one(
            "SELECT current_setting('application_name'), current_database()",
            &[],
        )?;
        (row.try_get(0)?, row.try_get(1)?)
    };
    assert_eq!(app, "pg-own-client");
    assert_eq!(dbname, db_of(&url));
    assert_eq!(db.stats().live, live, "counted in the pool");

    srv.admin()?
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db_of(&url)))?;
    let Err(err) = db.connect() else {
        panic!("connected to a dropped database");
    };
    assert!(
        matches!(
            &err,
            Error::Refused {
                cause: Refusal::NoSuchDatabase,
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}
