//! The facts of one registered database (its name, file, file identity, settings and
//! counters), made once at `register` and shared by its pool's parts, its writer side and the
//! registry's entry, which keeps them after close so the counters carry on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::config::DbConfig;
use crate::error::{Error, OpenCause, Result, extended_code, is_corruption_code};
use crate::name::DbName;
use crate::open::{FileId, PreparedDatabase, open_file};
use crate::stats::{DbCounters, DbSnapshot, Gauges};

/// The facts of one registered database. Immutable; the counters inside are atomics.
#[derive(Debug)]
pub(crate) struct DbInfo {
    pub(crate) name: DbName,
    /// The canonical path registered; for a database on a server, only what snapshots show of
    /// where it is (never a password).
    pub(crate) path: PathBuf,
    /// The file registered at `path`; `None` for a database on a server.
    pub(crate) file_id: Option<FileId>,
    pub(crate) config: DbConfig,
    pub(crate) counters: Arc<DbCounters>,
    /// The last corruption error a call of this registration got, for health: kept here,
    /// not in the counters, which a name's next registration (of another file, a restored
    /// copy say) carries on with.
    corruption: Mutex<Option<Corruption>>,
    /// Test-only: runs in [`DbInfo::open_registered`] before the file is opened.
    #[cfg(test)]
    pub(crate) before_open: BeforeOpen,
}

/// Why [`DbInfo::open_registered`] failed.
#[derive(Debug)]
pub(crate) enum OpenFailed {
    /// SQLite refused to open the file.
    Sqlite(rusqlite::Error),
    /// The file at the path is not the registered one ([`OpenCause::FileChanged`]).
    Moved(Error),
}

/// Test-only fault injection into [`DbInfo::open_registered`].
#[cfg(test)]
#[derive(Default)]
pub(crate) struct BeforeOpen(Mutex<Option<Arc<dyn Fn() + Send + Sync>>>);

#[cfg(test)]
impl BeforeOpen {
    /// Runs `hook` before every open from now on.
    pub(crate) fn set(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *crate::sync::lock(&self.0) = Some(hook);
    }

    /// Makes another database next to `path` (WAL, `t` holding `'other'`), and at the next
    /// open, just before it, moves the file at `path` to `moved.sqlite` beside it and
    /// renames the other over `path`: a file renamed over the path as a connection opens.
    /// The flag says whether that happened.
    pub(crate) fn swap_files_once(
        &self,
        path: &std::path::Path,
    ) -> anyhow::Result<Arc<std::sync::atomic::AtomicBool>> {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let (other, moved) = (dir.join("other.sqlite"), dir.join("moved.sqlite"));
        let (name, config) = (
            DbName::new("other")?,
            DbConfig {
                create_if_missing: true,
                ..DbConfig::default()
            },
        );
        crate::open::prepare_database(&name, &other, &config)?;
        crate::open::open_connection(&name, &other, &config)?
            .execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES ('other');")?;
        let swapped = Arc::new(AtomicBool::new(false));
        let (flag, path) = (Arc::clone(&swapped), path.to_path_buf());
        self.set(Arc::new(move || {
            if !flag.swap(true, SeqCst) {
                std::fs::rename(&path, &moved).expect("move the registered file");
                std::fs::rename(&other, &path).expect("rename over the registered path");
            }
        }));
        Ok(swapped)
    }
}

#[cfg(test)]
impl std::fmt::Debug for BeforeOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeOpen")
    }
}

/// How long a corruption error a call got counts for health. A damaged file stays damaged;
/// while calls keep reaching the damage, health keeps saying so.
pub(crate) const CORRUPTION_MEMORY: Duration = Duration::from_secs(600);

/// A corruption error a call got, and what health made of it.
#[derive(Debug, Clone)]
pub(crate) struct Corruption {
    /// When.
    pub(crate) at: Instant,
    /// The error the call got.
    pub(crate) error: String,
    /// When `PRAGMA integrity_check` last found the database's own file damaged (the error
    /// may have come from an attached file, or from a connection the closure opened).
    pub(crate) confirmed_at: Option<Instant>,
}

