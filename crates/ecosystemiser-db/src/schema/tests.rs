//! Tests of the migrations step by step, on plain connections opened through the core.

use std::path::Path;

use hive_db_core::rusqlite::{Connection, OptionalExtension};
use hive_db_core::{DbConfig, DbName, open_connection, prepare_database};

use super::*;

fn fresh(dir: &Path) -> anyhow::Result<(DbName, std::path::PathBuf, Connection)> {
    let db = DbName::new("ecosystemiser")?;
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    let path = prepare_database(&db, &dir.join("eco.db"), &config)?.path;
    let conn = open_connection(&db, &path, &config)?;
    Ok((db, path, conn))
}

fn objects(conn: &Connection) -> anyhow::Result<Vec<String>> {
    Ok(conn
        .prepare("SELECT type || ' ' || name FROM sqlite_schema ORDER BY type, name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Bug caught: version 1 and 2 not composing: a database stopped at version 1 (by an older
/// build of this code) that does not reach the same schema as a fresh one, or loses rows.
#[test]
fn from_version_1_reaches_the_same_schema() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 1)?;
    assert_eq!(user_version(&conn)?, 1);
    conn.execute_batch(
        "INSERT INTO component_types (name, category) VALUES ('battery', 'energy');
         INSERT INTO component_specs (component_type_id, name, technical_params, is_default)
             VALUES (1, 'a', '{}', 1), (1, 'b', '{}', 1);
         INSERT INTO ecosystemiser_events (event_id, event_type, source, timestamp, payload)
             VALUES ('e1', 't', 's', 'now', '{}');",
    )?;
    migrate(&db, &path, &mut conn)?;
    assert_eq!(user_version(&conn)?, SCHEMA_VERSION as i64);

    let dir2 = tempfile::tempdir()?;
    let (db2, path2, mut conn2) = fresh(dir2.path())?;
    migrate(&db2, &path2, &mut conn2)?;
    assert_eq!(objects(&conn)?, objects(&conn2)?);
    let defaults: Vec<String> = conn
        .prepare("SELECT name FROM component_specs WHERE is_default = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(defaults, ["b"]);
    let events: i64 = conn.query_row("SELECT count(*) FROM ecosystemiser_events", [], |r| {
        r.get(0)
    })?;
    assert_eq!(events, 1);
    Ok(())
}

/// Bug caught: version 3 not composing with a file at version 2 (written by an older build):
/// a schema that differs from a fresh one, or events lost or no longer found by their ids
/// once the event indexes are replaced.
#[test]
fn from_version_2_reaches_the_same_schema_and_keeps_every_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 2)?;
    conn.execute_batch(
        "INSERT INTO ecosystemiser_events
             (event_id, event_type, source, timestamp, payload, simulation_id, analysis_id,
              optimization_id, correlation_id)
         VALUES ('e1', 't', 's', 'now', '{}', 'sim-1', NULL, NULL, 'c1'),
                ('e2', 't', 's', 'now', '{}', NULL, 'an-1', NULL, 'c1'),
                ('e3', 't', 's', 'now', '{}', NULL, NULL, 'opt-1', NULL),
                ('e4', 't', 's', 'now', '{}', NULL, NULL, NULL, NULL);",
    )?;
    migrate(&db, &path, &mut conn)?;
    assert_eq!(user_version(&conn)?, SCHEMA_VERSION as i64);

    let dir2 = tempfile::tempdir()?;
    let (db2, path2, mut conn2) = fresh(dir2.path())?;
    migrate(&db2, &path2, &mut conn2)?;
    assert_eq!(objects(&conn)?, objects(&conn2)?);
    let found =
        |sql: &str| -> anyhow::Result<String> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    assert_eq!(
        found("SELECT event_id FROM ecosystemiser_events WHERE simulation_id = 'sim-1'")?,
        "e1"
    );
    assert_eq!(
        found("SELECT event_id FROM ecosystemiser_events WHERE analysis_id = 'an-1'")?,
        "e2"
    );
    assert_eq!(
        found("SELECT event_id FROM ecosystemiser_events WHERE optimization_id = 'opt-1'")?,
        "e3"
    );
    assert_eq!(
        found(
            "SELECT group_concat(event_id) FROM ecosystemiser_events WHERE correlation_id = 'c1'"
        )?,
        "e1,e2"
    );
    assert_eq!(
        found("SELECT CAST(count(*) AS TEXT) FROM ecosystemiser_events")?,
        "4"
    );
    conn.execute_batch("PRAGMA integrity_check")?;
    Ok(())
}

