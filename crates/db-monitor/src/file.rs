//! A database file opened by the monitor itself: read-only, never created, every step bounded.
//!
//! A pool's state lives in its application's process, so a file gives only what SQLite can
//! tell from outside: the file's facts, `quick_check`, a timed read, and whether another
//! connection holds the write lock.

use std::path::Path;
use std::time::{Duration, Instant};

use hive_db_core::HealthStatus;
use hive_db_core::rusqlite::{self, Connection, ErrorCode, OpenFlags, config::DbConfig};
use serde::{Deserialize, Serialize};

use crate::probe::ProbeResult;

/// What SQLite says about a database file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FileFacts {
    /// Size of the database file in bytes.
    pub file_bytes: u64,
    /// Size of its `-wal` file in bytes (0 when absent).
    pub wal_bytes: u64,
    /// `PRAGMA page_size`.
    pub page_size: u64,
    /// `PRAGMA page_count`.
    pub page_count: u64,
    /// `PRAGMA freelist_count`: unused pages.
    pub freelist_count: u64,
    /// `PRAGMA journal_mode`.
    pub journal_mode: String,
    /// `ok`, the first problem `PRAGMA quick_check` found, or why it did not finish; `None`
    /// when it was not run.
    pub quick_check: Option<String>,
    /// True when `quick_check` found a problem.
    pub corrupt: bool,
}

/// A health check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthFacts {
    /// Healthy, degraded or unhealthy.
    pub status: HealthStatus,
    /// Time the check took, in milliseconds.
    pub latency_ms: f64,
    /// What went wrong or made it degraded.
    pub error: Option<String>,
}

/// What a look at one file found: its facts and health, or why it could not be read.
#[derive(Debug, Clone)]
pub(crate) struct FileLook {
    pub(crate) facts: Option<FileFacts>,
    pub(crate) health: HealthFacts,
    pub(crate) probe: Option<ProbeResult>,
}

/// Looks at the database at `path` without creating or changing anything: a read-only
/// connection times a read of the schema and reads the facts, runs `quick_check` when
/// `quick_check` is set, and a second connection opened without create tries the write lock
/// (`BEGIN IMMEDIATE; ROLLBACK`) to see whether another connection holds it. Every step is
/// bounded by `timeout`.
pub(crate) fn look(
    path: &Path,
    timeout: Duration,
    quick_check: bool,
    probe: Option<Duration>,
) -> FileLook {
    let start = Instant::now();
    let down = |error: String| FileLook {
        facts: None,
        health: HealthFacts {
            status: HealthStatus::Unhealthy,
            latency_ms: ms(start.elapsed()),
            error: Some(error),
        },
        probe: None,
    };
    // Only a regular file: opening a FIFO blocks until a writer comes, with no bound, and a
    // device such as /dev/zero or /dev/null reads as an empty, healthy database.
    if let Ok(m) = std::fs::metadata(path)
        && !m.is_file()
        && !m.is_dir()
    {
        return down(format!(
            "{} is not a regular file (a FIFO, socket or device), not a database",
            path.display()
        ));
    }
    // Open first, explain after: without SQLITE_OPEN_CREATE, the open itself is what keeps
    // a missing database from being created.
    let conn = match open(path, OpenFlags::SQLITE_OPEN_READ_ONLY, timeout) {
        Ok(c) => c,
        Err(e) => return down(not_opened(path, &e)),
    };
    let schema = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    });
    if let Err(e) = schema {
        // A WAL file read-only needs its -shm, which the last connection removed on a clean
        // close, and this user may not make one in the folder: nothing says the database is
        // unwell, only that it cannot be looked at from here until the application opens it.
        if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) && !beside(path, "-shm").exists() {
            return FileLook {
                facts: None,
                health: HealthFacts {
                    status: HealthStatus::Degraded,
                    latency_ms: ms(start.elapsed()),
                    error: Some(format!(
                        "cannot check {}: it is in WAL mode with no -shm beside it (no \
                         connection has it open) and this user may not create one in its \
                         folder",
                        path.display()
                    )),
                },
                probe: None,
            };
        }
        return down(describe("read", path, &e));
    }
    let read_latency = start.elapsed();
    let mut facts = match read_facts(&conn, path) {
        Ok(f) => f,
        Err(e) => return down(describe("read the facts of", path, &e)),
    };
    let mut health = health(path, start, read_latency, timeout);
    if quick_check {
        let (verdict, corrupt) = run_quick_check(&conn, timeout);
        if corrupt {
            health.status = HealthStatus::Unhealthy;
            health.error = Some(format!("quick_check: {verdict}"));
        }
        facts.quick_check = Some(verdict);
        facts.corrupt = corrupt;
    }
    let probe = probe.map(|d| crate::probe::reads(&conn, d));
    FileLook {
        facts: Some(facts),
        health,
        probe,
    }
}

