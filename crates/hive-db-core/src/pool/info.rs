//! The facts of one registered database (its name, file, file identity, settings and
//! counters), made once at `register` and shared by its pool's parts, its writer side and the
//! registry's entry, which keeps them after close so the counters carry on.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::DbConfig;
use crate::error::{Error, OpenCause, Result};
use crate::name::DbName;
use crate::open::{FileId, PreparedDatabase};
use crate::stats::{DbCounters, DbSnapshot, Gauges};

/// The facts of one registered database. Immutable; the counters inside are atomics.
#[derive(Debug)]
pub(crate) struct DbInfo {
    pub(crate) name: DbName,
    /// The canonical path registered.
    pub(crate) path: PathBuf,
    /// The file registered at `path`.
    pub(crate) file_id: FileId,
    pub(crate) config: DbConfig,
    pub(crate) counters: Arc<DbCounters>,
}

impl DbInfo {
    /// The facts of `name`, prepared by `prepare_database`, with counters carried over from
    /// an earlier registration or new.
    pub(crate) fn new(
        name: DbName,
        prepared: PreparedDatabase,
        config: DbConfig,
        counters: Arc<DbCounters>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            path: prepared.path,
            file_id: prepared.file_id,
            config,
            counters,
        })
    }

    /// `Err` when the file at the path is not the one registered: gone, or another file. An
    /// error other than "not found" proves nothing and passes.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] with [`OpenCause::FileChanged`].
    pub(crate) fn check_file(&self) -> Result<()> {
        match FileId::of(&self.path) {
            Ok(id) if id == self.file_id => Ok(()),
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

    /// True when a file other than the one registered is at the path.
    pub(crate) fn another_file_at_path(&self) -> bool {
        FileId::of(&self.path).is_ok_and(|id| id != self.file_id)
    }

    /// The database's snapshot: its counters, file sizes, and `gauges` while it is open.
    pub(crate) fn snapshot(&self, gauges: Option<Gauges>) -> DbSnapshot {
        self.counters
            .snapshot(&self.name, &self.path, &self.config, gauges)
    }
}