/// Every row of every table but `sqlite_sequence`, in the columns of `cols_from` (so that
/// columns a later version adds do not count), in insertion order.
fn rows(conn: &Connection, cols_from: &Connection) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = cols_from
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name <> 'sqlite_sequence'
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = cols_from
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([&t], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let sql = format!(
            "SELECT '{t}: ' || quote({}) FROM {t} ORDER BY rowid",
            cols.join(") || '|' || quote(")
        );
        let mut stmt = conn.prepare(&sql)?;
        out.extend(
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(out)
}

/// Bug caught: version 4 not composing with a file at version 3: rows lost or changed,
/// the error message columns missing, or a schema that differs from a fresh one.
#[test]
fn from_version_3_keeps_every_row_and_gains_the_error_messages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 3)?;
    conn.execute_batch(
        "INSERT INTO simulations (simulation_id, system_config_path, solver_type, status,
                                  error_message)
             VALUES ('s', 'a.yml', 'milp', 'failed', 'diverged');
         INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value)
             VALUES ('s', 'cost', 1.5);
         INSERT INTO studies (study_id, study_type, status, total_simulations)
             VALUES ('st', 'parametric', 'running', 2);
         INSERT INTO study_simulations (study_id, simulation_id, sequence_number)
             VALUES ('st', 's', 0);
         INSERT INTO analysis_runs (analysis_id, source_type, source_id, status)
             VALUES ('an', 'study', 'st', 'completed');
         INSERT INTO analysis_results (analysis_id, strategy_name, result_type, result_data)
             VALUES ('an', 'economic', 'kpi', '{}');
         INSERT INTO optimization_runs (optimization_id, algorithm_type, objective_function,
                                        status, best_fitness)
             VALUES ('o', 'ga', 'cost', 'running', 0.5);
         INSERT INTO optimization_iterations
             (optimization_id, generation, individual_id, fitness, parameters)
             VALUES ('o', 0, 'i', 0.5, '{}');
         INSERT INTO component_types (name, category) VALUES ('battery', 'energy');
         INSERT INTO component_specs (component_type_id, name, technical_params, is_default)
             VALUES (1, 'a', '{}', 1);
         INSERT INTO version_history (component_spec_id, version) VALUES (1, '1.0.0');
         INSERT INTO ecosystemiser_events
             (event_id, event_type, source, timestamp, payload, simulation_id)
             VALUES ('e1', 't', 's', 'now', '{}', 's');
         INSERT INTO event_subscriptions (subscriber_id, event_type) VALUES ('ui', '*');",
    )?;
    let dir3 = tempfile::tempdir()?;
    let (db3, path3, mut v3) = fresh(dir3.path())?;
    migrate_to(&db3, &path3, &mut v3, 3)?;
    let before = rows(&conn, &v3)?;
    assert_eq!(before.len(), 13);
    migrate(&db, &path, &mut conn)?;
    assert_eq!(user_version(&conn)?, SCHEMA_VERSION as i64);
    assert_eq!(rows(&conn, &v3)?, before);
    let new: Vec<Option<String>> = conn
        .prepare(
            "SELECT error_message FROM optimization_runs
             UNION ALL SELECT error_message FROM studies",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(new, [None, None]);

    let dir2 = tempfile::tempdir()?;
    let (db2, path2, mut conn2) = fresh(dir2.path())?;
    migrate(&db2, &path2, &mut conn2)?;
    assert_eq!(objects(&conn)?, objects(&conn2)?);
    Ok(())
}

