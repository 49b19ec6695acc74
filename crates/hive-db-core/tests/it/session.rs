//! A borrower's session changes (PRAGMAs that set something, temporary objects, attached
//! databases) never reach the next borrower: the connection is closed, counted as
//! `session_changed`, and the next one carries the configured settings. Ordinary work keeps
//! the connection.

use std::fmt;

use hive_db_core::DbConfig;
use hive_db_core::rusqlite::{Connection, types::Value};

use crate::support::{Fixture, TestResult, config, fixture};

fn single() -> DbConfig {
    DbConfig {
        max_size: 1,
        min_idle: 1,
        ..config()
    }
}

/// How a borrower gets the connection it changes.
#[derive(Debug, Clone, Copy)]
enum Via {
    Get,
    Read,
    /// Inside the shared write transaction.
    Write,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

const VIAS: [Via; 3] = [Via::Get, Via::Read, Via::Write];

/// Runs `sql` on a connection borrowed through `via`, and returns what SQLite said to it.
fn run(f: &Fixture, via: Via, sql: &str) -> anyhow::Result<Result<(), String>> {
    let exec = |c: &Connection| c.execute_batch(sql).map_err(|e| e.to_string());
    Ok(match via {
        Via::Get => exec(&*f.registry.get(&f.name)?),
        Via::Read => f.registry.read(&f.name, |c| Ok(exec(c)))?,
        Via::Write => f.registry.write(&f.name, |tx| Ok(exec(tx)))?,
    })
}

/// Settings a borrower can read back: every PRAGMA the registry configures, and those a
/// borrower could set.
const SETTINGS: &[&str] = &[
    "query_only",
    "foreign_keys",
    "synchronous",
    "busy_timeout",
    "cache_size",
    "temp_store",
    "journal_mode",
    "journal_size_limit",
    "locking_mode",
    "defer_foreign_keys",
    "recursive_triggers",
    "wal_autocheckpoint",
    "automatic_index",
    "cache_spill",
    "cell_size_check",
    "ignore_check_constraints",
    "max_page_count",
    "mmap_size",
    "read_uncommitted",
    "reverse_unordered_selects",
    "secure_delete",
    "trusted_schema",
];

/// What a borrower sees of a connection's session: the settings, the temporary schema, the
/// attached databases, and how `LIKE` compares case (`case_sensitive_like` cannot be read).
fn session(conn: &Connection) -> anyhow::Result<Vec<(String, String)>> {
    let queries = SETTINGS
        .iter()
        .map(|p| (p.to_string(), format!("PRAGMA {p}")))
        .chain(
            [
                ("temp objects", "SELECT count(*) FROM temp.sqlite_schema"),
                ("temp user_version", "PRAGMA temp.user_version"),
                (
                    "databases",
                    "SELECT group_concat(name, ',') FROM pragma_database_list",
                ),
                ("like ignores case", "SELECT 'a' LIKE 'A'"),
            ]
            .map(|(k, q)| (k.to_owned(), q.to_owned())),
        );
    queries
        .map(|(key, sql)| {
            let value: Value = conn.query_row(&sql, [], |r| r.get(0))?;
            Ok((key, format!("{value:?}")))
        })
        .collect()
}

/// The session of the connection the next borrower gets.
fn next_session(f: &Fixture) -> anyhow::Result<Vec<(String, String)>> {
    session(&*f.registry.get(&f.name)?)
}

/// What SQLite says to a change.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Said {
    /// It runs (whether it takes effect now, later or not at all).
    Runs,
    /// It is refused with an error.
    Refused,
}

