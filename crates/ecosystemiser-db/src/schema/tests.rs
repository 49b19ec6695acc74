//! Tests of the migrations step by step, on plain connections opened through the core.

use std::path::Path;

use hive_db_core::rusqlite::Connection;
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

/// Bug caught: the migration list itself broken (rusqlite_migration's own check).
#[test]
fn the_migrations_validate() -> anyhow::Result<()> {
    migrations().validate()?;
    Ok(())
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
    tx.execute_batch(V3_SQL)?;
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
