//! The schema on PostgreSQL: versions under a row lock, concurrent migrators, a newer schema
//! refused untouched, what someone added kept; and the table list both engines share.

use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use ecosystemiser_db::{EcoDb, Error, SCHEMA_VERSION};
use hive_db_core::postgres::{Client, NoTls};

use crate::common::{Kind, contract_test, open, pg_registry, settings};

fn version(client: &mut Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "SELECT version FROM ecosystemiser_schema_version WHERE id = 1",
            &[],
        )?
        .try_get(0)?)
}

fn exists(client: &mut Client, relation: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&relation])?
        .try_get(0)?)
}

/// Opens the EcoSystemiser database on `url` through a registry of its own (a stand-in for
/// another process).
fn open_at(url: &str, dir: &std::path::Path) -> anyhow::Result<(EcoDb, hive_db_core::Registry)> {
    let registry = pg_registry(url)?;
    let db = EcoDb::with_registry(&registry, &settings(dir, "unused.db"))?;
    Ok((db, registry))
}

/// Bug caught: a migrator that reads the version without locking its row, so a second
/// process applies a step the first is applying (or has applied and not yet committed),
/// and writes its own, older version over the first one's.
#[test]
fn a_migrator_waits_for_the_one_holding_the_version_row() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let mut holder = Client::connect(&url, NoTls)?;
    holder.batch_execute(
        "CREATE TABLE ecosystemiser_schema_version (
             id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
         INSERT INTO ecosystemiser_schema_version VALUES (1, 0)",
    )?;
    // A migrator in the middle of its work: the row locked, nothing recorded yet.
    let mut tx = holder.transaction()?;
    tx.query_one(
        "SELECT version FROM ecosystemiser_schema_version WHERE id = 1 FOR UPDATE",
        &[],
    )?;
    let (done_tx, done) = mpsc::channel();
    let url2 = url.clone();
    let path = dir.path().to_path_buf();
    let other = std::thread::spawn(move || {
        let opened = open_at(&url2, &path).map(|(db, registry)| (db.engine(), registry));
        let _ = done_tx.send(());
        opened
    });
    assert!(
        done.recv_timeout(Duration::from_millis(500)).is_err(),
        "the second migrator did not wait for the row lock"
    );
    // It ends having recorded every step (the tables left out, so that a step the waiting
    // migrator ran again would show): the waiting migrator must find them done.
    tx.execute(
        "UPDATE ecosystemiser_schema_version SET version = $1 WHERE id = 1",
        &[&(SCHEMA_VERSION as i64)],
    )?;
    tx.commit()?;
    done.recv_timeout(Duration::from_secs(30))?;
    let opened = other
        .join()
        .map_err(|_| anyhow::anyhow!("migrator panicked"))?;
    // It found every step done: it applied none of them, and refused the database whose
    // version says newest but whose tables are missing.
    match opened {
        Err(e) => assert!(
            matches!(e.downcast_ref::<Error>(), Some(Error::Migration { .. })),
            "{e:#}"
        ),
        Ok(_) => panic!("a database without its tables opened"),
    }
    assert!(!exists(&mut holder, "simulations")?);
    assert_eq!(version(&mut holder)?, SCHEMA_VERSION as i64);
    Ok(())
}

/// Bug caught: two processes creating the schema at once failing on PostgreSQL's
/// `CREATE TABLE IF NOT EXISTS` race, or ending at different versions.
#[test]
fn two_registries_migrate_one_database_at_once() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let dir = tempfile::tempdir()?;
                barrier.wait();
                let (db, _registry) = open_at(&url, dir.path())?;
                let status = db.integration_status();
                assert_eq!(status.probe, Ok(SCHEMA_VERSION as i64));
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    let mut client = Client::connect(&url, NoTls)?;
    assert_eq!(version(&mut client)?, SCHEMA_VERSION as i64);
    Ok(())
}

