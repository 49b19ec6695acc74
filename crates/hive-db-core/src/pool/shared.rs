//! The state one database's pool shares with its manager, its connections and the leak
//! scanner. Fields are private: each rule about them (the memory ordering of `closed`, the
//! list of waiters) lives in one method here.

use std::sync::atomic::{
    AtomicBool, AtomicU32,
    Ordering::{Relaxed, SeqCst},
    fence,
};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::info::DbInfo;
use super::slot::{Checkout, ConnSlot};
use crate::clock::{AtomicStamp, Stamp};
use crate::error::{OpenCause, Refusal};
use crate::sync::{ScopeGuard, lock, wait_timeout};

/// The last error seen while opening a connection.
#[derive(Debug, Clone)]
pub(super) struct ConnectError {
    pub(super) at: Instant,
    /// What went wrong, without the database's name or path (the error that carries it on
    /// names them): SQLite's message, or the panic's.
    pub(super) detail: String,
    /// Set when waiting cannot fix it.
    pub(super) cause: Option<Permanent>,
    pub(super) code: Option<i32>,
}

/// A connect error that waiting cannot fix.
#[derive(Debug, Clone)]
pub(crate) enum Permanent {
    /// The file cannot be opened as registered.
    File(OpenCause),
    /// A server refused us, with the SQLSTATE it sent.
    Server(Refusal, Option<String>),
}

/// Test-only fault injection into `connect`.
#[cfg(test)]
pub(super) type ConnectHook =
    Arc<dyn Fn(&mut rusqlite::Connection) -> rusqlite::Result<()> + Send + Sync>;

/// State one database's pool shares with its manager, its connections and the leak scanner.
pub(crate) struct PoolShared {
    info: Arc<DbInfo>,
    /// Set once, by [`PoolShared::mark_closed`]; every access is `SeqCst` (see there).
    closed: AtomicBool,
    /// Connections being opened right now; `close` waits for them too.
    connecting: AtomicU32,
    /// Connections checked out for longer than the leak threshold, as of the leak scanner's
    /// last pass.
    held_past_threshold: AtomicU32,
    /// When each caller now waiting for a connection began to wait (slow path only).
    waiters: Mutex<Vec<Instant>>,
    /// How many there are, read by every return (see `bag.rs` for its ordering).
    waiting_now: AtomicU32,
    last_error: Mutex<Option<ConnectError>>,
    /// Every live connection of this pool, checked out or idle.
    slots: Mutex<Vec<Arc<ConnSlot>>>,
    /// Signalled when a connection closes or a connect ends, for `close`.
    slots_changed: Condvar,
    /// Connections last known good before this moment must be checked before their next
    /// checkout (see [`PoolShared::suspect_all`]); `None` until something made them suspect.
    suspect_since: AtomicStamp,
    #[cfg(test)]
    connect_hook: Mutex<Option<ConnectHook>>,
}

