//! One database's async side: its reader threads and its writer, with their settings; made
//! on the database's first async call and closed with the database.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

use crate::asynch::call::{ReadCall, WriteCall, panicked};
use crate::asynch::oneshot::DbFuture;
use crate::asynch::readers::Readers;
use crate::asynch::writer::Writer;
use crate::batch::WriteTx;
use crate::clock::deadline;
use crate::database::Database;
use crate::error::{Error, Result};

/// The settings of a database's async side (cargo feature `async`), given to
/// `Registry::async_handle_with`; a database's first async call without them starts it with
/// the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncConfig {
    /// Most reader threads, started as reads come. Default `None`: twice the CPUs this
    /// process may use. At most the database's `max_size`, whatever is asked for (a reader
    /// holds one connection while it reads, so more would only wait). Reads served from SQLite's cache are CPU
    /// work: more threads than that only take the CPUs from each other mid-read, which shows
    /// as a worse p99; fewer leave calls queued behind one another at high concurrency.
    pub reader_threads: Option<u32>,
    /// Most reads waiting for a reader thread; one more gets `Error::QueueFull`. Default
    /// 1024; at least 1, at most [`AsyncConfig::MAX_QUEUE`] (the queue's places are made
    /// up front).
    pub read_queue: usize,
    /// Most writes not started yet (queued in the writer lane); one more gets
    /// `Error::QueueFull`. Default 1024; at least 1, at most [`AsyncConfig::MAX_QUEUE`].
    pub write_queue: usize,
}

impl AsyncConfig {
    /// The largest `read_queue` and `write_queue`: 1,048,576 calls.
    pub const MAX_QUEUE: usize = 1 << 20;
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            reader_threads: None,
            read_queue: 1024,
            write_queue: 1024,
        }
    }
}

/// A database's reader threads and writer.
#[derive(Debug)]
pub(crate) struct AsyncDb {
    db: Arc<Database>,
    config: AsyncConfig,
    readers: Readers,
    writer: Writer,
}

/// Twice the CPUs this process may use (4 when that is unknown), at most `max_size`.
fn default_reader_threads(max_size: u32) -> u32 {
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    u32::try_from(cpus.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .min(max_size)
}

impl AsyncDb {
    /// Starts `db`'s writer thread (reader threads start as reads come).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero queue or thread count or a queue over
    /// [`AsyncConfig::MAX_QUEUE`], [`Error::Io`] when the writer thread cannot start.
    pub(crate) fn start(db: Arc<Database>, config: AsyncConfig) -> Result<Self> {
        let info = db.info();
        let threads = config
            .reader_threads
            .unwrap_or_else(|| default_reader_threads(info.config.max_size));
        if threads == 0 || config.read_queue == 0 || config.write_queue == 0 {
            return Err(Error::InvalidConfig {
                db: info.name.clone(),
                reason: "async reader_threads, read_queue and write_queue must be at least 1"
                    .to_owned(),
            });
        }
        if config.read_queue.max(config.write_queue) > AsyncConfig::MAX_QUEUE {
            return Err(Error::InvalidConfig {
                db: info.name.clone(),
                reason: format!(
                    "async read_queue and write_queue must be at most {} (got {} and {})",
                    AsyncConfig::MAX_QUEUE,
                    config.read_queue,
                    config.write_queue
                ),
            });
        }
        // A reader holds a connection while it reads: more threads than connections would
        // only wait for the pool.
        let threads = threads.min(info.config.max_size);
        let readers = Readers::new(Arc::clone(&db), threads as usize, config.read_queue);
        let writer = Writer::start(Arc::clone(&db), config.write_queue)?;
        Ok(Self {
            db,
            config,
            readers,
            writer,
        })
    }

    pub(crate) fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub(crate) fn config(&self) -> &AsyncConfig {
        &self.config
    }

    /// Queues `f` for a reader thread.
    pub(crate) fn read<T, E, F>(&self, site: &'static Location<'static>, f: F) -> DbFuture<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let info = self.db.info();
        let (future, reply) = DbFuture::new(&info.name, "read", &info.counters, None);
        let start = Instant::now();
        let deadline = deadline(start, info.config.connection_timeout);
        let call = ReadCall {
            f,
            reply,
            site,
            start,
            deadline,
        };
        match self.readers.submit(Box::new(call)) {
            Ok(()) => future,
            Err(err) => DbFuture::ready(Err(err.into())),
        }
    }

    /// Runs `f` on this thread if a connection is idle now, else queues it for a reader
    /// thread.
    pub(crate) fn read_inline<T, E, F>(
        &self,
        site: &'static Location<'static>,
        f: F,
    ) -> DbFuture<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        match catch_unwind(AssertUnwindSafe(|| self.db.read_if_idle(site, f))) {
            Ok(Ok(result)) => DbFuture::ready(result),
            Ok(Err(f)) => self.read(site, f),
            Err(panic) => DbFuture::ready(Err(panicked(&self.db.info().name, "read", &*panic))),
        }
    }

    /// Queues `f` for the writer lane, taking its place there now.
    pub(crate) fn write<T, E, F>(&self, site: &'static Location<'static>, f: F) -> DbFuture<T, E>
    where
        F: FnOnce(&WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let info = self.db.info();
        let watcher = Some(self.writer.thread().clone());
        let (future, reply) = DbFuture::new(&info.name, "write", &info.counters, watcher);
        match self.writer.submit(Box::new(WriteCall { f, reply, site })) {
            Ok(()) => future,
            Err(err) => DbFuture::ready(Err(err.into())),
        }
    }

    /// Refuses new calls and fails the queued ones with `Error::Closed`; the threads end
    /// once their running calls are done.
    pub(crate) fn close(&self) {
        self.readers.close();
        self.writer.close();
    }
}

impl Drop for AsyncDb {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::default_reader_threads;

    /// Bug caught: a default of more reader threads than the pool has connections (they
    /// would only wait for one), or than twice the CPUs (they would preempt each other).
    #[test]
    fn default_reader_threads_follow_the_cpus_within_the_pool() {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let twice = u32::try_from(cpus * 2).unwrap_or(u32::MAX);
        assert_eq!(default_reader_threads(1), 1);
        assert_eq!(default_reader_threads(u32::MAX), twice);
        assert_eq!(default_reader_threads(twice + 1), twice);
    }
}
