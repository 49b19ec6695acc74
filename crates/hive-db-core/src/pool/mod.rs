//! One database's connections: an r2d2 pool with our manager, the checkout fast and slow
//! paths with validation after idle, close, and the pool's gauges. It knows nothing of
//! writes; the writer lane and group commit sit above it, in `database`.
//!
//! - `bag`: the fast path's idle connections, each in a lock-free place of its own, and the
//!   [`Lease`] that returns one there;
//! - `checkout`: the fast and slow checkout paths, validation after idle;
//! - `shared`: the state the pool, its manager and its connections share, behind methods;
//! - `manager`: the r2d2 manager (connect, the dirty-return checks);
//! - `engine`: what a pool needs of an engine beyond r2d2's manager;
//! - `session`: the authorizer that marks a connection whose session a borrower changed;
//! - `guard`: [`PooledConnection`], the public guard;
//! - `slot`: each connection's checkout record (`ConnSlot`), which `close` and the leak
//!   scanner read;
//! - `leak`: the leak scanner;
//! - `maintenance`: the threads every pool shares.
//!
//! [`Pool`] is generic over its r2d2 manager ([`Engine`]): the SQLite manager here, and the
//! PostgreSQL one of the `postgres` feature (`crate::pg`), share checkout, lifetimes,
//! validation after idle, leak reports, gauges and close.

mod bag;
mod checkout;
mod engine;
mod guard;
mod info;
mod leak;
mod maintenance;
mod manager;
mod session;
mod shared;
mod slot;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use scheduled_thread_pool::JobHandle;

pub(crate) use bag::Lease;
pub(crate) use engine::Engine;
pub use guard::PooledConnection;
pub(crate) use info::{CORRUPTION_MEMORY, DbInfo, OpenFailed};
pub(crate) use maintenance::{in_background, on_tick};
pub(crate) use manager::Closing;
#[cfg(feature = "postgres")]
pub(crate) use manager::HiveConn;
#[cfg(feature = "postgres")]
pub(crate) use manager::connect_guarded;
pub(crate) use shared::PoolShared;

use crate::clock::deadline;
use crate::error::Result;
use crate::name::DbName;
use crate::stats::{DbSnapshot, Gauges, PoolGauges};
use manager::HiveManager;

/// How long `close` sleeps at most between looks at the connections still out.
const CLOSE_SLICE: Duration = Duration::from_millis(10);

/// What `close` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CloseReport {
    /// The database.
    pub db: DbName,
    /// How long close waited for borrowed connections.
    pub waited: Duration,
    /// Connections still checked out at the deadline. Each is closed when it comes back.
    pub still_out: Vec<OutstandingConnection>,
}

/// A connection still borrowed when its pool closed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OutstandingConnection {
    /// How long it had been held.
    pub held: Duration,
    /// Where it was checked out (`file:line:column`).
    pub checked_out_at: String,
}

/// One database's pool of connections.
pub(crate) struct Pool<M: Engine = HiveManager> {
    shared: Arc<PoolShared>,
    pool: r2d2::Pool<M>,
    /// The idle connections the fast path takes; r2d2 has the rest.
    bag: Arc<bag::Bag<M>>,
    sweep_job: Option<JobHandle>,
    /// The shorter of `validate_after_idle` and `idle_timeout` in nanoseconds, compared on
    /// every checkout: a connection idle this long is looked at before it is handed out.
    look_after_idle_ns: u64,
    leak_job: Option<JobHandle>,
    /// The place of the connection the last write transaction began on, which the next one
    /// tries first (`Pool::try_checkout_writer`): its page cache is the one the writes keep
    /// warm. A hint only: any place, taken or empty, is a valid value.
    writer_place: AtomicUsize,
}

impl<M: Engine> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("db", &self.shared.info().name)
            .field("path", &self.shared.info().path)
            .finish_non_exhaustive()
    }
}

impl<M: Engine> Drop for Pool<M> {
    fn drop(&mut self) {
        // Connections still out are closed when they come back, never pooled again.
        self.shared.mark_closed();
        self.bag.drain();
        for job in [self.leak_job.take(), self.sweep_job.take()]
            .into_iter()
            .flatten()
        {
            job.cancel();
        }
    }
}

impl Pool {
    /// Builds the pool for the file at `path`, which `prepare_database` has prepared, and
    /// waits for `min_idle` connections.
    ///
    /// # Errors
    ///
    /// A permanent connect error at once; [`Error::Timeout`](crate::error::Error::Timeout)
    /// if `min_idle` connections are not open within `connection_timeout`.
    pub(crate) fn open(info: Arc<DbInfo>) -> Result<Self> {
        let shared = Arc::new(PoolShared::new(info));
        let pool = Self::build(HiveManager::new(Arc::clone(&shared)), shared);
        pool.wait_for_min_idle()?;
        Ok(pool)
    }
}