impl std::fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolShared")
            .field("db", &self.info.name)
            .field("path", &self.info.path)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl PoolShared {
    pub(crate) fn new(info: Arc<DbInfo>) -> Self {
        Self {
            info,
            closed: AtomicBool::new(false),
            connecting: AtomicU32::new(0),
            held_past_threshold: AtomicU32::new(0),
            waiters: Mutex::new(Vec::new()),
            waiting_now: AtomicU32::new(0),
            last_error: Mutex::new(None),
            slots: Mutex::new(Vec::new()),
            slots_changed: Condvar::new(),
            suspect_since: AtomicStamp::default(),
            #[cfg(test)]
            connect_hook: Mutex::new(None),
        }
    }

    /// The database's facts.
    #[inline]
    pub(crate) fn info(&self) -> &Arc<DbInfo> {
        &self.info
    }

    /// Connections held past the leak threshold, as the leak scanner last counted them.
    pub(super) fn held_past_threshold(&self) -> u32 {
        self.held_past_threshold.load(Relaxed)
    }

    pub(super) fn set_held_past_threshold(&self, n: u32) {
        self.held_past_threshold.store(n, Relaxed);
    }

    /// Whether the pool is closed. `SeqCst`, as every access to `closed`: `connect` counts
    /// itself in `connecting` and then checks `closed`, while `close` sets `closed` and then
    /// reads `connecting`; with both sides sequentially consistent, at least one of them sees
    /// the other, so no connection opened during a close outlives it. On x86 a `SeqCst` load
    /// costs what a `Relaxed` one does.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Refuses new checkouts from now on; connections still out are closed when returned.
    pub(super) fn mark_closed(&self) {
        self.closed.store(true, SeqCst);
    }

    /// Makes every connection opened or checked before now suspect: its next checkout checks
    /// it with a round trip first, and closes it if that fails. For an error that says the
    /// server itself may be gone (a restart, a failover), when the other connections to it
    /// are likely dead too.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn suspect_all(&self) {
        self.suspect_since
            .store(Some(Stamp::of(Instant::now())), Relaxed);
    }

    /// Since when connections last known good earlier are suspect, if ever.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn suspect_since(&self) -> Option<Stamp> {
        self.suspect_since.load(Relaxed)
    }

    /// Counts a connect in progress until the guard drops (see [`PoolShared::is_closed`]).
    pub(super) fn connecting(&self) -> ScopeGuard<impl FnOnce() + '_> {
        self.connecting.fetch_add(1, SeqCst);
        crate::sync::defer(move || {
            self.connecting.fetch_sub(1, SeqCst);
            self.slots_changed.notify_all();
        })
    }

    /// Joins the callers waiting for a connection, as one that began to wait at `since`,
    /// until the guard drops.
    /// Counted before the caller looks in the bag (see `bag.rs`).
    pub(super) fn waiting(&self, since: Instant) -> ScopeGuard<impl FnOnce() + '_> {
        lock(&self.waiters).push(since);
        self.waiting_now.fetch_add(1, SeqCst);
        fence(SeqCst);
        crate::sync::defer(move || {
            self.waiting_now.fetch_sub(1, SeqCst);
            let mut waiters = lock(&self.waiters);
            if let Some(i) = waiters.iter().position(|w| *w == since) {
                waiters.swap_remove(i);
            }
        })
    }

    /// Whether any caller waits for a connection now (see `bag.rs` for the ordering).
    #[inline]
    pub(super) fn has_waiters(&self) -> bool {
        self.waiting_now.load(SeqCst) > 0
    }

    /// Whether a connect is under way, or one failed in the last two seconds (r2d2 retries
    /// it by itself): the bag's top-up then waits.
    pub(super) fn connects_pending(&self) -> bool {
        self.connecting.load(SeqCst) > 0
            || self
                .last_connect_error()
                .is_some_and(|e| e.at.elapsed() < Duration::from_secs(2))
    }

    /// Callers waiting for a connection, and how long the oldest of them has waited.
    pub(super) fn waiters(&self) -> (u32, Duration) {
        let waiters = lock(&self.waiters);
        let oldest = waiters
            .iter()
            .min()
            .map_or(Duration::ZERO, Instant::elapsed);
        (u32::try_from(waiters.len()).unwrap_or(u32::MAX), oldest)
    }

    /// Records a failed connect: counted, logged with its whole chain, kept for the errors
    /// of callers that wait.
    pub(super) fn record_connect_error(
        &self,
        err: &crate::error::Error,
        detail: String,
        cause: Option<Permanent>,
        code: Option<i32>,
    ) {
        self.info.counters.connect_errors.fetch_add(1, Relaxed);
        tracing::warn!(db = %self.info.name, error = %crate::error::error_chain(err), "cannot open a connection");
        *lock(&self.last_error) = Some(ConnectError {
            at: Instant::now(),
            detail,
            cause,
            code,
        });
    }

    pub(super) fn last_connect_error(&self) -> Option<ConnectError> {
        lock(&self.last_error).clone()
    }

    /// A new connection's slot, with the lowest index no live connection has (one closing
    /// gives its index up: its close may take a while, a PostgreSQL client's up to a second,
    /// and a new connection with an index past `max_size` would have no place in the bag
    /// for its whole life); a successful connect also clears the last error.
    pub(super) fn add_slot(&self) -> Arc<ConnSlot> {
        let mut slots = lock(&self.slots);
        let mut taken = vec![false; slots.len() + 1];
        for slot in slots.iter().filter(|s| !s.is_closing()) {
            if let Some(t) = taken.get_mut(slot.index()) {
                *t = true;
            }
        }
        // One of the `len + 1` indices is free.
        let index = taken.iter().position(|t| !t).unwrap_or(slots.len());
        let slot = Arc::new(ConnSlot::new(index));
        slots.push(Arc::clone(&slot));
        drop(slots);
        *lock(&self.last_error) = None;
        slot
    }

    /// Removes a closed connection's slot and tells `close`.
    pub(super) fn remove_slot(&self, slot: &Arc<ConnSlot>) {
        lock(&self.slots).retain(|s| !Arc::ptr_eq(s, slot));
        self.slots_changed.notify_all();
    }

    /// Connections checked out now (in use, not idle).
    pub(super) fn checked_out(&self) -> u32 {
        let out = lock(&self.slots)
            .iter()
            .filter(|s| s.is_checked_out())
            .count();
        u32::try_from(out).unwrap_or(u32::MAX)
    }

    /// The slots of every live connection, now.
    pub(super) fn slots(&self) -> Vec<Arc<ConnSlot>> {
        lock(&self.slots).clone()
    }

    /// For `close`: once no connection is live or being opened, or at `deadline`, returns the
    /// checkouts still out (with the time it looked); otherwise waits up to `slice` for a
    /// connection to close and returns `None`.
    pub(super) fn settled(
        &self,
        deadline: Instant,
        slice: Duration,
    ) -> Option<(Instant, Vec<Checkout>)> {
        let slots = lock(&self.slots);
        let now = Instant::now();
        if (slots.is_empty() && self.connecting.load(SeqCst) == 0) || now >= deadline {
            return Some((now, slots.iter().filter_map(|s| s.checkout()).collect()));
        }
        drop(wait_timeout(
            &self.slots_changed,
            slots,
            (deadline - now).min(slice),
        ));
        None
    }

    #[cfg(test)]
    pub(super) fn set_connect_hook(&self, hook: ConnectHook) {
        *lock(&self.connect_hook) = Some(hook);
    }

    #[cfg(test)]
    pub(super) fn connect_hook(&self) -> Option<ConnectHook> {
        lock(&self.connect_hook).clone()
    }
}