/// Bug caught: a database migrated by newer code written to (its version lowered, steps run
/// again) instead of refused; and one with a negative version (no build records one) had
/// every step run over it and its version overwritten, where SQLite refuses it.
#[test]
fn a_newer_schema_is_refused_untouched() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    for found in [99_i64, -1] {
        let url = hive_pg_harness::server()?.fresh_db()?;
        let dir = tempfile::tempdir()?;
        drop(open_at(&url, dir.path())?);
        let mut client = Client::connect(&url, NoTls)?;
        client.batch_execute(&format!(
            "UPDATE ecosystemiser_schema_version SET version = {found};
             DROP INDEX idx_events_type_seq"
        ))?;
        let registry = pg_registry(&url)?;
        let err = EcoDb::with_registry(&registry, &settings(dir.path(), "unused.db")).err();
        assert!(
            matches!(err, Some(Error::SchemaTooNew { found: f, .. }) if f == found),
            "{err:?}"
        );
        assert_eq!(version(&mut client)?, found);
        assert!(!exists(&mut client, "idx_events_type_seq")?);
    }
    Ok(())
}

/// Bug caught: a migration step that drops or rewrites what someone added: an extra column,
/// index or view, or a column of the name a step adds, of another type.
#[test]
fn what_someone_added_stays() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    drop(open_at(&url, dir.path())?);
    let mut client = Client::connect(&url, NoTls)?;
    // Back to version 3, with someone's own error_message (an integer) on studies.
    client.batch_execute(
        "ALTER TABLE simulations ADD COLUMN owner TEXT DEFAULT 'ops';
         CREATE INDEX ops_sim_owner ON simulations (owner);
         CREATE VIEW ops_running AS SELECT simulation_id FROM simulations WHERE status = 'running';
         ALTER TABLE studies DROP COLUMN error_message;
         ALTER TABLE studies ADD COLUMN error_message INTEGER;
         UPDATE ecosystemiser_schema_version SET version = 3",
    )?;
    drop(open_at(&url, dir.path())?);
    assert_eq!(version(&mut client)?, SCHEMA_VERSION as i64);
    for relation in ["ops_sim_owner", "ops_running"] {
        assert!(exists(&mut client, relation)?, "{relation} dropped");
    }
    let types: Vec<(String, String)> = client
        .query(
            "SELECT table_name::text, data_type::text FROM information_schema.columns
             WHERE (table_name = 'simulations' AND column_name = 'owner')
                OR (table_name = 'studies' AND column_name = 'error_message')
             ORDER BY table_name",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, hive_db_core::postgres::Error>>()?;
    assert_eq!(
        types,
        [
            ("simulations".to_owned(), "text".to_owned()),
            ("studies".to_owned(), "integer".to_owned())
        ]
    );
    Ok(())
}