/// Bug caught: a file adopted by an older build (at version 3 without the schema module's
/// two events indexes, which its adoption lost) left without them, so correlation and type
/// histories keep scanning every event.
#[test]
fn version_4_creates_the_indexes_an_older_adoption_left_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 3)?;
    conn.execute_batch(
        "DROP INDEX idx_ecosystemiser_events_type;
         DROP INDEX idx_ecosystemiser_events_correlation;",
    )?;
    migrate(&db, &path, &mut conn)?;
    let dir2 = tempfile::tempdir()?;
    let (db2, path2, mut conn2) = fresh(dir2.path())?;
    migrate(&db2, &path2, &mut conn2)?;
    assert_eq!(objects(&conn)?, objects(&conn2)?);
    Ok(())
}

/// Bug caught: version 4 failing on, or replacing, an `error_message` column someone had
/// already added to a table (with a type of their own).
#[test]
fn version_4_keeps_an_error_message_column_someone_added() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 3)?;
    conn.execute_batch(
        "ALTER TABLE studies ADD COLUMN error_message VARCHAR(200) DEFAULT 'none';
         INSERT INTO studies (study_id, study_type, status) VALUES ('st', 'p', 'failed');",
    )?;
    migrate(&db, &path, &mut conn)?;
    let (decl, value): (String, String) = conn.query_row(
        "SELECT (SELECT type FROM pragma_table_info('studies') WHERE name = 'error_message'),
                error_message FROM studies",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!((decl.as_str(), value.as_str()), ("VARCHAR(200)", "none"));

    // Untyped, or of another case: kept too, and the file opens again after (the check of
    // a table's columns against a fresh database's refused the first; the step itself
    // added `error_message` beside `Error_Message`, a duplicate column).
    for column in ["error_message", "Error_Message TEXT"] {
        let dir = tempfile::tempdir()?;
        let (db, path, mut conn) = fresh(dir.path())?;
        migrate_to(&db, &path, &mut conn, 3)?;
        conn.execute_batch(&format!("ALTER TABLE studies ADD COLUMN {column};"))?;
        migrate(&db, &path, &mut conn)?;
        assert_eq!(user_version(&conn)?, SCHEMA_VERSION as i64);
        migrate(&db, &path, &mut conn)?;
    }
    // Numeric: a message such as "404" would be stored as a number the repositories cannot
    // read back as text. Refused, the file left at version 3.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 3)?;
    conn.execute_batch("ALTER TABLE studies ADD COLUMN error_message INTEGER;")?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(
        format!("{err:?}").contains("studies.error_message is declared")
            && format!("{err:?}").contains("INTEGER affinity"),
        "{err:?}"
    );
    assert_eq!(user_version(&conn)?, 3);
    Ok(())
}

