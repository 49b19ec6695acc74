//! Our r2d2 connection manager: wraps `SqliteConnectionManager` so that connecting never
//! panics outward, connect errors keep their cause, and a connection that is dirty (returned
//! while panicking, inside a transaction, after a failed rollback, or after its pool closed)
//! is discarded instead of pooled.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::config::DbConfig;
use crate::connection::{classify, configure_connection, open_flags, permanent_cause};
use crate::error::{Error, OpenCause, Result, extended_code};
use crate::name::DbName;
use crate::stats::{CloseReason, DbCounters};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last error seen while opening a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectError {
    pub(crate) at: Instant,
    pub(crate) message: String,
    pub(crate) cause: Option<OpenCause>,
    pub(crate) code: Option<i32>,
}

/// The clock origin of checkout times stored as integers.
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// `at` as nanoseconds after [`EPOCH`], plus one so that zero can mean "not checked out".
#[inline]
pub(crate) fn stamp(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

/// A clock the maintenance threads advance every [`TICK`], as a [`stamp`]: a checkout reads
/// it with one load instead of a clock read (about 35 ns here). It serves validation windows
/// and leak ages, where a few milliseconds do not matter.
static COARSE_NOW: AtomicU64 = AtomicU64::new(0);

/// How often [`COARSE_NOW`] advances.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Advances the coarse clock.
pub(crate) fn tick() {
    COARSE_NOW.store(stamp(Instant::now()), Relaxed);
}

/// The coarse clock's time, as a [`stamp`].
#[inline]
pub(crate) fn coarse_now() -> u64 {
    COARSE_NOW.load(Relaxed)
}

/// Time since the clock's origin, which the first `Registry` sets.
pub(crate) fn uptime() -> Duration {
    EPOCH.elapsed()
}

/// Sets the clock's origin, if it is not set yet.
pub(crate) fn start_clock() {
    Lazy::force(&EPOCH);
}

/// The instant a [`stamp`] stands for.
pub(crate) fn unstamp(stamp: u64) -> Instant {
    *EPOCH + Duration::from_nanos(stamp.saturating_sub(1))
}

/// A checkout still out, as `close` and the leak scanner see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkout {
    pub(crate) at: Instant,
    pub(crate) site: &'static Location<'static>,
}

/// One live connection's public face: what the leak scanner and `close` can see of it. The
/// owner writes it with plain atomic stores on checkout and return; the site sits behind a
/// mutex that is only taken when a connection is checked out from a new place.
#[derive(Debug, Default)]
pub(crate) struct ConnSlot {
    /// [`stamp`] of the current checkout; 0 while idle.
    checked_out_at: AtomicU64,
    /// The `checked_out_at` of the checkout last reported as a leak.
    leak_reported: AtomicU64,
    site: Mutex<Option<&'static Location<'static>>>,
}

impl ConnSlot {
    /// Publishes a checkout. `last_site` is the owner's copy of the site in the slot.
    #[inline]
    pub(crate) fn check_out(
        &self,
        at: u64,
        site: &'static Location<'static>,
        last_site: &mut Option<&'static Location<'static>>,
    ) {
        if !last_site.is_some_and(|s| std::ptr::eq(s, site)) {
            *lock(&self.site) = Some(site);
            *last_site = Some(site);
        }
        self.checked_out_at.store(at, Release);
    }

    /// Marks the connection returned; gives back the checkout if it had been reported leaked.
    #[inline]
    pub(crate) fn check_in(&self) -> Option<Checkout> {
        let at = self.checked_out_at.load(Relaxed);
        self.checked_out_at.store(0, Release);
        if at != 0 && self.leak_reported.load(Relaxed) == at {
            self.current_site().map(|site| Checkout {
                at: unstamp(at),
                site,
            })
        } else {
            None
        }
    }

    fn current_site(&self) -> Option<&'static Location<'static>> {
        *lock(&self.site)
    }

    /// The checkout in progress, if any.
    pub(crate) fn checkout(&self) -> Option<Checkout> {
        let at = self.checked_out_at.load(Acquire);
        (at != 0)
            .then(|| self.current_site())
            .flatten()
            .map(|site| Checkout {
                at: unstamp(at),
                site,
            })
    }

    /// Marks the checkout in progress as reported, if it has been out at least `threshold` and
    /// was not reported yet; returns it then.
    pub(crate) fn report_leak(&self, now: Instant, threshold: Duration) -> Option<Checkout> {
        let at = self.checked_out_at.load(Acquire);
        if at == 0 || now.saturating_duration_since(unstamp(at)) < threshold {
            return None;
        }
        let previous = self.leak_reported.swap(at, Relaxed);
        if previous == at {
            return None;
        }
        self.current_site().map(|site| Checkout {
            at: unstamp(at),
            site,
        })
    }
}

/// Test-only fault injection into `connect`.
#[cfg(test)]
pub(crate) type ConnectHook = Arc<dyn Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync>;