impl DbInfo {
    /// The facts of the SQLite database `name`, prepared by `prepare_database`, with counters
    /// carried over from an earlier registration or new.
    pub(crate) fn new(
        name: DbName,
        prepared: PreparedDatabase,
        config: DbConfig,
        counters: Arc<DbCounters>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            path: prepared.path,
            file_id: Some(prepared.file_id),
            config,
            counters,
            corruption: Mutex::new(None),
            #[cfg(test)]
            before_open: BeforeOpen::default(),
        })
    }

    /// The facts of a database on a server, shown as `shown` (never with a password).
    #[cfg(feature = "postgres")]
    pub(crate) fn on_server(
        name: DbName,
        shown: PathBuf,
        config: DbConfig,
        counters: Arc<DbCounters>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            path: shown,
            file_id: None,
            config,
            counters,
            corruption: Mutex::new(None),
            #[cfg(test)]
            before_open: BeforeOpen::default(),
        })
    }

    /// `e`, an error SQLite gave on this database, as the registry's error naming it. A
    /// corruption error (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) is kept for health too: the
    /// health probe reads only the schema's page, and corruption anywhere else shows only
    /// in the errors the database's calls get.
    pub(crate) fn sqlite_error(&self, op: &'static str, e: rusqlite::Error) -> Error {
        let corrupt = extended_code(&e).is_some_and(is_corruption_code);
        let err = Error::sqlite(&self.name, op, e);
        if corrupt {
            let mut note = crate::sync::lock(&self.corruption);
            // Damage already confirmed stays confirmed: a call that meets it again keeps it
            // in memory, and is no reason to check the whole file at once (health checks
            // it again now and then, to see a repair). Not a confirmation of a note out of
            // memory: the file may have been repaired since, unseen.
            let confirmed_at = note
                .as_ref()
                .filter(|c| c.at.elapsed() < CORRUPTION_MEMORY)
                .and_then(|c| c.confirmed_at);
            *note = Some(Corruption {
                at: Instant::now(),
                error: err.to_string(),
                confirmed_at,
            });
        }
        err
    }

    /// The last corruption error a call got, if any.
    pub(crate) fn corruption(&self) -> Option<Corruption> {
        crate::sync::lock(&self.corruption).clone()
    }

    /// What health found of the corruption error noted at `at`: the file damaged (the note,
    /// whichever it is now, confirmed as of now) or sound (the note forgotten; a newer error
    /// that came meanwhile stays, unconfirmed, for a check of its own).
    pub(crate) fn checked_corruption(&self, at: Instant, damaged: bool) {
        let mut note = crate::sync::lock(&self.corruption);
        if damaged {
            if let Some(c) = note.as_mut() {
                c.confirmed_at = Some(Instant::now());
            }
        } else if note.as_ref().is_some_and(|c| c.at == at) {
            *note = None;
        } else if let Some(c) = note.as_mut() {
            c.confirmed_at = None;
        }
    }

    /// `Err` when the file at the path is not the one registered: gone, or another file. An
    /// error other than "not found" proves nothing and passes.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] with [`OpenCause::FileChanged`].
    pub(crate) fn check_file(&self) -> Result<()> {
        let Some(file_id) = self.file_id else {
            return Ok(());
        };
        match FileId::of(&self.path) {
            Ok(id) if id == file_id => Ok(()),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(Error::Open {
                db: self.name.clone(),
                path: self.path.clone(),
                cause: OpenCause::FileChanged,
                code: None,
                source: None,
            }),
        }
    }

    /// A connection on the registered file, not yet configured: callers apply
    /// `configure_connection` next, and nothing else before it.
    ///
    /// The file's identity is looked at once the file is open and before anything reads it
    /// (`sqlite3_open_v2` opens the file and reads its header, unlocked; the first read
    /// opens the `-wal` and `-shm` at the path, and `configure_connection`'s PRAGMAs already
    /// read the schema). A file renamed over the path before the open fails the look; one
    /// renamed over it after leaves the connection on the registered file, whose `-wal` is
    /// still the one at the path. Looked at before the open instead, a file renamed over
    /// the path in between would be opened and read with the registered file's `-wal`, and
    /// the close of that connection, the other file's last, would copy the registered
    /// file's commits into it and delete the `-wal`. A connection refused here never read,
    /// and its close touches no `-wal`.
    pub(crate) fn open_registered(&self) -> std::result::Result<rusqlite::Connection, OpenFailed> {
        #[cfg(test)]
        if let Some(hook) = crate::sync::lock(&self.before_open.0).clone() {
            hook();
        }
        let conn = open_file(&self.path).map_err(OpenFailed::Sqlite)?;
        self.check_file().map_err(OpenFailed::Moved)?;
        Ok(conn)
    }

    /// The engine: a SQLite file has a file identity, a database on a server none.
    pub(crate) fn backend(&self) -> Backend {
        match self.file_id {
            Some(_) => Backend::Sqlite,
            None => Backend::Postgres,
        }
    }

    /// The database's snapshot: its counters, file sizes, and `gauges` while it is open.
    pub(crate) fn snapshot(&self, gauges: Option<Gauges>) -> DbSnapshot {
        self.counters
            .snapshot(&self.name, self.backend(), &self.path, &self.config, gauges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_pool;

    fn corrupt() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".to_owned()),
        )
    }

    /// Bug caught: a check that found the file sound while a newer corruption error came
    /// (another file's, say) left that newer note with the old confirmation, so the next
    /// check that could not finish said "damaged" of a file last found sound.
    #[test]
    fn a_sound_check_unconfirms_a_newer_error() -> anyhow::Result<()> {
        let (_dir, pool) = test_pool("note_race", crate::config::DbConfig::default())?;
        let info = pool.info();
        let _ = info.sqlite_error("read", corrupt());
        let first = info.corruption().expect("noted");
        info.checked_corruption(first.at, true);
        std::thread::sleep(Duration::from_millis(2));
        // A newer error while the re-check runs, which then finds the file sound.
        let _ = info.sqlite_error("read", corrupt());
        info.checked_corruption(first.at, false);
        let note = info.corruption().expect("the newer error stays noted");
        assert!(note.at > first.at);
        assert_eq!(note.confirmed_at, None, "{note:?}");
        Ok(())
    }

    /// Bug caught: a confirmation carried over from a note already out of memory, so a new
    /// error's first check that could not finish said "damaged" of a file maybe repaired
    /// since, unseen.
    #[test]
    fn a_confirmation_out_of_memory_is_not_carried_over() -> anyhow::Result<()> {
        let (_dir, pool) = test_pool("note_expired", crate::config::DbConfig::default())?;
        let info = pool.info();
        let _ = info.sqlite_error("read", corrupt());
        let first = info.corruption().expect("noted");
        info.checked_corruption(first.at, true);
        {
            let mut note = crate::sync::lock(&info.corruption);
            let c = note.as_mut().expect("noted");
            let Some(long_ago) = c.at.checked_sub(CORRUPTION_MEMORY + Duration::from_secs(1))
            else {
                // The monotonic clock began less than that ago: nothing to age.
                return Ok(());
            };
            c.at = long_ago;
        }
        let _ = info.sqlite_error("read", corrupt());
        assert_eq!(info.corruption().expect("noted").confirmed_at, None);
        // Within memory, the confirmation carries over.
        info.checked_corruption(first.at, true);
        let _ = info.sqlite_error("read", corrupt());
        assert!(info.corruption().expect("noted").confirmed_at.is_some());
        Ok(())
    }
}