/// Bug caught: a migration that is not idempotent, so a second process that migrates the
/// same file at the same moment (both saw version 0) fails or duplicates rows.
#[test]
fn each_migration_can_run_twice() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate(&db, &path, &mut conn)?;
    let before = objects(&conn)?;
    let tx = conn.transaction()?;
    v1(&tx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    v2(&tx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    v3(&tx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    v4(&tx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    tx.commit()?;
    assert_eq!(objects(&conn)?, before);
    Ok(())
}

/// Bug caught: a failed migration leaving half a schema or a bumped version.
#[test]
fn a_failing_migration_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    // An events table of a shape nobody wrote: adoption refuses it.
    conn.execute_batch("CREATE TABLE ecosystemiser_events (id INTEGER, what TEXT);")?;
    let before = objects(&conn)?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(matches!(err, Some(Error::Migration { .. })), "{err:?}");
    assert_eq!(objects(&conn)?, before);
    assert_eq!(user_version(&conn)?, 0);
    Ok(())
}

/// Bug caught: the version was read before `BEGIN IMMEDIATE` (rusqlite_migration reads it
/// outside its transaction). A process that read version 0 while a newer build held the lock
/// and moved the file to version 5 then ran steps 1 to 4 over it and wrote version 4.
#[test]
fn a_migration_that_waited_for_a_newer_one_refuses_the_newer_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, newer) = fresh(dir.path())?;
    let mut older = open_connection(&db, &path, &DbConfig::default())?;
    newer.execute_batch("BEGIN IMMEDIATE; CREATE TABLE v5_thing (x); PRAGMA user_version = 5;")?;
    let (db2, path2) = (db.clone(), path.clone());
    let waiting = std::thread::spawn(move || {
        let result = migrate(&db2, &path2, &mut older);
        (result, older)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    newer.execute_batch("COMMIT")?;
    let (result, older) = waiting
        .join()
        .map_err(|_| anyhow::anyhow!("the migration panicked"))?;
    assert!(
        matches!(result, Err(Error::SchemaTooNew { found: 5, .. })),
        "{result:?}"
    );
    assert_eq!(user_version(&older)?, 5);
    Ok(())
}

/// Bug caught: the same race between two processes of this code: the second, which read
/// version 0 before the first committed its migration, ran version 1 again and copied back
/// an adopted component spec that the first had deleted meanwhile.
#[test]
fn a_migration_that_waited_for_another_runs_no_step_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut first) = fresh(dir.path())?;
    first.execute_batch(include_str!("../../tests/fixtures/original/components.sql"))?;
    first.execute_batch(include_str!(
        "../../tests/fixtures/original/components_data.sql"
    ))?;
    let mut second = open_connection(&db, &path, &DbConfig::default())?;
    // The first process migrates, and its application deletes an adopted spec, in one
    // transaction held open until the second has read version 0 and waits for the lock.
    let tx = first.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for step in STEPS {
        step(&tx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION as i64)?;
    let (db2, path2) = (db.clone(), path.clone());
    let waiting = std::thread::spawn(move || {
        let result = migrate_to(&db2, &path2, &mut second, SCHEMA_VERSION);
        (result, second)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    tx.execute(
        "DELETE FROM component_specs WHERE name = 'sonnen_eco_10'",
        [],
    )?;
    tx.commit()?;
    let (result, second) = waiting
        .join()
        .map_err(|_| anyhow::anyhow!("the migration panicked"))?;
    result?;
    let left: i64 = second.query_row(
        "SELECT count(*) FROM component_specs WHERE name = 'sonnen_eco_10'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(left, 0, "the deleted spec was copied in again");
    Ok(())
}

/// Bug caught: version 3 dropped the version 2 index names whatever they were; an index of
/// one of those names that someone made on a file at version 1 was lost.
#[test]
fn version_3_keeps_an_index_someone_made_under_a_version_2_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 1)?;
    let theirs =
        "CREATE INDEX idx_events_analysis_seq ON ecosystemiser_events (analysis_id, event_type)";
    conn.execute_batch(theirs)?;
    migrate(&db, &path, &mut conn)?;
    let kept: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'idx_events_analysis_seq'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    assert_eq!(kept.as_deref(), Some(theirs));
    // Version 2's own are replaced: a file from version 2 ends as a fresh one (checked by
    // from_version_2_reaches_the_same_schema_and_keeps_every_event); here the other three.
    for gone in [
        "idx_events_correlation_seq",
        "idx_events_simulation_seq",
        "idx_events_optimization_seq",
    ] {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
            [gone],
            |r| r.get(0),
        )?;
        assert_eq!(n, 0, "{gone} was left");
    }
    Ok(())
}

/// Bug caught: a file whose version says newest but whose tables are missing (its version
/// set by hand, a table dropped) opened without error, and every call failed at first use.
#[test]
fn a_file_at_the_newest_version_without_its_tables_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    conn.execute_batch(&format!(
        "PRAGMA user_version = {SCHEMA_VERSION}; CREATE TABLE unrelated (x);"
    ))?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(matches!(err, Some(Error::Migration { .. })), "{err:?}");
    assert!(
        format!("{:?}", err).contains("simulations"),
        "the error does not name a missing table: {err:?}"
    );
    Ok(())
}