/// Each change a borrower can make to its session, and what SQLite says to it outside a
/// transaction (`get`, `read`) and inside `write`'s.
const CHANGES: &[(&str, Said, Said)] = &[
    ("PRAGMA query_only = ON", Said::Runs, Said::Runs),
    ("PRAGMA foreign_keys = OFF", Said::Runs, Said::Runs),
    ("PRAGMA synchronous = OFF", Said::Runs, Said::Refused),
    ("PRAGMA busy_timeout = 0", Said::Runs, Said::Runs),
    ("PRAGMA cache_size = 10", Said::Runs, Said::Runs),
    ("PRAGMA temp_store = FILE", Said::Runs, Said::Refused),
    ("PRAGMA journal_size_limit = 0", Said::Runs, Said::Runs),
    ("PRAGMA locking_mode = EXCLUSIVE", Said::Runs, Said::Runs),
    // Refused by the registry: the file would leave WAL mode for every connection.
    ("PRAGMA journal_mode = DELETE", Said::Refused, Said::Refused),
    ("PRAGMA journal_mode = MEMORY", Said::Refused, Said::Refused),
    (
        "PRAGMA main.journal_mode = OFF",
        Said::Refused,
        Said::Refused,
    ),
    ("PRAGMA defer_foreign_keys = ON", Said::Runs, Said::Runs),
    ("PRAGMA recursive_triggers = ON", Said::Runs, Said::Runs),
    ("PRAGMA wal_autocheckpoint = 10", Said::Runs, Said::Runs),
    ("PRAGMA automatic_index = OFF", Said::Runs, Said::Runs),
    ("PRAGMA cache_spill = OFF", Said::Runs, Said::Runs),
    ("PRAGMA cell_size_check = ON", Said::Runs, Said::Runs),
    (
        "PRAGMA ignore_check_constraints = ON",
        Said::Runs,
        Said::Runs,
    ),
    ("PRAGMA max_page_count = 100", Said::Runs, Said::Runs),
    ("PRAGMA mmap_size = 65536", Said::Runs, Said::Runs),
    ("PRAGMA read_uncommitted = ON", Said::Runs, Said::Runs),
    (
        "PRAGMA reverse_unordered_selects = ON",
        Said::Runs,
        Said::Runs,
    ),
    ("PRAGMA secure_delete = ON", Said::Runs, Said::Runs),
    ("PRAGMA trusted_schema = OFF", Said::Runs, Said::Runs),
    ("PRAGMA case_sensitive_like = ON", Said::Runs, Said::Runs),
    ("PRAGMA temp.user_version = 5", Said::Runs, Said::Runs),
    ("CREATE TEMP TABLE scratch (x)", Said::Runs, Said::Runs),
    (
        "CREATE TEMP TABLE scratch (x); CREATE INDEX temp.scratch_x ON scratch (x)",
        Said::Runs,
        Said::Runs,
    ),
    (
        "CREATE TEMP VIEW scratch AS SELECT 1",
        Said::Runs,
        Said::Runs,
    ),
    (
        "CREATE TEMP TRIGGER scratch AFTER INSERT ON t BEGIN SELECT 1; END",
        Said::Runs,
        Said::Runs,
    ),
    // A virtual table without shadow tables (fts5's own would show as temporary tables).
    (
        "CREATE VIRTUAL TABLE temp.scratch USING fts5vocab(main, t, 'row')",
        Said::Runs,
        Said::Runs,
    ),
    ("ATTACH ':memory:' AS scratch", Said::Runs, Said::Runs),
];