contract_test! {
/// Bug caught: a table added to the schema but not to `TABLES` (so a tool that copies or
/// empties the database by the list would leave it out), or listed after a table that
/// references it.
fn the_table_list_is_every_table_parents_first(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let (mut tables, references): (Vec<String>, Vec<(String, String)>) = match kind {
        Kind::Postgres => db.postgres()?.read_primary(|c| {
            let tables = c
                .query(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
                       AND table_name NOT IN ('ecosystemiser_schema_version',
                                              'ecosystemiser_event_order')",
                    &[],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let references = c
                .query(
                    "SELECT conrelid::regclass::text, confrelid::regclass::text
                     FROM pg_constraint WHERE contype = 'f'",
                    &[],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, hive_db_core::postgres::Error>>()?;
            Ok((tables, references))
        })?,
        _ => db.read(|c| {
            let tables: Vec<String> = c
                .prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'table'
                     AND name NOT LIKE 'sqlite_%'",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut references = Vec::new();
            for t in &tables {
                let mut stmt = c.prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")?;
                for parent in stmt.query_map([t], |r| r.get::<_, String>(0))? {
                    references.push((t.clone(), parent?));
                }
            }
            Ok((tables, references))
        })?,
    };
    let listed = ecosystemiser_db::TABLES;
    let mut sorted: Vec<String> = listed.iter().map(|t| (*t).to_owned()).collect();
    sorted.sort();
    tables.sort();
    assert_eq!(tables, sorted, "{kind:?}");
    assert!(!references.is_empty(), "{kind:?}: no references found");
    let at = |t: &str| listed.iter().position(|l| *l == t);
    for (child, parent) in &references {
        assert!(at(parent) < at(child), "{kind:?}: {parent} must come before {child}");
    }
    Ok(())
}
}

/// Bug caught: `EcoDb::with_postgres` not finding its own entry (opening the SQLite file of
/// the settings instead), a status that reports SQLite, a password in the target shown, or
/// SQLite-only calls running on PostgreSQL instead of failing with a typed error.
#[test]
fn opening_on_a_url_says_which_engine_and_refuses_sqlite_calls() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let registry = hive_db_core::Registry::new();
    let db = EcoDb::with_postgres(&registry, &url, crate::common::pg_config())?;
    assert_eq!(db.engine(), hive_db_core::Backend::Postgres);
    let status = db.integration_status();
    assert_eq!(status.engine, hive_db_core::Backend::Postgres);
    assert_eq!(status.probe, Ok(SCHEMA_VERSION as i64));
    assert!(status.shared_pool_in_use());
    assert!(db.path().to_string_lossy().starts_with("postgres://"));
    assert!(matches!(
        db.stats()?,
        ecosystemiser_db::BackendStats::SharedPool(_)
    ));
    let sqlite_call = db.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
    assert!(
        matches!(
            sqlite_call,
            Err(Error::Core(hive_db_core::Error::WrongBackend { .. }))
        ),
        "{sqlite_call:?}"
    );
    // Opening again through the registry finds the same database.
    let again = EcoDb::with_registry(
        &registry,
        &settings(std::path::Path::new("/nonexistent"), "x.db"),
    )?;
    assert_eq!(again.engine(), hive_db_core::Backend::Postgres);

    let dir = tempfile::tempdir()?;
    let (sqlite, _r) = open(Kind::Direct, dir.path(), "eco.db")?;
    assert_eq!(sqlite.engine(), hive_db_core::Backend::Sqlite);
    assert!(matches!(sqlite.postgres(), Err(Error::WrongEngine { .. })));
    Ok(())
}

/// Bug caught: a failed migration step left half applied (its first statements kept), its
/// version recorded anyway, or reported without the version it was for.
#[test]
fn a_failed_step_is_rolled_back_and_names_its_version() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    drop(open_at(&url, dir.path())?);
    let mut client = Client::connect(&url, NoTls)?;
    // Back to version 3, with `studies` turned into a view: step 4 adds a column to
    // optimization_runs, then cannot add one to the view.
    client.batch_execute(
        "ALTER TABLE optimization_runs DROP COLUMN error_message;
         ALTER TABLE studies RENAME TO studies_kept;
         CREATE VIEW studies AS SELECT * FROM studies_kept;
         UPDATE ecosystemiser_schema_version SET version = 3",
    )?;
    let registry = pg_registry(&url)?;
    let err = EcoDb::with_registry(&registry, &settings(dir.path(), "unused.db")).err();
    assert!(
        matches!(err, Some(Error::MigrationStep { version: 4, .. })),
        "{err:?}"
    );
    assert_eq!(version(&mut client)?, 3);
    let added: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name = 'optimization_runs' AND column_name = 'error_message'",
            &[],
        )?
        .try_get(0)?;
    assert_eq!(added, 0, "the step's first statement was kept");
    Ok(())
}

/// Bug caught: a dropped listener whose thread and connection live on (a leak per listener),
/// or a drop that hangs.
#[test]
fn a_dropped_listener_stops_and_closes_its_connection() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open_at(&url, dir.path())?;
    let listeners = |db: &EcoDb| -> anyhow::Result<i64> {
        Ok(db.postgres()?.read_primary(|c| {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = $1 AND datname = current_database()",
                &[&ecosystemiser_db::LISTENER_APPLICATION_NAME],
            )?
            .try_get(0)
        })?)
    };
    let listener = ecosystemiser_db::EventStore::new(&db).listen()?;
    assert_eq!(listeners(&db)?, 1);
    let started = std::time::Instant::now();
    drop(listener);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while listeners(&db)? != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener's connection stayed open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Bug caught: dropping a listener whose catch-up query waited for a lock on the events
/// table (another session's `LOCK TABLE`, or a `TRUNCATE` in an open transaction) waited as
/// long as the lock was held: the query had no lock timeout, and the drop joins the thread.
#[test]
fn a_listener_is_dropped_promptly_while_the_events_table_is_locked() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open_at(&url, dir.path())?;
    let listener = ecosystemiser_db::EventStore::new(&db).listen()?;
    let mut holder = Client::connect(&url, NoTls)?;
    let mut lock = holder.transaction()?;
    lock.batch_execute("LOCK TABLE ecosystemiser_events IN ACCESS EXCLUSIVE MODE")?;
    // A few ticks: the listener's next catch-up meets the lock.
    std::thread::sleep(Duration::from_millis(600));
    let (done, dropped) = mpsc::channel();
    std::thread::spawn(move || {
        drop(listener);
        let _ = done.send(());
    });
    let prompt = dropped.recv_timeout(Duration::from_secs(15)).is_ok();
    lock.rollback()?;
    assert!(prompt, "dropping the listener waited for the table lock");
    Ok(())
}

