//! The move itself: the snapshot staged, the target migrated, then every table copied,
//! its sequences set and read back in ONE PostgreSQL transaction, committed only when every
//! table's rows and checksum match the source's.

use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::SeqCst;

use ecosystemiser_db::EcoDb;
use hive_db_core::{PgConfig, Registry};

use super::cells::Moved;
use super::cli::{Args, Progress};
use super::failure::{Context, Failure, fail};
use super::source::{
    CARRIED, autoincrement_mark, carried, extra_columns, open_source, sqlite_tables, stage,
};
use super::target::{
    Column, SKIPPED, copy_table, dependency_order, ident, movable, read_back, reset_identity,
    target_tables,
};

/// Where the move stands, for the signal handler's word on the target (`main`).
pub(super) static PHASE: AtomicU8 = AtomicU8::new(MOVING);
/// Nothing sent that could commit: ended now, the move leaves nothing on the target.
pub(super) const MOVING: u8 = 0;
/// `COMMIT` sent, its answer not in: the server may commit it whatever happens here.
pub(super) const COMMITTING: u8 = 1;
/// Committed.
pub(super) const COMMITTED: u8 = 2;

/// Moves `args.from` into `args.to`.
pub(super) fn run(args: &Args, progress: &Progress) -> Result<Vec<Moved>, Failure> {
    let (_staged, copy, not_moved) = stage(&args.from)?;
    for object in &not_moved {
        eprintln!("eco-move: not moved (schema, not rows; recreate it on the target): {object}");
    }
    let source = open_source(&copy)?;
    let registry = Registry::new();
    let eco = EcoDb::with_postgres(&registry, &args.to, PgConfig::default())
        .context(|| "cannot open and migrate the target".to_owned())?;
    let handle = eco
        .postgres()
        .context(|| "the target is not on PostgreSQL".to_owned())?;
    let mut client = handle
        .get()
        .context(|| "cannot connect to the target".to_owned())?;
    let mut tx = client
        .transaction()
        .context(|| "cannot begin the target's transaction".to_owned())?;
    let tables = target_tables(&mut tx)?;
    source
        .execute_batch("BEGIN")
        .context(|| "cannot begin reading the source".to_owned())?;
    let source_tables = sqlite_tables(&source)?;
    let components_carried = source_tables.contains(CARRIED) && carried(&source)?;
    if components_carried {
        eprintln!(
            "eco-move: the original code's {CARRIED} table: its rows move as the component \
             library's (component_types, component_specs), where adoption copied them"
        );
    }
    let unknown: Vec<_> = source_tables
        .iter()
        .filter(|t| !tables.contains_key(*t) && !SKIPPED.contains(&t.as_str()))
        .filter(|t| !(components_carried && t.as_str() == CARRIED))
        .collect();
    if !unknown.is_empty() {
        return fail(format!(
            "the source has tables the target's schema does not: {unknown:?} (nothing moved)"
        ));
    }
    // Only the tables the source has: the others in the schema are left alone, and their
    // column types and foreign keys do not matter.
    let tables: std::collections::BTreeMap<String, Vec<Column>> = tables
        .into_iter()
        .filter(|(t, _)| source_tables.contains(t))
        .collect();
    movable(&tables)?;
    let order = dependency_order(&mut tx, &tables)?;
    let moving: Vec<(&String, &Vec<Column>)> = order
        .iter()
        .filter_map(|t| tables.get_key_value(t))
        .collect();
    let mut non_empty = Vec::new();
    for (table, _) in &moving {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", ident(table)), &[])
            .and_then(|r| r.try_get(0))
            .context(|| format!("cannot count the target's {table}"))?;
        if n > 0 {
            non_empty.push(format!("{table} ({n} rows)"));
        }
    }
    if !non_empty.is_empty() {
        if !args.replace {
            return fail(format!(
                "the target already holds rows: {} (give --replace to empty it first; \
             nothing moved)",
                non_empty.join(", ")
            ));
        }
        let all: Vec<String> = moving.iter().map(|(t, _)| ident(t)).collect();
        tx.batch_execute(&format!("TRUNCATE {}", all.join(", ")))
            .context(|| "cannot empty the target".to_owned())?;
    }
    for (table, columns) in &moving {
        extra_columns(&source, table, columns)?;
    }
    let mut moved = Vec::new();
    for (table, columns) in &moving {
        let copied = copy_table(&source, &mut tx, table, columns, args.batch, progress)?;
        reset_identity(&mut tx, table, autoincrement_mark(&source, table)?)?;
        let back = read_back(&mut tx, table, columns)?;
        if back != copied {
            return fail(format!(
                "{table} did not verify: {} rows (checksum {:016x}) in the source, {} \
             ({:016x}) in the target; nothing committed",
                copied.rows, copied.sum, back.rows, back.sum
            ));
        }
        moved.push(Moved {
            table: (*table).clone(),
            rows: copied.rows,
            checksum: copied.sum,
        });
    }
    progress.clear();
    PHASE.store(COMMITTING, SeqCst);
    if let Err(e) = tx.commit() {
        // A connection lost while `COMMIT` was out: the server may have committed it.
        if e.as_db_error().is_none() {
            return fail(format!(
                "the connection was lost during COMMIT: the move may have committed; look \
                 at the target before running again ({e})"
            ));
        }
        PHASE.store(MOVING, SeqCst);
        return fail(format!("cannot commit the move: {e}"));
    }
    PHASE.store(COMMITTED, SeqCst);
    let _ = source.execute_batch("COMMIT");
    drop(client);
    registry.close_all(std::time::Duration::from_secs(5));
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use ecosystemiser_db::{
        ComponentLibrary, Event, EventStore, Metric, NewSimulation, Runs, Settings,
    };
    use hive_db_core::postgres::{Client, NoTls};
    use hive_db_core::{DbConfig, DbName, open_connection};

    use super::*;

    /// Metrics in the generated source.
    const METRICS: usize = 100_000;

    /// An EcoSystemiser SQLite database in `dir` with `METRICS` metrics, events, a study of
    /// a component type; returns its path.
    fn source(dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("eco.db");
        let registry = Registry::new();
        let db = EcoDb::with_registry(&registry, &Settings::new(&path))?;
        let runs = Runs::new(&db);
        for s in 0..10 {
            runs.create_simulation(&NewSimulation::new(format!("sim-{s}"), "c.yml", "milp"))?;
        }
        for b in 0..METRICS / 1000 {
            let metrics: Vec<Metric> = (0..1000)
                .map(|i| Metric::new(format!("m{b}-{i}"), (b * 1000 + i) as f64 / 3.0, None))
                .collect();
            runs.record_metrics(&format!("sim-{}", b % 10), &metrics)?;
        }
        let events = EventStore::new(&db);
        for e in 0..200 {
            let event = Event::new("t", "s", serde_json::json!({ "n": e }))
                .for_simulation(format!("sim-{}", e % 10));
            events.publish(&event)?;
        }
        ComponentLibrary::new(&db).add_type("battery", "storage", Some("a 'quoted' one"))?;
        drop((runs, events, db));
        registry.close_all(std::time::Duration::from_secs(5));
        Ok(path)
    }

    fn counts(url: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut c = Client::connect(url, NoTls)?;
        let mut out = BTreeMap::new();
        for t in [
            "simulations",
            "simulation_metrics",
            "ecosystemiser_events",
            "component_types",
        ] {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM {t}"), &[])?
                .try_get(0)?;
            out.insert(t.to_owned(), n);
        }
        Ok(out)
    }

    /// Bug caught: a move that loses or changes rows (a batch boundary dropping a row, a
    /// float rounded, a NULL turned into a value), that a checksum computed differently on
    /// the two sides would hide; an identity sequence left behind the copied ids, so the
    /// next insert collides; a non-empty target written over without `--replace`; or a
    /// source file that the move changed.
    #[test]
    fn moves_a_generated_database_and_verifies_it() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let dir = tempfile::tempdir()?;
        let path = source(dir.path())?;
        let before = std::fs::read(&path)?;
        let url = hive_pg_harness::server()?.fresh_db()?;
        let args = Args {
            from: path.clone(),
            to: url.clone(),
            replace: false,
            batch: 7_000,
        };
        let moved = run(&args, &Progress::new(false)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let metrics = moved.iter().find(|m| m.table == "simulation_metrics");
        assert_eq!(metrics.map(|m| m.rows), Some(METRICS as u64));
        assert!(moved.iter().map(|m| m.rows).sum::<u64>() > METRICS as u64);
        let c = counts(&url)?;
        assert_eq!(c["simulation_metrics"], METRICS as i64);
        assert_eq!(c["ecosystemiser_events"], 200);
        // The sequence is past the copied ids: a new metric goes in.
        let registry = Registry::new();
        let db = EcoDb::with_postgres(&registry, &url, PgConfig::default())?;
        Runs::new(&db).record_metrics("sim-0", &[Metric::new("after", 1.0, None)])?;
        drop(db);
        registry.close_all(std::time::Duration::from_secs(5));

        let again = run(&args, &Progress::new(false));
        assert!(
            matches!(&again, Err(Failure(m)) if m.contains("already holds rows")),
            "{again:?}"
        );
        let replaced = run(
            &Args {
                replace: true,
                ..args
            },
            &Progress::new(false),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(replaced, moved, "the same rows and checksums again");
        assert_eq!(counts(&url)?["simulation_metrics"], METRICS as i64);
        assert!(std::fs::read(&path)? == before, "the source file changed");
        Ok(())
    }

    /// Bug caught: a move that commits table by table, so a failure part-way (here a value
    /// that does not fit its column, met after other tables were copied) leaves a target
    /// half filled instead of as it was.
    #[test]
    fn a_failed_move_leaves_the_target_empty() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let dir = tempfile::tempdir()?;
        let path = source(dir.path())?;
        {
            let conn =
                open_connection(&DbName::new("ecosystemiser")?, &path, &DbConfig::default())?;
            conn.execute(
                "INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value)
             VALUES ('sim-1', 'bad', 'not a number')",
                [],
            )?;
        }
        let url = hive_pg_harness::server()?.fresh_db()?;
        let args = Args {
            from: path,
            to: url.clone(),
            replace: false,
            batch: 10_000,
        };
        let failed = run(&args, &Progress::new(false));
        assert!(
            matches!(&failed, Err(Failure(m)) if m.contains("metric_value")),
            "{failed:?}"
        );
        assert!(
            counts(&url)?.values().all(|n| *n == 0),
            "{:?}",
            counts(&url)?
        );
        Ok(())
    }

    /// Bug caught: a move interrupted part-way (its connection cut while a batch is
    /// being copied, as a killed process or a lost network cuts it) that leaves the rows
    /// copied so far behind, because batches or tables were committed on their own.
    #[test]
    fn an_interrupted_move_leaves_the_target_empty() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let dir = tempfile::tempdir()?;
        let path = source(dir.path())?;
        let url = hive_pg_harness::server()?.fresh_db()?;
        let config: hive_db_core::postgres::Config = url.parse()?;
        let db = config.get_dbname().unwrap_or_default().to_owned();
        let args = Args {
            from: path,
            to: url.clone(),
            replace: false,
            batch: 500,
        };
        let mut admin = Client::connect(&url, NoTls)?;
        let outcome = std::thread::scope(|s| -> anyhow::Result<_> {
            let mover = s.spawn(|| run(&args, &Progress::new(false)));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut cut = false;
            while !cut && !mover.is_finished() && std::time::Instant::now() < deadline {
                cut = !admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = $1 AND query LIKE 'COPY \"simulation_metrics\"%'
                           AND pid <> pg_backend_pid()",
                        &[&db],
                    )?
                    .is_empty();
            }
            let outcome = mover
                .join()
                .map_err(|_| anyhow::anyhow!("the move panicked"))?;
            Ok((cut, outcome))
        })?;
        let (cut, moved) = outcome;
        assert!(cut, "the copy was never seen running: {moved:?}");
        assert!(moved.is_err(), "a cut move reported success");
        assert!(
            counts(&url)?.values().all(|n| *n == 0),
            "{:?}",
            counts(&url)?
        );
        Ok(())
    }

    /// A small EcoSystemiser SQLite database in `dir` with `events` events; its path.
    fn small_source(dir: &Path, events: usize) -> anyhow::Result<PathBuf> {
        let path = dir.join("small.db");
        let registry = Registry::new();
        let db = EcoDb::with_registry(&registry, &Settings::new(&path))?;
        let store = EventStore::new(&db);
        for e in 0..events {
            store.publish(&Event::new("t", "s", serde_json::json!(e)))?;
        }
        drop((store, db));
        registry.close_all(std::time::Duration::from_secs(5));
        Ok(path)
    }

    fn args(from: &Path, to: &str) -> Args {
        Args {
            from: from.to_path_buf(),
            to: to.to_owned(),
            replace: false,
            batch: 10_000,
        }
    }

    /// Bug caught: the source's tables were listed with `NOT LIKE 'sqlite_%'`, where `_`
    /// matches any character, so a table of someone's named `sqlitebackup` was taken for
    /// SQLite's own: neither moved nor refused, and the move reported success.
    #[test]
    fn a_table_whose_name_only_looks_like_sqlites_own_is_refused() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let dir = tempfile::tempdir()?;
        let path = small_source(dir.path(), 1)?;
        open_connection(&DbName::new("ecosystemiser")?, &path, &DbConfig::default())?
            .execute_batch(
                "CREATE TABLE sqlitebackup (x TEXT); INSERT INTO sqlitebackup VALUES ('kept');",
            )?;
        let url = hive_pg_harness::server()?.fresh_db()?;
        let moved = run(&args(&path, &url), &Progress::new(false));
        match moved {
            Err(e) => assert!(e.to_string().contains("sqlitebackup"), "{e}"),
            Ok(m) => panic!("moved without sqlitebackup: {:?}", m.len()),
        }
        Ok(())
    }

    /// Bug caught: the identity sequences were set past the largest id copied, not past the
    /// source's AUTOINCREMENT mark, so the ids of deleted rows were handed out again: the
    /// next event after the move got `seq` 4 where SQLite would give 6, and a listener past
    /// 4 never saw it.
    #[test]
    fn ids_handed_out_before_the_move_are_not_handed_out_again() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let dir = tempfile::tempdir()?;
        let path = small_source(dir.path(), 5)?;
        open_connection(&DbName::new("ecosystemiser")?, &path, &DbConfig::default())?
            .execute_batch("DELETE FROM ecosystemiser_events WHERE seq > 3")?;
        let url = hive_pg_harness::server()?.fresh_db()?;
        run(&args(&path, &url), &Progress::new(false)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let registry = Registry::new();
        let db = EcoDb::with_postgres(&registry, &url, PgConfig::default())?;
        EventStore::new(&db).publish(&Event::new("after", "s", serde_json::json!(0)))?;
        let seq: i64 = Client::connect(&url, NoTls)?
            .query_one(
                "SELECT seq FROM ecosystemiser_events WHERE event_type = 'after'",
                &[],
            )?
            .try_get(0)?;
        assert_eq!(seq, 6, "an id the source handed out was handed out again");
        Ok(())
    }

    /// Bug caught: a JSON number that ecosystemiser-db stores on SQLite as a BLOB of its
    /// text (so that NUMERIC affinity leaves it alone) did not fit the target's text
    /// column, and the move failed.
    #[test]
    fn a_json_number_stored_as_a_blob_moves_as_its_text() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let dir = tempfile::tempdir()?;
        let path = small_source(dir.path(), 0)?;
        {
            let registry = Registry::new();
            let db = EcoDb::with_registry(&registry, &Settings::new(&path))?;
            let mut sim = NewSimulation::new("s", "a.yml", "milp");
            sim.metadata = Some(serde_json::json!(1.0));
            Runs::new(&db).create_simulation(&sim)?;
            drop(db);
            registry.close_all(std::time::Duration::from_secs(5));
        }
        let url = hive_pg_harness::server()?.fresh_db()?;
        run(&args(&path, &url), &Progress::new(false)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let metadata: String = Client::connect(&url, NoTls)?
            .query_one(
                "SELECT metadata FROM simulations WHERE simulation_id = 's'",
                &[],
            )?
            .try_get(0)?;
        assert_eq!(metadata, "1.0");
        Ok(())
    }
}