/// Bug caught: a borrower's session change handed to the next borrower of the connection
/// (one `PRAGMA query_only = ON` and every later write fails; `foreign_keys = OFF` and later
/// writers store orphans; a temporary table or an attached database seen by the next user),
/// through `get`, `read` or `write`; or such a connection closed without being counted as
/// `session_changed`. Also pins what SQLite does with each change inside a transaction.
#[test]
fn a_changed_session_never_reaches_the_next_borrower() -> TestResult {
    // Every case runs; the failures are reported together.
    let mut wrong = Vec::new();
    for (i, &(sql, outside, in_write)) in CHANGES.iter().enumerate() {
        for via in VIAS {
            let f = fixture(&format!("session_{i}_{via}"), single())?;
            f.registry.write(&f.name, |tx| {
                tx.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")?;
                Ok(())
            })?;
            let configured = next_session(&f)?;
            let said = run(&f, via, sql)?;
            let expected = match via {
                Via::Write => in_write,
                Via::Get | Via::Read => outside,
            };
            let outcome = if said.is_ok() {
                Said::Runs
            } else {
                Said::Refused
            };
            if outcome != expected {
                wrong.push(format!("{sql} through {via}: {said:?}"));
            }
            let next = next_session(&f)?;
            if next != configured {
                let changed: Vec<_> = next.iter().filter(|s| !configured.contains(s)).collect();
                wrong.push(format!(
                    "{sql} through {via} reached the next borrower: {changed:?}"
                ));
            }
            // The next borrower can write: no `query_only`, no lock held in another mode.
            if let Err(e) = f.registry.write(&f.name, |tx| {
                tx.execute("INSERT INTO t DEFAULT VALUES", [])?;
                Ok(())
            }) {
                wrong.push(format!("{sql} through {via}: the next write failed: {e:#}"));
            }
            let closed = f.registry.db_stats(&f.name)?.totals.connections_closed;
            if (closed.session_changed, closed.total()) != (1, 1) {
                wrong.push(format!("{sql} through {via}: closed {closed:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    Ok(())
}

/// Statements that leave the session as it was: ordinary SQL, schema changes in `main`,
/// read-only PRAGMAs, PRAGMAs with an argument that only query or maintain, and writes of the
/// file's header.
const ORDINARY: &[&str] = &[
    "SELECT count(*) FROM t",
    "INSERT INTO t (v) VALUES (1)",
    "UPDATE t SET v = v + 1",
    "DELETE FROM t WHERE v > 100",
    "CREATE TABLE IF NOT EXISTS main.u (x)",
    "CREATE INDEX IF NOT EXISTS t_v ON t (v)",
    "CREATE VIEW IF NOT EXISTS t_view AS SELECT v FROM t",
    "CREATE TRIGGER IF NOT EXISTS t_trigger AFTER INSERT ON t BEGIN SELECT 1; END",
    "ANALYZE",
    "PRAGMA user_version",
    "PRAGMA query_only",
    "PRAGMA foreign_keys",
    "PRAGMA journal_mode",
    "PRAGMA busy_timeout",
    "PRAGMA compile_options",
    "PRAGMA database_list",
    "PRAGMA table_info(t)",
    "PRAGMA table_xinfo(t)",
    "PRAGMA index_list(t)",
    "PRAGMA index_info(t_v)",
    "PRAGMA foreign_key_list(t)",
    "PRAGMA foreign_key_check(t)",
    "PRAGMA integrity_check(10)",
    "PRAGMA quick_check(t)",
    "SELECT name FROM pragma_table_info('t')",
    "PRAGMA user_version = 7",
    "PRAGMA main.application_id = 7",
    "PRAGMA optimize",
    "PRAGMA optimize(0x10002)",
    "PRAGMA incremental_vacuum(1)",
    CHECKPOINT,
];

const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// Bug caught: ordinary statements, or the registry's own (setup, the write path, health's
/// probe, a checkpoint), taken for session changes, so that connections are closed on
/// return and the pool opens a new one for nearly every borrower.
#[test]
fn ordinary_statements_keep_the_connection() -> TestResult {
    let f = fixture("session_ordinary", single())?;
    f.registry.write(&f.name, |tx| {
        tx.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")?;
        Ok(())
    })?;
    for via in VIAS {
        for &sql in ORDINARY {
            match (run(&f, via, sql)?, via) {
                (Ok(()), _) => {}
                // SQLite will not checkpoint inside a transaction; still no session change.
                (Err(_), Via::Write) if sql == CHECKPOINT => {}
                (Err(e), _) => anyhow::bail!("{sql} through {via}: {e}"),
            }
        }
    }
    let health = f.registry.health(std::time::Duration::from_secs(5));
    assert_eq!(
        health.status,
        hive_db_core::HealthStatus::Healthy,
        "{health:?}"
    );
    let totals = f.registry.db_stats(&f.name)?.totals;
    assert_eq!(totals.connections_closed.total(), 0, "{totals:?}");
    assert_eq!(totals.connections_created, 1, "{totals:?}");
    Ok(())
}