/// Bug caught: a PostgreSQL database at the newest version with a table dropped opened
/// without error (the open returns before any step there), and failed at first use; SQLite
/// refuses such a file at open.
#[test]
fn a_database_at_the_newest_version_without_a_table_is_refused() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    drop(open_at(&url, dir.path())?);
    Client::connect(&url, NoTls)?.batch_execute("DROP TABLE simulation_metrics")?;
    match open_at(&url, dir.path()) {
        Err(e) => {
            let refused = e.downcast_ref::<Error>();
            assert!(
                matches!(refused, Some(Error::Migration { .. }))
                    && e.to_string().contains("migrat"),
                "{e:#}"
            );
            assert!(format!("{e:?}").contains("simulation_metrics"), "{e:?}");
        }
        Ok(_) => panic!("a database without simulation_metrics opened"),
    }
    Ok(())
}

/// Bug caught: a table someone made before the data layer, under one of its names and
/// lacking its columns, or an index of the data layer's name on another table, was skipped
/// by `CREATE .. IF NOT EXISTS`: the database opened and failed at first use ("column
/// total_simulations does not exist"), or its histories scanned whole tables; SQLite
/// refuses such a file at open. What the refusal added stays added, nothing is dropped.
#[test]
fn a_table_lacking_a_column_or_an_index_on_another_table_is_refused() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let dir = tempfile::tempdir()?;
    let cases = [
        (
            "CREATE TABLE studies (study_id TEXT PRIMARY KEY, study_type TEXT NOT NULL,
                 status TEXT NOT NULL, created_at TEXT)",
            "studies has no column total_simulations",
        ),
        (
            "CREATE TABLE my_things (x INTEGER);
             CREATE INDEX idx_simulations_status ON my_things (x)",
            "index idx_simulations_status is on table my_things",
        ),
    ];
    for (made, why) in cases {
        let url = hive_pg_harness::server()?.fresh_db()?;
        Client::connect(&url, NoTls)?.batch_execute(made)?;
        match open_at(&url, dir.path()) {
            Err(e) => {
                let refused = e.downcast_ref::<Error>();
                assert!(matches!(refused, Some(Error::Migration { .. })), "{e:#}");
                assert!(format!("{e:?}").contains(why), "{why}: {e:?}");
            }
            Ok(_) => panic!("opened with {made}"),
        }
        // Nothing dropped: the user's objects are there as made.
        let mut client = Client::connect(&url, NoTls)?;
        assert!(exists(&mut client, "idx_simulations_status")? || !made.contains("INDEX"));
        assert!(exists(&mut client, "studies")?);
    }
    // A fresh database, and one opened again, pass the same check.
    let url = hive_pg_harness::server()?.fresh_db()?;
    drop(open_at(&url, dir.path())?);
    drop(open_at(&url, dir.path())?);
    Ok(())
}

/// Bug caught: the open's comparison with a fresh schema, which creates that schema's
/// tables in the session's temporary schema, failed the open of a current database for a
/// role that may not create temporary tables (`REVOKE TEMPORARY .. FROM PUBLIC`, a common
/// hardening), which opened before that check was made. Run in a child process: the fresh
/// schema is worked out once per process, and this one has it already.
#[test]
fn a_role_without_temporary_tables_still_opens_a_current_database() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    drop(open_at(&url, dir.path())?);
    let mut client = Client::connect(&url, NoTls)?;
    let name: String = client
        .query_one("SELECT current_database()", &[])?
        .try_get(0)?;
    let role = format!("eco_app_{name}");
    client.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};
         REVOKE TEMPORARY ON DATABASE \"{name}\" FROM PUBLIC"
    ))?;
    let as_role = url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(as_role, url, "the test server's URL names no user");
    run_child("pg_schema::no_temporary_tables_child", &as_role, &[])
}

