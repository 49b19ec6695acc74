//! Direct connections, for a process without a shared registry: each one opened through
//! hive-db-core's own connection function (so it carries the same PRAGMAs as a pooled one),
//! at most `limit` at once behind a semaphore with a bounded wait, and counted.
//!
//! A connection given back clean (no open transaction, not while panicking) is kept for the
//! next checkout: reopening costs a WAL recovery and, when it was the last connection, a
//! checkpoint with its fsyncs at close, about 20 ms a transaction for a single thread.
//! Connections are opened only when none is idle and fewer than `limit` are in use, so at
//! most `limit` are ever open.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hive_db_core::rusqlite::Connection;
use hive_db_core::{DbConfig, DbName, open_connection};

use crate::error::{Error, Result};

/// Counters of the direct connections of one database, since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DirectStats {
    /// The most direct connections open at once (the semaphore's size).
    pub limit: u32,
    /// Connections opened so far.
    pub opened_total: u64,
    /// Connections open (checked out) now.
    pub in_use: u32,
    /// The most that were open at once.
    pub peak_in_use: u32,
    /// Checkouts that found every permit taken and had to wait.
    pub acquires_waited: u64,
    /// Checkouts that gave up after the bounded wait ([`Error::DirectTimeout`]).
    pub timeouts: u64,
    /// Connections that failed to open.
    pub open_errors: u64,
    /// Connections open and idle, kept for the next checkout.
    pub idle: u32,
    /// Connections closed instead of kept because they came back inside a transaction or
    /// while their thread panicked.
    pub closed_dirty: u64,
}

/// The semaphore and counters of one database's direct connections.
#[derive(Debug)]
pub(crate) struct DirectPool {
    name: DbName,
    path: PathBuf,
    config: DbConfig,
    limit: u32,
    acquire_timeout: Duration,
    in_use: Mutex<u32>,
    freed: Condvar,
    idle: Mutex<Vec<Connection>>,
    closed_dirty: AtomicU64,
    opened_total: AtomicU64,
    peak_in_use: AtomicU64,
    acquires_waited: AtomicU64,
    timeouts: AtomicU64,
    open_errors: AtomicU64,
}

/// Warnings about direct connections this process has logged: at most one.
static WARNED: AtomicBool = AtomicBool::new(false);
static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Logs, once per process, that direct connections are in use and why.
pub(crate) fn warn_once(reason: &str, path: &Path) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        WARNINGS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason,
            path = %path.display(),
            "EcoSystemiser uses direct SQLite connections, not the shared registry's pool"
        );
    }
}

/// How many direct-connection warnings this process has logged (0 or 1).
#[cfg(test)]
pub(crate) fn warnings_logged() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DirectPool {
    /// A semaphore of `limit` permits for the prepared file at `path`.
    pub(crate) fn new(
        name: DbName,
        path: PathBuf,
        config: DbConfig,
        limit: u32,
        acquire_timeout: Duration,
    ) -> Self {
        Self {
            name,
            path,
            config,
            limit: limit.max(1),
            acquire_timeout,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
            idle: Mutex::new(Vec::new()),
            closed_dirty: AtomicU64::new(0),
            opened_total: AtomicU64::new(0),
            peak_in_use: AtomicU64::new(0),
            acquires_waited: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            open_errors: AtomicU64::new(0),
        }
    }

    /// Takes a permit, waiting up to the acquire timeout, then takes an idle connection or
    /// opens one.
    pub(crate) fn checkout(self: &Arc<Self>) -> Result<DirectConnection> {
        let permit = self.acquire()?;
        let idle = lock(&self.idle).pop();
        if let Some(conn) = idle {
            return Ok(DirectConnection {
                conn: Some(conn),
                permit,
            });
        }
        match open_connection(&self.name, &self.path, &self.config) {
            Ok(conn) => {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                Ok(DirectConnection {
                    conn: Some(conn),
                    permit,
                })
            }
            Err(e) => {
                self.open_errors.fetch_add(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    fn acquire(self: &Arc<Self>) -> Result<Permit> {
        let start = Instant::now();
        let mut in_use = lock(&self.in_use);
        if *in_use >= self.limit {
            self.acquires_waited.fetch_add(1, Ordering::Relaxed);
            let (guard, timeout) = self
                .freed
                .wait_timeout_while(in_use, self.acquire_timeout, |n| *n >= self.limit)
                .unwrap_or_else(PoisonError::into_inner);
            in_use = guard;
            if timeout.timed_out() && *in_use >= self.limit {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(Error::DirectTimeout {
                    db: self.name.clone(),
                    waited: start.elapsed(),
                    in_use: *in_use,
                    limit: self.limit,
                });
            }
        }
        *in_use += 1;
        self.peak_in_use
            .fetch_max(u64::from(*in_use), Ordering::Relaxed);
        Ok(Permit {
            pool: Arc::clone(self),
        })
    }

    pub(crate) fn stats(&self) -> DirectStats {
        let in_use = *lock(&self.in_use);
        DirectStats {
            limit: self.limit,
            opened_total: self.opened_total.load(Ordering::Relaxed),
            in_use,
            peak_in_use: u32::try_from(self.peak_in_use.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX),
            acquires_waited: self.acquires_waited.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            open_errors: self.open_errors.load(Ordering::Relaxed),
            idle: u32::try_from(lock(&self.idle).len()).unwrap_or(u32::MAX),
            closed_dirty: self.closed_dirty.load(Ordering::Relaxed),
        }
    }
}

/// One permit of a [`DirectPool`]; dropping it frees the slot and wakes one waiter.
#[derive(Debug)]
struct Permit {
    pool: Arc<DirectPool>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_use = lock(&self.pool.in_use);
        *in_use = in_use.saturating_sub(1);
        drop(in_use);
        self.pool.freed.notify_one();
    }
}

/// A direct connection and its permit. Dropping it keeps the connection for the next
/// checkout when it is clean, closes it otherwise, then frees the permit (fields drop after
/// `drop` runs).
#[derive(Debug)]
pub(crate) struct DirectConnection {
    /// `Some` until dropped.
    conn: Option<Connection>,
    permit: Permit,
}

impl Drop for DirectConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let pool = &self.permit.pool;
        if conn.is_autocommit() && !std::thread::panicking() {
            lock(&pool.idle).push(conn);
        } else {
            pool.closed_dirty.fetch_add(1, Ordering::Relaxed);
            drop(conn);
        }
    }
}

impl Deref for DirectConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a direct connection is present until dropped")
    }
}

impl DerefMut for DirectConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a direct connection is present until dropped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the fallback warning logged on every open or call instead of once per
    /// process.
    #[test]
    fn the_warning_is_logged_once_per_process() {
        let dir = std::env::temp_dir();
        for _ in 0..5 {
            warn_once("test", &dir);
        }
        assert_eq!(warnings_logged(), 1);
    }
}