/// The columns of `table`, in order, comma-separated.
fn column_list(conn: &Connection, table: &str) -> anyhow::Result<String> {
    Ok(conn.query_row(
        "SELECT group_concat(name) FROM (SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid)",
        [table],
        |r| r.get(0),
    )?)
}

/// Bug caught: a migration that broke what someone built on the tables it changes. Version
/// 4 adds a column to `studies`, which breaks a view declared with a column list over
/// `SELECT *`, and a trigger that copies a row with `SELECT *`. SQLite checks both only when
/// a statement uses them: the migration reported success, and every read of the view, or
/// every delete from `studies`, failed from then on. The migration must refuse and leave the
/// file at version 3 as it was; and a view broken before the migration must not stop it.
#[test]
fn a_migration_that_would_break_a_view_or_trigger_is_refused() -> anyhow::Result<()> {
    // What someone added, and a statement that uses it.
    let added = [
        (
            "CREATE VIEW study_report ({columns}) AS SELECT * FROM studies;",
            "SELECT * FROM study_report",
        ),
        (
            "CREATE TABLE studies_archive AS SELECT * FROM studies WHERE 0;
             CREATE TRIGGER studies_archived BEFORE DELETE ON studies BEGIN
                 INSERT INTO studies_archive SELECT * FROM studies WHERE study_id = old.study_id;
             END;",
            "DELETE FROM studies",
        ),
    ];
    for (sql, uses) in added {
        let dir = tempfile::tempdir()?;
        let (db, path, mut conn) = fresh(dir.path())?;
        migrate_to(&db, &path, &mut conn, 3)?;
        let columns = column_list(&conn, "studies")?;
        conn.execute_batch(&sql.replace("{columns}", &columns))?;
        let before = objects(&conn)?;
        let err = migrate(&db, &path, &mut conn).err();
        assert!(matches!(err, Some(Error::Migration { .. })), "{err:?}");
        assert!(format!("{err:?}").contains("would break"), "{err:?}");
        assert_eq!(user_version(&conn)?, 3);
        assert_eq!(objects(&conn)?, before);
        assert_eq!(column_list(&conn, "studies")?, columns);
        conn.execute_batch(uses)?;
    }

    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate_to(&db, &path, &mut conn, 3)?;
    conn.execute_batch("CREATE VIEW broken_already AS SELECT no_such_column FROM studies;")?;
    migrate(&db, &path, &mut conn)?;
    assert_eq!(user_version(&conn)?, SCHEMA_VERSION as i64);
    Ok(())
}