impl<M: Engine> Pool<M> {
    /// The pool of `manager`, which shares `shared`; it starts opening `min_idle`
    /// connections in the background.
    pub(crate) fn build(manager: M, shared: Arc<PoolShared>) -> Self {
        let config = &shared.info().config;
        let pool = r2d2::Pool::builder()
            .max_size(config.max_size)
            // `min_idle` and `idle_timeout` are the bag's (see `bag.rs`): r2d2 would count
            // the connections idle in the bag as busy.
            .min_idle(Some(0))
            .idle_timeout(None)
            // Validation is ours: only after `validate_after_idle` (see `accept`).
            .test_on_check_out(false)
            .max_lifetime(config.max_lifetime)
            // r2d2 uses it only to cap the pause between connect attempts (its `get` and
            // `build` are not used: our waits have their own deadlines).
            .connection_timeout(M::RECONNECT_CAP.unwrap_or(config.connection_timeout))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .thread_pool(match M::OWN_CONNECT_THREADS {
                0 => maintenance::threads(),
                n => maintenance::own_threads(n),
            })
            .build_unchecked(manager);
        let leak_job = config
            .leak_threshold
            .map(|threshold| leak::spawn_scanner(Arc::downgrade(&shared), threshold));
        let look_after_idle_ns = u64::try_from(
            config
                .idle_timeout
                .map_or(config.validate_after_idle, |t| {
                    t.min(config.validate_after_idle)
                })
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        // Each call starts a connect in the background (r2d2's own `min_idle` is 0), or takes
        // one that has opened meanwhile, held until all are started so it is not taken twice.
        let started: Vec<_> = (0..config.min_idle)
            .filter_map(|_| pool.get_timeout(Duration::ZERO).ok())
            .collect();
        drop(started);
        let bag = Arc::new(bag::Bag::new(&shared, pool.clone()));
        let sweep_job = Some(bag::spawn_sweeper(Arc::downgrade(&bag)));
        Self {
            shared,
            pool,
            bag,
            sweep_job,
            look_after_idle_ns,
            writer_place: AtomicUsize::new(0),
            leak_job,
        }
    }

    /// Waits until the `min_idle` connections `build` started are open; a permanent connect
    /// error fails at once.
    pub(crate) fn wait_for_min_idle(&self) -> Result<()> {
        let start = Instant::now();
        let timeout = self.info().config.connection_timeout;
        let deadline = deadline(start, timeout);
        loop {
            if self.pool.state().connections >= self.info().config.min_idle {
                return Ok(());
            }
            if let Some(err) = self.permanent_connect_error(start) {
                return Err(err);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(timeout));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The database's facts.
    #[inline]
    pub(crate) fn info(&self) -> &Arc<DbInfo> {
        self.shared.info()
    }

    /// The state it shares with its manager and connections.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<PoolShared> {
        &self.shared
    }

    /// This pool, as a number (see [`PooledConnection::pool_key`]).
    #[inline]
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.shared).addr()
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Refuses new checkouts at once; see [`Pool::close`] for the rest.
    pub(crate) fn mark_closed(&self) {
        self.shared.mark_closed();
    }

    /// The state of the connections now; `None` once closed.
    pub(crate) fn gauges(&self) -> Option<PoolGauges> {
        if self.is_closed() {
            return None;
        }
        // r2d2 counts the connections idle in the bag as checked out: idle is what is not.
        let live = self.pool.state().connections;
        let (waiting, maxwait) = self.shared.waiters();
        Some(PoolGauges {
            live,
            idle: live.saturating_sub(self.shared.checked_out()),
            waiting,
            maxwait,
            held_past_leak_threshold: self.shared.held_past_threshold(),
        })
    }

    /// The snapshot of this pool's database, with `writer_queue` writers queued.
    pub(crate) fn snapshot(&self, writer_queue: u32) -> DbSnapshot {
        let gauges = self.gauges().map(|pool| Gauges { pool, writer_queue });
        self.info().snapshot(gauges)
    }

    /// Refuses new checkouts, waits until `deadline` for borrowed connections, closes every
    /// connection that is back, and reports those still out.
    pub(crate) fn close(&self, deadline: Instant) -> CloseReport {
        let shared = &*self.shared;
        shared.mark_closed();
        let start = Instant::now();
        loop {
            self.bag.drain();
            // Idle connections (and any a late connect added) are closed as they are taken.
            // At most one pass over the pool each time round: were a taken connection to come
            // back idle (the pool not marked closed), the deadline must still end this loop.
            for _ in 0..=shared.info().config.max_size {
                let Some(conn) = self.pool.try_get() else {
                    break;
                };
                drop(conn);
            }
            let Some((now, out)) = shared.settled(deadline, CLOSE_SLICE) else {
                continue;
            };
            let still_out: Vec<_> = out
                .iter()
                .map(|c| OutstandingConnection {
                    held: now.saturating_duration_since(c.at),
                    checked_out_at: c.site.to_string(),
                })
                .collect();
            for out in &still_out {
                tracing::warn!(db = %shared.info().name, held = ?out.held, site = %out.checked_out_at,
                    "connection still borrowed when its pool closed; it will be closed when returned");
            }
            tracing::info!(db = %shared.info().name, still_out = still_out.len(), "pool closed");
            return CloseReport {
                db: shared.info().name.clone(),
                waited: now.saturating_duration_since(start),
                still_out,
            };
        }
    }
}

/// A pool on a new file in a temporary folder (for the unit tests of the pool's modules).
#[cfg(test)]
fn test_pool(
    name: &str,
    config: crate::config::DbConfig,
) -> anyhow::Result<(tempfile::TempDir, Pool)> {
    let dir = tempfile::tempdir()?;
    let name = DbName::new(name)?;
    let config = crate::config::DbConfig {
        create_if_missing: true,
        ..config
    };
    let prepared = crate::open::prepare_database(&name, &dir.path().join("db.sqlite"), &config)?;
    let pool = Pool::open(DbInfo::new(name, prepared, config, Arc::default()))?;
    Ok((dir, pool))
}