/// State one database's pool shares with its manager, its connections and the registry.
pub(crate) struct PoolShared {
    pub(crate) name: DbName,
    pub(crate) path: PathBuf,
    pub(crate) config: DbConfig,
    pub(crate) counters: Arc<DbCounters>,
    pub(crate) closed: AtomicBool,
    /// Connections being opened right now; `close` waits for them too.
    pub(crate) connecting: AtomicU32,
    /// When each caller now waiting for a connection started to wait (slow path only).
    pub(crate) waiters: Mutex<Vec<Instant>>,
    pub(crate) last_error: Mutex<Option<ConnectError>>,
    /// Every live connection of this pool, checked out or idle.
    pub(crate) slots: Mutex<Vec<Arc<ConnSlot>>>,
    /// Signalled when a connection closes while the pool is closing.
    pub(crate) slots_changed: Condvar,
    /// Where the two-pass automatic checkpoint stands (see `pool::checkpoint_after_commit`).
    pub(crate) checkpoint_step: AtomicU8,
    /// Guards the end of a first pass, so that a writer waiting for it misses no signal.
    pub(crate) checkpoint_lock: Mutex<()>,
    /// Signalled when a first pass ends.
    pub(crate) checkpoint_done: Condvar,
    /// A writer waited for the current first pass until its timeout: no other waits for it.
    pub(crate) checkpoint_overdue: AtomicBool,
    #[cfg(test)]
    pub(crate) connect_hook: Mutex<Option<ConnectHook>>,
    /// Runs at the start of each background checkpoint job (tests slow it down).
    #[cfg(test)]
    pub(crate) first_pass_hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Writers that waited for a background checkpoint pass.
    #[cfg(test)]
    pub(crate) first_pass_waits: AtomicU32,
}

/// Where a database's two-pass automatic checkpoint stands. Moves only forward: `Idle` to
/// `FirstPass` to `CatchUp` and back to `Idle`. Every move but the one out of `FirstPass` is
/// made inside the writer lane, and that one only by the job running the first pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CheckpointStep {
    Idle = 0,
    FirstPass = 1,
    CatchUp = 2,
}

impl CheckpointStep {
    pub(crate) fn load(cell: &AtomicU8) -> Self {
        match cell.load(Acquire) {
            1 => Self::FirstPass,
            2 => Self::CatchUp,
            _ => Self::Idle,
        }
    }

    pub(crate) fn store(self, cell: &AtomicU8) {
        cell.store(self as u8, Release);
    }
}

impl std::fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolShared")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("closed", &self.closed.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl PoolShared {
    pub(crate) fn new(
        name: DbName,
        path: PathBuf,
        config: DbConfig,
        counters: Arc<DbCounters>,
    ) -> Self {
        Self {
            name,
            path,
            config,
            counters,
            closed: AtomicBool::new(false),
            connecting: AtomicU32::new(0),
            waiters: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            slots: Mutex::new(Vec::new()),
            slots_changed: Condvar::new(),
            checkpoint_step: AtomicU8::new(CheckpointStep::Idle as u8),
            checkpoint_lock: Mutex::new(()),
            checkpoint_done: Condvar::new(),
            checkpoint_overdue: AtomicBool::new(false),
            #[cfg(test)]
            connect_hook: Mutex::new(None),
            #[cfg(test)]
            first_pass_hook: Mutex::new(None),
            #[cfg(test)]
            first_pass_waits: AtomicU32::new(0),
        }
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    fn record_connect_error(&self, err: &Error, cause: Option<OpenCause>, code: Option<i32>) {
        self.counters.connect_errors.fetch_add(1, Relaxed);
        tracing::warn!(db = %self.name, error = %error_chain(err), "cannot open a connection");
        *lock(&self.last_error) = Some(ConnectError {
            at: Instant::now(),
            message: error_chain(err),
            cause,
            code,
        });
    }
}

/// `err` and its sources, joined with ": ".
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A pooled SQLite connection with what the pool needs to know about it.
pub(crate) struct HiveConn {
    /// Boxed: r2d2 moves its connections by value on every checkout and return, and a
    /// `rusqlite::Connection` is about 200 bytes.
    pub(crate) conn: Box<Connection>,
    /// When it was last checked out (or opened), as a [`stamp`]: validation is skipped if
    /// this is recent.
    pub(crate) last_used: u64,
    /// Set when it must not go back to the pool.
    pub(crate) discard: Option<CloseReason>,
    pub(crate) slot: Arc<ConnSlot>,
    /// The site last written into `slot` (owner's copy, to skip rewriting the same one).
    pub(crate) last_site: Option<&'static Location<'static>>,
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) id: u64,
    born: Instant,
}