/// Bug caught: only the tables' presence was checked, and every `CREATE TABLE IF NOT EXISTS`
/// skips a table that exists. A file with a table made by hand, a column missing or declared
/// with another type, opened without error; then creating a simulation failed ("no column
/// named metadata"), or a duration stored as text could never be read back; and one whose
/// own index took the name of the data layer's made the migration skip it. It must be
/// refused at open, naming the table and the column (or the index), with the file left as
/// it was; a column someone added, or a type of the same affinity, is no concern.
#[test]
fn a_table_unlike_a_fresh_ones_is_refused() -> anyhow::Result<()> {
    let fresh_dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(fresh_dir.path())?;
    migrate(&db, &path, &mut conn)?;
    let simulations: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = 'simulations'",
        [],
        |r| r.get(0),
    )?;
    drop(conn);
    assert!(
        simulations.contains("duration_seconds REAL"),
        "{simulations}"
    );
    let cases = [
        (
            simulations.replace("metadata JSON", "notes JSON"),
            "simulations has no column metadata",
        ),
        (
            simulations.replace("duration_seconds REAL", "duration_seconds TEXT"),
            "simulations.duration_seconds",
        ),
    ];
    for (create, named) in cases {
        assert_ne!(create, simulations);
        let dir = tempfile::tempdir()?;
        let (db, path, mut conn) = fresh(dir.path())?;
        conn.execute_batch(&create)?;
        let before = objects(&conn)?;
        let err = migrate(&db, &path, &mut conn).err();
        assert!(matches!(err, Some(Error::Migration { .. })), "{err:?}");
        assert!(format!("{err:?}").contains(named), "{named}: {err:?}");
        assert_eq!(objects(&conn)?, before);
        assert_eq!(user_version(&conn)?, 0);
    }

    // Already at the newest version (a column dropped since): refused at open too.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    migrate(&db, &path, &mut conn)?;
    conn.execute_batch("ALTER TABLE studies DROP COLUMN error_message")?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(
        format!("{err:?}").contains("studies has no column error_message"),
        "{err:?}"
    );

    // An index of the data layer's name on someone's own table: the data layer's was
    // skipped (`IF NOT EXISTS`), and every status query scanned the simulations.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    conn.execute_batch(
        "CREATE TABLE my_jobs (status TEXT);
         CREATE INDEX idx_simulations_status ON my_jobs (status);",
    )?;
    let before = objects(&conn)?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(
        format!("{err:?}").contains("index idx_simulations_status is on table my_jobs"),
        "{err:?}"
    );
    assert_eq!(objects(&conn)?, before);
    // Index names are case-insensitive: this one took the name too.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    conn.execute_batch(
        "CREATE TABLE my_jobs (status TEXT);
         CREATE INDEX IDX_SIMULATIONS_STATUS ON my_jobs (status);",
    )?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(
        format!("{err:?}").contains("is on table my_jobs"),
        "{err:?}"
    );

    // An untyped key column is not the rowid: inserts left `id` NULL.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    conn.execute_batch(
        "CREATE TABLE component_types (id PRIMARY KEY, name TEXT NOT NULL UNIQUE,
             category TEXT NOT NULL, description TEXT,
             created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);",
    )?;
    let err = migrate(&db, &path, &mut conn).err();
    assert!(
        format!("{err:?}").contains("component_types.id is declared"),
        "{err:?}"
    );

    // An untyped column (no affinity: every value stays as written) passes.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    conn.execute_batch(&simulations.replace("results_path TEXT", "results_path"))?;
    migrate(&db, &path, &mut conn)?;

    // A column added, and a type of the same affinity, pass.
    let dir = tempfile::tempdir()?;
    let (db, path, mut conn) = fresh(dir.path())?;
    let same = simulations
        .replace("duration_seconds REAL", "duration_seconds DOUBLE PRECISION")
        .replace("metadata JSON", "metadata JSON, owner TEXT");
    assert_ne!(same, simulations);
    conn.execute_batch(&same)?;
    migrate(&db, &path, &mut conn)?;
    assert_eq!(user_version(&conn)?, SCHEMA_VERSION as i64);
    Ok(())
}

/// Bug caught: a negative `user_version` (another program's use of it) reported as "schema
/// version -1, newer than the 4 this code knows".
#[test]
fn a_negative_version_is_not_called_newer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, path, conn) = fresh(dir.path())?;
    conn.execute_batch("PRAGMA user_version = -1; CREATE TABLE theirs (x);")?;
    drop(conn);
    let err = inspect(&db, &path, &DbConfig::default()).err();
    assert!(
        matches!(err, Some(Error::SchemaTooNew { found: -1, .. })),
        "{err:?}"
    );
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("which no version of this code records"),
        "{message}"
    );
    assert!(!message.contains("newer"), "{message}");
    Ok(())
}