/// Run by the test above in a child process, with the environment set.
#[test]
#[ignore = "run in a child process by a_role_without_temporary_tables_still_opens_a_current_database"]
fn no_temporary_tables_child() -> anyhow::Result<()> {
    let url = std::env::var(CHILD_URL)?;
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open_at(&url, dir.path())?;
    ecosystemiser_db::EventStore::new(&db).publish(&ecosystemiser_db::Event::new(
        "child.ran",
        "test",
        serde_json::json!({}),
    ))?;
    Ok(())
}

/// The variable that hands the child below its database's URL.
const CHILD_URL: &str = "ECO_TEST_PG_URL";

/// Runs the ignored test `name` of this binary in a child process, with [`CHILD_URL`] set
/// to `url` and the variables `env`; `Err` unless it ran and passed.
fn run_child(name: &str, url: &str, env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<()> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", name, "--ignored", "--test-threads=1"])
        .env(CHILD_URL, url)
        .envs(env.iter().copied())
        .output()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "child failed:\n{text}");
    anyhow::ensure!(text.contains("1 passed"), "child did not run:\n{text}");
    Ok(())
}

/// Bug caught: the process database (`ecosystemiser_db()`) ignoring a PostgreSQL
/// `ecosystemiser` in the installed registry (opening a SQLite file instead), or the legacy
/// shims handing out something other than a typed error there.
#[test]
fn the_process_database_uses_an_installed_postgres_registry() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("eco.db");
    run_child(
        "pg_schema::process_database_child",
        &url,
        &[("ECOSYSTEMISER_DB_PATH", file.as_os_str())],
    )?;
    assert!(!file.exists(), "a SQLite file was made");
    let mut client = Client::connect(&url, NoTls)?;
    let published: i64 = client
        .query_one(
            "SELECT count(*) FROM ecosystemiser_events WHERE event_type = 'child.ran'",
            &[],
        )?
        .try_get(0)?;
    assert_eq!(published, 1);
    Ok(())
}

/// Run by the test above in a child process, with the environment set.
#[test]
#[ignore = "run in a child process by the_process_database_uses_an_installed_postgres_registry"]
#[expect(deprecated, reason = "the legacy shims' refusal on PostgreSQL")]
fn process_database_child() -> anyhow::Result<()> {
    let url = std::env::var(CHILD_URL)?;
    hive_db_core::global::install(pg_registry(&url)?)?;
    let db = ecosystemiser_db::ecosystemiser_db()?;
    assert_eq!(db.engine(), hive_db_core::Backend::Postgres);
    let status = ecosystemiser_db::integration_status()?;
    assert_eq!(
        (status.reason, status.engine, status.probe),
        (
            ecosystemiser_db::BackendReason::GlobalRegistryInstalled,
            hive_db_core::Backend::Postgres,
            Ok(SCHEMA_VERSION as i64)
        )
    );
    ecosystemiser_db::EventStore::new(db).publish(&ecosystemiser_db::Event::new(
        "child.ran",
        "test",
        serde_json::json!({}),
    ))?;
    let legacy = ecosystemiser_db::get_db_connection(None);
    assert!(
        matches!(
            legacy,
            Err(Error::Core(hive_db_core::Error::WrongBackend { .. }))
        ),
        "{legacy:?}"
    );
    Ok(())
}

/// Bug caught: dropping a listener joined its thread without a bound, so with the
/// listener's backend frozen (stopped, its host alive: no client-side bound reaches a
/// statement there) the drop never returned.
#[test]
fn dropping_a_listener_whose_backend_froze_returns() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let registry = pg_registry(&url)?;
    let db = EcoDb::with_registry(&registry, &settings(dir.path(), "unused.db"))?;
    let listener = ecosystemiser_db::EventStore::new(&db).listen()?;
    let pid: i32 = db.postgres()?.read_primary(|c| {
        c.query_one(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
            &[&ecosystemiser_db::LISTENER_APPLICATION_NAME],
        )?
        .try_get(0)
    })?;
    /// Sends `SIGCONT` to the backend when dropped, whatever happens in between.
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            signal("-CONT", self.0);
        }
    }
    fn signal(sig: &str, pid: i32) {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
    signal("-STOP", pid);
    let _resume = Resume(pid);
    std::thread::sleep(Duration::from_millis(600));
    let (done, dropped) = mpsc::channel();
    std::thread::spawn(move || {
        drop(listener);
        let _ = done.send(());
    });
    assert!(
        dropped.recv_timeout(Duration::from_secs(20)).is_ok(),
        "dropping the listener still blocked after 20 s"
    );
    Ok(())
}