impl std::fmt::Debug for HiveConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveConn")
            .field("db", &self.shared.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for HiveConn {
    fn drop(&mut self) {
        let shared = &self.shared;
        let reason = self.discard.unwrap_or_else(|| {
            if shared.is_closed() {
                CloseReason::PoolClosed
            } else if shared
                .config
                .max_lifetime
                .is_some_and(|l| self.born.elapsed() >= l)
            {
                CloseReason::Lifetime
            } else {
                CloseReason::IdleTimeout
            }
        });
        shared.counters.count_close(reason);
        tracing::debug!(db = %shared.name, id = self.id, ?reason, "connection closed");
        let mut slots = lock(&shared.slots);
        slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
        drop(slots);
        shared.slots_changed.notify_all();
    }
}

/// The r2d2 manager for one database.
pub(crate) struct HiveManager {
    inner: SqliteConnectionManager,
    shared: Arc<PoolShared>,
}

impl std::fmt::Debug for HiveManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveManager")
            .field("db", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl HiveManager {
    pub(crate) fn new(shared: Arc<PoolShared>) -> Self {
        let config = shared.config.clone();
        #[cfg(test)]
        let hook_shared = Arc::clone(&shared);
        let inner = SqliteConnectionManager::file(&shared.path)
            .with_flags(open_flags())
            .with_init(move |conn| {
                #[cfg(test)]
                if let Some(hook) = lock(&hook_shared.connect_hook).clone() {
                    hook(conn)?;
                }
                configure_connection(conn, &config)
            });
        Self { inner, shared }
    }
}

impl r2d2::ManageConnection for HiveManager {
    type Connection = HiveConn;
    type Error = Error;

    fn connect(&self) -> Result<HiveConn> {
        let shared = &self.shared;
        // SeqCst pairs with `close`: either it sees us connecting, or we see it closed.
        shared.connecting.fetch_add(1, SeqCst);
        let _connecting = crate::pool::scopeguard(|| {
            shared.connecting.fetch_sub(1, SeqCst);
            shared.slots_changed.notify_all();
        });
        let closed = || Error::Closed {
            db: shared.name.clone(),
        };
        if shared.closed.load(SeqCst) {
            return Err(closed());
        }
        // A panic escaping into r2d2's worker would leak the pending slot for good.
        match catch_unwind(AssertUnwindSafe(|| self.inner.connect())) {
            Ok(Ok(_)) if shared.closed.load(SeqCst) => Err(closed()),
            Ok(Ok(conn)) => {
                let id = NEXT_CONN_ID.fetch_add(1, Relaxed);
                let slot = Arc::new(ConnSlot::default());
                lock(&shared.slots).push(Arc::clone(&slot));
                shared.counters.created.fetch_add(1, Relaxed);
                *lock(&shared.last_error) = None;
                let now = Instant::now();
                tracing::debug!(db = %shared.name, id, "connection opened");
                Ok(HiveConn {
                    conn: Box::new(conn),
                    last_used: stamp(now),
                    discard: None,
                    slot,
                    last_site: None,
                    shared: Arc::clone(shared),
                    id,
                    born: now,
                })
            }
            Ok(Err(e)) => {
                let (cause, code) = (permanent_cause(&e), extended_code(&e));
                let err = classify(&shared.name, &shared.path, "open connection", e);
                shared.record_connect_error(&err, cause, code);
                Err(err)
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                let err = Error::ConnectPanicked {
                    db: shared.name.clone(),
                    message,
                };
                shared.record_connect_error(&err, None, None);
                Err(err)
            }
        }
    }

    fn is_valid(&self, conn: &mut HiveConn) -> Result<()> {
        validate(&conn.conn).map_err(|e| Error::sqlite(&self.shared.name, "validate", e))
    }

    fn has_broken(&self, conn: &mut HiveConn) -> bool {
        if conn.discard.is_some() {
            return true;
        }
        let shared = &self.shared;
        if std::thread::panicking() {
            tracing::warn!(db = %shared.name, id = conn.id, "connection returned by a panicking thread; discarded");
        } else if !conn.conn.is_autocommit() {
            tracing::warn!(
                db = %shared.name,
                id = conn.id,
                "connection returned inside an open transaction; its uncommitted work is rolled back and the connection discarded"
            );
        } else if shared.is_closed() {
            conn.discard = Some(CloseReason::PoolClosed);
            return true;
        } else {
            return false;
        }
        conn.discard = Some(CloseReason::Broken);
        true
    }
}

/// The check a connection idle for longer than `validate_after_idle` passes before checkout.
pub(crate) fn validate(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
        .map(drop)
}

/// The time from `since` to `now`, zero if `now` is earlier.
#[inline]
pub(crate) fn age(since: Instant, now: Instant) -> Duration {
    now.saturating_duration_since(since)
}
#[cfg(test)]
mod size_tests {
    /// Bug caught: the connection stored inline again. r2d2 moves every pooled connection by
    /// value on each checkout and return, and profiles showed those copies (over 300 bytes
    /// with the connection inline) in the point-read path.
    #[test]
    fn a_pooled_connection_is_cheap_to_move() {
        let pooled = std::mem::size_of::<r2d2::PooledConnection<super::HiveManager>>();
        assert!(pooled <= 192, "r2d2's pooled connection is {pooled} bytes");
        assert!(std::mem::size_of::<super::HiveConn>() <= 96);
    }
}