/// Why the database at `path` could not be opened: no such file, a folder, or SQLite's reason.
fn not_opened(path: &Path, e: &rusqlite::Error) -> String {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => format!("{} is a folder, not a database", path.display()),
        Err(m) if m.kind() == std::io::ErrorKind::NotFound => {
            format!("database file {} does not exist", path.display())
        }
        // SQLite says only "unable to open database file"; the kernel says why, asked
        // without opening the file (closing a descriptor of it would drop this process's
        // locks there, which a look at the same file on another thread may hold).
        _ if rustix::fs::access(path, rustix::fs::Access::READ_OK)
            == Err(rustix::io::Errno::ACCESS) =>
        {
            format!(
                "cannot open {}: permission denied (this user may not read it)",
                path.display()
            )
        }
        _ => describe("open", path, e),
    }
}

/// The health of a file that could be read (`read_latency` after `start`): degraded while
/// another connection holds the write lock, or when the check took over half of `timeout`.
fn health(path: &Path, start: Instant, read_latency: Duration, timeout: Duration) -> HealthFacts {
    let lock_note = write_lock_probe(path, start + timeout);
    let latency = start.elapsed();
    let slow = || {
        format!(
            "slow: the check took {} (read {})",
            crate::fmt::duration(latency),
            crate::fmt::duration(read_latency)
        )
    };
    let error = lock_note.or_else(|| (latency > timeout / 2).then(slow));
    HealthFacts {
        status: if error.is_some() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        },
        latency_ms: ms(latency),
        error,
    }
}

/// The facts of the file at `path`, read-only, for a database an endpoint reports on: `None`
/// when it is not on this host or cannot be read (the endpoint's own health covers it).
pub(crate) fn facts_of(path: &Path, timeout: Duration, quick_check: bool) -> Option<FileFacts> {
    if !path.is_file() {
        return None;
    }
    let conn = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY, timeout).ok()?;
    let mut facts = read_facts(&conn, path).ok()?;
    if quick_check {
        let (verdict, corrupt) = run_quick_check(&conn, timeout);
        facts.quick_check = Some(verdict);
        facts.corrupt = corrupt;
    }
    Some(facts)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn open(path: &Path, access: OpenFlags, timeout: Duration) -> rusqlite::Result<Connection> {
    // No SQLITE_OPEN_CREATE: a missing file is an error, never a new database.
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(timeout)?;
    Ok(conn)
}

/// `path` with `suffix` added to its name (`-wal`, `-shm`).
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// One line naming what failed, on which file, and SQLite's reason.
fn describe(what: &str, path: &Path, e: &rusqlite::Error) -> String {
    let p = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!("{p} is not a SQLite database"),
        Some(ErrorCode::DatabaseCorrupt) => format!("{p} is corrupt: {e}"),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("cannot {what} {p}: locked by another connection ({e})")
        }
        _ => format!("cannot {what} {p}: {e}"),
    }
}

fn read_facts(conn: &Connection, path: &Path) -> rusqlite::Result<FileFacts> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    Ok(FileFacts {
        file_bytes: len(path),
        wal_bytes: len(&beside(path, "-wal")),
        page_size: u64::try_from(pragma("page_size")?).unwrap_or(0),
        page_count: u64::try_from(pragma("page_count")?).unwrap_or(0),
        freelist_count: u64::try_from(pragma("freelist_count")?).unwrap_or(0),
        journal_mode: conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
        quick_check: None,
        corrupt: false,
    })
}

/// `None` when the write lock could be taken (or the file cannot be opened for writing, so
/// nobody here could write anyway); otherwise why writes are blocked.
fn write_lock_probe(path: &Path, deadline: Instant) -> Option<String> {
    // Wait a little for the lock: ordinary writers hold it for milliseconds.
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_millis(500))
        .max(Duration::from_millis(1));
    let conn = match open(path, OpenFlags::SQLITE_OPEN_READ_WRITE, wait) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "write-lock probe skipped");
            return None;
        }
    };
    // Closing the last connection of a WAL database would checkpoint and remove the WAL:
    // this connection must leave the file as it found it.
    if let Err(e) = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true) {
        tracing::debug!(error = %e, "write-lock probe skipped");
        return None;
    }
    match conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
        Ok(()) => None,
        Err(e) => match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Some(format!(
                "writes blocked: another connection holds the write lock (waited {})",
                crate::fmt::duration(wait)
            )),
            _ => {
                tracing::debug!(error = %e, "write-lock probe failed");
                None
            }
        },
    }
}

/// `PRAGMA quick_check`, stopped at `timeout` by a progress handler. Returns the verdict and
/// whether it found corruption.
fn run_quick_check(conn: &Connection, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    if conn
        .progress_handler(10_000, Some(move || Instant::now() > deadline))
        .is_err()
    {
        return ("not run: cannot bound it".to_owned(), false);
    }
    let result = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    let _ = conn.progress_handler(0, None::<fn() -> bool>);
    match result {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => ("ok".to_owned(), false),
        Ok(rows) => (rows.join("; "), true),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => (
            format!(
                "stopped after {} (raise --timeout to finish it)",
                crate::fmt::duration(timeout)
            ),
            false,
        ),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseCorrupt) => {
            (e.to_string(), true)
        }
        Err(e) => (format!("failed: {e}"), false),
    }
}
