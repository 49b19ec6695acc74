//! Checking out a connection: the fast path (an idle connection from the bag, or else from
//! r2d2's idle list; no wait),
//! the slow path (waiting for r2d2, failing early on a permanent connect error), the
//! validation of a connection that sat idle longer than `validate_after_idle`, and the closing
//! of one past `max_lifetime` or `idle_timeout`.
//!
//! The write transaction's checkout is here too: the last writer's connection first, its
//! cache warm ([`Pool::try_checkout_writer`]).
//!
//! (Over 700 lines with its unit tests, which are most of it: the code is about 280.)

use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::manager::{HiveConn, HiveManager, validate};
use super::shared::Permanent;
use super::{Engine, Lease, Pool, PooledConnection};
use crate::clock::{Stamp, coarse_now, deadline};
use crate::error::{Error, Result};
use crate::stats::CloseReason;

/// How long one blocking wait inside r2d2 lasts before we look for a permanent connect error.
const WAIT_SLICE: Duration = Duration::from_millis(50);

impl Pool {
    /// The fast path: an idle connection now, or `None` without waiting.
    #[inline]
    pub(crate) fn try_checkout(
        &self,
        site: &'static Location<'static>,
    ) -> Result<Option<PooledConnection>> {
        Ok(self
            .try_checkout_raw(site)?
            .map(|conn| PooledConnection { conn }))
    }

    /// The connection the last write transaction began on (see [`Pool::note_writer`]), if
    /// it is idle and passes `accept`; else `None`, for the caller's usual checkout. SQLite
    /// drops a connection's whole page cache when another connection has written since its
    /// last transaction, so a write on the last writer's connection finds the pages the
    /// writes touch still cached, where one on any other connection reads them again, inside
    /// the writer lane. This thread's own last place, which its reads keep using, is left as
    /// it was. A connection turned away has the file looked at, as on the usual fast path,
    /// so a replaced or removed database file fails the write here.
    #[inline]
    pub(crate) fn try_checkout_writer(
        &self,
        site: &'static Location<'static>,
    ) -> Result<Option<PooledConnection>> {
        self.refuse_if_closed()?;
        let hint = self.writer_place.load(Relaxed);
        let Some(lease) = self.bag.take_at(hint) else {
            return Ok(None);
        };
        match self.accept(lease, Duration::ZERO, coarse_now(), site) {
            Some(conn) => Ok(Some(PooledConnection {
                conn: self.handed_out(conn)?,
            })),
            None => {
                self.info().check_file()?;
                Ok(None)
            }
        }
    }

    /// Notes `conn` as the connection a write transaction began on, for the next one.
    #[inline]
    pub(crate) fn note_writer(&self, conn: &PooledConnection) {
        self.writer_place.store(conn.conn.slot.index(), Relaxed);
    }

    /// Checks out a connection, waiting up to `connection_timeout`.
    #[inline]
    pub(crate) fn checkout(&self, site: &'static Location<'static>) -> Result<PooledConnection> {
        self.checkout_raw(site)
            .map(|conn| PooledConnection { conn })
    }

    /// Checks out a connection for a caller that began to ask at `start`, waiting until
    /// `deadline` at most.
    pub(crate) fn checkout_until(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
    ) -> Result<PooledConnection> {
        self.checkout_raw_until(start, deadline, site)
            .map(|conn| PooledConnection { conn })
    }
}

impl Engine for HiveManager {
    type Conn = Box<rusqlite::Connection>;

    fn validate_idle(conn: &mut HiveConn) -> std::result::Result<(), String> {
        if conn.shared.info().check_file().is_err() {
            // Discarded: its close copies the WAL into the file it has open and empties it
            // (`Closing`), with a short busy timeout of its own. Doing that here, under the
            // pool's busy timeout, held the checkout that long when a reader was still on
            // the moved file, whatever its connection timeout.
            return Err("database file deleted, renamed or replaced".to_owned());
        }
        validate(&conn.conn).map_err(|e| e.to_string())
    }

    #[inline]
    fn broken_on_return(conn: &mut HiveConn) -> bool {
        Self::return_check(conn)
    }
}

impl<M: Engine> Pool<M> {
    /// The fast path: an idle connection now, or `None` without waiting. No lock and no
    /// clock read when the bag has one.
    #[inline]
    pub(crate) fn try_checkout_raw(
        &self,
        site: &'static Location<'static>,
    ) -> Result<Option<Lease<M>>> {
        self.refuse_if_closed()?;
        let now = coarse_now();
        while let Some(conn) = self.take_idle() {
            if let Some(conn) = self.accept(conn, Duration::ZERO, now, site) {
                return self.handed_out(conn).map(Some);
            }
            self.info().check_file()?;
        }
        Ok(None)
    }

    /// An idle connection: from the bag, else from r2d2's idle list.
    #[inline]
    fn take_idle(&self) -> Option<Lease<M>> {
        self.bag
            .take()
            .or_else(|| self.pool.try_get().map(|conn| self.bag.lease(conn)))
    }

    /// Checks out a connection, waiting up to `connection_timeout`.
    #[inline]
    pub(crate) fn checkout_raw(&self, site: &'static Location<'static>) -> Result<Lease<M>> {
        let start = Instant::now();
        self.checkout_raw_until(
            start,
            deadline(start, self.info().config.connection_timeout),
            site,
        )
    }

    /// `conn`, checked out (its slot marked), unless the pool closed meanwhile: a checkout
    /// that passed the first look at `closed` and then validated its connection, or waited
    /// in r2d2, while `close` ran would otherwise hand out a connection after `close` had
    /// returned, missing from its report of connections still out. Marking the slot and
    /// this look are `SeqCst`, as are `close`'s mark and its look at the slots, so either
    /// this sees `closed` or `close` sees the checkout.
    /// Refused, the lease is returned as it drops (the return sees `closed` and gives it to
    /// r2d2 to close).
    #[inline]
    fn handed_out(&self, conn: Lease<M>) -> Result<Lease<M>> {
        self.refuse_if_closed().map(|()| conn)
    }

    #[inline]
    fn refuse_if_closed(&self) -> Result<()> {
        if self.shared.is_closed() {
            return Err(Error::Closed {
                db: self.info().name.clone(),
            });
        }
        Ok(())
    }

    /// Checks out a connection for a caller that began to ask at `start`, waiting until
    /// `deadline` at most.
    pub(crate) fn checkout_raw_until(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
    ) -> Result<Lease<M>> {
        let mut had_to_wait = false;
        loop {
            self.refuse_if_closed()?;
            let (conn, waited, now) = match self.take_idle() {
                // A caller that waited, then found its connection unusable and took another
                // at once, waited all the same: its wait is counted from `start`.
                Some(conn) if had_to_wait => (conn, start.elapsed(), coarse_now()),
                Some(conn) => (conn, Duration::ZERO, coarse_now()),
                None => {
                    had_to_wait = true;
                    let conn = self.wait_for_connection(start, deadline)?;
                    let now = Instant::now();
                    (conn, now.saturating_duration_since(start), Stamp::of(now))
                }
            };
            if let Some(conn) = self.accept(conn, waited, now, site) {
                if had_to_wait {
                    self.info().counters.acquires_waited.fetch_add(1, Relaxed);
                }
                return self.handed_out(conn);
            }
            self.info().check_file()?;
        }
    }

    /// Hands `conn` out unless [`Pool::usable`] finds it must close; `None` then (also when
    /// the file at the path is no longer the one registered: the caller then checks).
    #[inline]
    fn accept(
        &self,
        mut conn: Lease<M>,
        waited: Duration,
        now: Stamp,
        site: &'static Location<'static>,
    ) -> Option<Lease<M>> {
        // Two comparisons with the checkout's own clock reading, so `max_lifetime` and
        // `idle_timeout` hold at the coarse clock's granularity, not r2d2's 30 s reaper's.
        let idle_ns = now.nanos_since(conn.last_used);
        if (idle_ns >= self.look_after_idle_ns || now >= conn.retire_at)
            && !self.usable(&mut conn, now, Duration::from_nanos(idle_ns))
        {
            return None;
        }
        let HiveConn {
            slot,
            last_site,
            last_used,
            ..
        } = &mut *conn;
        slot.check_out(now, site, last_site);
        // Checkout time stands in for return time: a connection held longer than the window
        // is checked once more than strictly needed, and the return path reads no clock.
        *last_used = now;
        self.info().counters.acquire_wait.record(waited);
        Some(conn)
    }

    /// For a connection past its lifetime or idle for `idle` (at least the shorter of
    /// `validate_after_idle` and `idle_timeout`): `false`, marked with the reason it closes
    /// for, when it reached `max_lifetime`, when it sat idle past `idle_timeout` and the pool
    /// keeps `min_idle` idle without it, or when it fails validation (idle past
    /// `validate_after_idle`).
    #[cold]
    fn usable(&self, conn: &mut HiveConn<M::Conn>, now: Stamp, idle: Duration) -> bool {
        let config = &self.info().config;
        if now >= conn.retire_at {
            conn.discard = Some(CloseReason::Lifetime);
            return false;
        }
        // Idle includes this one, not checked out yet: closed only if `min_idle` stay idle
        // without it, as the bag's sweep counts (which would open another otherwise).
        if config.idle_timeout.is_some_and(|t| idle >= t)
            && self
                .pool
                .state()
                .connections
                .saturating_sub(self.shared.checked_out())
                > config.min_idle
        {
            conn.discard = Some(CloseReason::IdleTimeout);
            return false;
        }
        if idle < config.validate_after_idle {
            return true;
        }
        if let Err(why) = M::validate_idle(conn) {
            tracing::warn!(db = %self.info().name, id = conn.id, error = %why, "connection failed validation; discarded");
            conn.discard = Some(CloseReason::ValidationFailed);
            return false;
        }
        conn.trusted_at = now;
        true
    }

    /// The slow path: no idle connection. r2d2 opens one if the pool may grow, and we wait in
    /// r2d2, counted as waiting, so that a connection returned meanwhile comes to r2d2 (see
    /// `bag.rs`) and wakes us.
    fn wait_for_connection(&self, start: Instant, deadline: Instant) -> Result<Lease<M>> {
        let _waiting = self.shared.waiting(start);
        loop {
            self.refuse_if_closed()?;
            // Returned before the returner could see us waiting.
            if let Some(conn) = self.bag.take() {
                return Ok(conn);
            }
            let now = Instant::now();
            if now >= deadline {
                self.info().counters.acquire_timeouts.fetch_add(1, Relaxed);
                return Err(self.timeout_error(now.saturating_duration_since(start)));
            }
            if let Ok(conn) = self.pool.get_timeout((deadline - now).min(WAIT_SLICE)) {
                return Ok(self.bag.lease(conn));
            }
            // A cause that waiting cannot fix fails now, not at the deadline.
            if let Some(err) = self.permanent_connect_error(start) {
                return Err(err);
            }
        }
    }

    /// The last connect error, if it happened after `since` and waiting cannot fix it.
    pub(super) fn permanent_connect_error(&self, since: Instant) -> Option<Error> {
        let last = self.shared.last_connect_error()?;
        let cause = last.cause.filter(|_| last.at >= since)?;
        let db = self.info().name.clone();
        let path = self.info().path.to_path_buf();
        Some(match cause {
            Permanent::File(cause) => Error::Open {
                db,
                path,
                cause,
                code: last.code,
                source: Some(last.detail.into()),
            },
            Permanent::Server(cause, code) => Error::Refused {
                db,
                target: path,
                cause,
                code,
                source: Some(last.detail.into()),
            },
        })
    }

    pub(super) fn timeout_error(&self, waited: Duration) -> Error {
        let total = self.pool.state().connections;
        let active = self.shared.checked_out().min(total);
        Error::Timeout {
            db: self.info().name.clone(),
            waited,
            total,
            active,
            idle: total - active,
            waiting: self.shared.waiters().0,
            last_error: self.shared.last_connect_error().map(|e| e.detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};

    use std::sync::Arc;

    use super::*;
    use crate::config::DbConfig;
    use crate::error::OpenCause;

    type TestResult = anyhow::Result<()>;

    fn pool(name: &str, config: DbConfig) -> anyhow::Result<(tempfile::TempDir, Pool)> {
        super::super::test_pool(name, config)
    }

    #[track_caller]
    fn get(pool: &Pool) -> Result<PooledConnection> {
        pool.checkout(Location::caller())
    }

    fn live(pool: &Pool) -> u32 {
        pool.gauges().map_or(0, |g| g.live)
    }

    /// Bug caught: a panic inside connect escaping into r2d2's worker, which leaks the
    /// pending slot for good (verified with r2d2 0.8.10), so the pool can never reach
    /// max_size again.
    #[test]
    fn a_panicking_connect_is_an_error_and_frees_its_slot() -> TestResult {
        let max = 3;
        let (_dir, pool) = pool(
            "panic-connect",
            DbConfig {
                max_size: max,
                min_idle: 0,
                connection_timeout: Duration::from_secs(10),
                ..DbConfig::default()
            },
        )?;
        let panics_left = Arc::new(AtomicU32::new(3));
        let hook_panics = Arc::clone(&panics_left);
        pool.shared.set_connect_hook(Arc::new(move |_conn| {
            if hook_panics
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("injected connect panic");
            }
            Ok(())
        }));
        // Every slot can be held at once once connects stop panicking.
        let held: Vec<_> = (0..max).map(|_| get(&pool)).collect::<Result<_>>()?;
        assert_eq!(panics_left.load(SeqCst), 0);
        assert_eq!(live(&pool), max);
        let totals = pool.info().counters.totals();
        assert_eq!(totals.connect_errors, 3);
        drop(held);
        Ok(())
    }

    /// Bug caught: a long run of panicking connects (1,000 in a row) leaking slots one by one,
    /// leaving a caller waiting past its timeout or with an untyped error, or the pool unable
    /// to reach `max_size` once connects work again. r2d2 retries a failed connect after
    /// `connection_timeout / 2` at most, so a short timeout keeps the thousand quick.
    #[test]
    fn a_thousand_connect_panics_leave_the_pool_whole() -> TestResult {
        const PANICS: u32 = 1_000;
        let max = 3;
        let timeout = Duration::from_millis(20);
        let (_dir, pool) = pool(
            "panic-storm",
            DbConfig {
                max_size: max,
                min_idle: 0,
                connection_timeout: timeout,
                ..DbConfig::default()
            },
        )?;
        let panics_left = Arc::new(AtomicU32::new(PANICS));
        let hook_panics = Arc::clone(&panics_left);
        pool.shared.set_connect_hook(Arc::new(move |_conn| {
            if hook_panics
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("injected connect panic");
            }
            Ok(())
        }));
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut refused = 0u32;
        while panics_left.load(SeqCst) > 0 {
            assert!(
                Instant::now() < give_up,
                "{} panics left",
                panics_left.load(SeqCst)
            );
            let start = Instant::now();
            match get(&pool) {
                // A connect between two panics may have worked: hand it back.
                Ok(conn) => drop(conn),
                Err(Error::Timeout { last_error, .. }) => {
                    refused += 1;
                    // A hang detector, not a timing assertion: 100 times the timeout.
                    assert!(
                        start.elapsed() < timeout * 100,
                        "waited {:?}",
                        start.elapsed()
                    );
                    if let Some(last) = last_error {
                        assert!(last.contains("panicked"), "{last}");
                    }
                }
                Err(other) => panic!("not a timeout: {other:?}"),
            }
        }
        assert!(refused > 0, "no caller saw the connects fail");
        // Every slot can be held at once once connects stop panicking.
        let held: Vec<_> = std::iter::repeat_with(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match get(&pool) {
                    Ok(conn) => return Ok(conn),
                    Err(_) if Instant::now() < deadline => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .take(max as usize)
        .collect::<Result<_>>()?;
        assert_eq!(live(&pool), max);
        assert_eq!(
            pool.info().counters.totals().connect_errors,
            u64::from(PANICS)
        );
        for conn in &held {
            conn.execute_batch("CREATE TABLE IF NOT EXISTS t (v); INSERT INTO t VALUES (1);")?;
        }
        drop(held);
        Ok(())
    }

    /// Installs a hook that can poison connections; the returned function makes every
    /// connection opened so far fail each statement (interrupted), and later ones work.
    fn poison_hook(pool: &Pool) -> impl Fn() + use<> {
        let generation = Arc::new(AtomicU64::new(0));
        let created = Arc::new(AtomicU64::new(0));
        let hook_gen = Arc::clone(&generation);
        let hook_created = Arc::clone(&created);
        pool.shared.set_connect_hook(Arc::new(move |conn| {
            let mine = hook_created.fetch_add(1, SeqCst);
            let current = Arc::clone(&hook_gen);
            // Every statement of a connection made before the poisoning is interrupted.
            conn.progress_handler(1, Some(move || current.load(SeqCst) > mine))?;
            Ok(())
        }));
        move || generation.store(created.load(SeqCst), SeqCst)
    }

    /// Bug caught: a stale connection handed out unchecked after sitting idle, or the live
    /// count drifting when failed connections are replaced .
    #[test]
    fn idle_connections_are_validated_and_replaced_exactly() -> TestResult {
        let (_dir, pool) = pool(
            "validate",
            DbConfig {
                max_size: 4,
                min_idle: 0,
                validate_after_idle: Duration::ZERO,
                ..DbConfig::default()
            },
        )?;
        let poison = poison_hook(&pool);
        // Three connections (r2d2 may open one more in the background) go idle.
        let held: Vec<_> = (0..3).map(|_| get(&pool)).collect::<Result<_>>()?;
        drop(held);
        std::thread::sleep(Duration::from_millis(50));
        let idle_before = pool.gauges().map_or(0, |g| g.idle);
        assert!(idle_before >= 3);
        poison();
        let conn = get(&pool)?;
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
        assert_eq!(one, 1, "a poisoned connection was handed out");
        drop(conn);
        let s = pool.info().counters.totals();
        // Every idle connection was poisoned: each failed its check before a fresh one came.
        assert_eq!(
            s.connections_closed.validation_failed,
            u64::from(idle_before),
            "{s:#?}"
        );
        let live = live(&pool);
        assert_eq!(
            s.connections_created - s.connections_closed.total(),
            u64::from(live)
        );
        assert_eq!(pool.shared.slots().len() as u32, live);
        Ok(())
    }

    /// A one-connection pool whose connection the returned function can poison.
    fn single_poisonable(
        name: &str,
        window: Duration,
    ) -> anyhow::Result<(tempfile::TempDir, Pool, impl Fn())> {
        let (dir, pool) = pool(
            name,
            DbConfig {
                max_size: 1,
                min_idle: 1,
                validate_after_idle: window,
                ..DbConfig::default()
            },
        )?;
        let poison = poison_hook(&pool);
        // Replace the connection opened before the hook with one the hook can poison.
        get(&pool)?.discard();
        Ok((dir, pool, poison))
    }

    /// Bug caught: `last_used` never refreshed, so a connection in steady use is validated
    /// again and again once it is older than the window.
    #[test]
    fn a_checkout_restarts_the_validation_window() -> TestResult {
        let window = Duration::from_millis(200);
        let (_dir, pool, poison) = single_poisonable("window", window)?;
        std::thread::sleep(window + Duration::from_millis(50));
        // Idle past the window: validated (and passes), and the window restarts now.
        drop(get(&pool)?);
        poison();
        let conn = get(&pool)?;
        assert!(
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .is_err(),
            "not the poisoned connection"
        );
        assert_eq!(
            pool.info()
                .counters
                .totals()
                .connections_closed
                .validation_failed,
            0
        );
        Ok(())
    }

    /// Bug caught: a stale connection handed out unchecked because the clock checkouts read
    /// (the coarse clock) stopped advancing.
    #[test]
    fn a_connection_idle_past_the_window_is_validated() -> TestResult {
        let window = Duration::from_millis(100);
        let (_dir, pool, poison) = single_poisonable("idle-window", window)?;
        drop(get(&pool)?);
        poison();
        std::thread::sleep(window * 3);
        let conn = get(&pool)?;
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
        assert_eq!(
            one, 1,
            "the poisoned connection was handed out without a check"
        );
        assert_eq!(
            pool.info()
                .counters
                .totals()
                .connections_closed
                .validation_failed,
            1
        );
        Ok(())
    }

    /// Bug caught: validating on every checkout (r2d2's default, half the point-read speed)
    /// instead of only after `validate_after_idle`.
    #[test]
    fn recently_used_connections_skip_validation() -> TestResult {
        let (_dir, pool) = pool(
            "no-validate",
            DbConfig {
                max_size: 2,
                min_idle: 0,
                validate_after_idle: Duration::from_secs(3600),
                ..DbConfig::default()
            },
        )?;
        let poison = poison_hook(&pool);
        drop(get(&pool)?);
        poison();
        // Handed out unchecked: the poison shows only when the caller runs a statement.
        let conn = get(&pool)?;
        assert!(
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .is_err()
        );
        assert_eq!(
            pool.info()
                .counters
                .totals()
                .connections_closed
                .validation_failed,
            0
        );
        Ok(())
    }

    /// Checks out and returns a connection every few milliseconds for `period`, so none of
    /// them ever sits idle for long.
    fn keep_busy(pool: &Pool, period: Duration) -> TestResult {
        let end = Instant::now() + period;
        while Instant::now() < end {
            drop(get(pool)?);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Bug caught: `max_lifetime` enforced only by r2d2's reaper, every 30 s, so with a
    /// lifetime of 300 ms a connection is still handed out seconds later; or enforced only on
    /// connections that sat idle (a connection in steady use is never retired).
    #[test]
    fn a_connection_past_its_lifetime_is_closed_at_checkout() -> TestResult {
        let (_dir, pool) = pool(
            "lifetime",
            DbConfig {
                max_size: 1,
                min_idle: 1,
                max_lifetime: Some(Duration::from_millis(300)),
                idle_timeout: None,
                validate_after_idle: Duration::from_secs(3600),
                ..DbConfig::default()
            },
        )?;
        // In steady use for a second: never idle, so only its age can retire it.
        keep_busy(&pool, Duration::from_secs(1))?;
        let totals = pool.info().counters.totals();
        // About three lifetimes passed; r2d2's reaper would not have run yet (30 s).
        assert!(
            totals.connections_closed.max_lifetime >= 2,
            "{:#?}",
            totals.connections_closed
        );
        assert_eq!(
            totals.connections_closed.total(),
            totals.connections_closed.max_lifetime
        );
        // Idle past its lifetime, the next checkout gets a new connection.
        std::thread::sleep(Duration::from_millis(400));
        let before = pool.info().counters.totals();
        drop(get(&pool)?);
        let after = pool.info().counters.totals();
        assert_eq!(
            after.connections_closed.max_lifetime,
            before.connections_closed.max_lifetime + 1
        );
        assert!(after.connections_created > before.connections_created);
        Ok(())
    }

    /// Bug caught: `idle_timeout` enforced only by r2d2's reaper, every 30 s (or only once
    /// `validate_after_idle` has passed), so idle connections past a 300 ms timeout are handed
    /// out seconds later; or closed at checkout even when that leaves fewer than `min_idle`.
    #[test]
    fn connections_idle_past_the_timeout_close_at_checkout_down_to_min_idle() -> TestResult {
        let (_dir, pool) = pool(
            "idle-timeout",
            DbConfig {
                max_size: 3,
                min_idle: 1,
                max_lifetime: None,
                idle_timeout: Some(Duration::from_millis(300)),
                validate_after_idle: Duration::from_secs(3600),
                ..DbConfig::default()
            },
        )?;
        let held: Vec<_> = (0..3).map(|_| get(&pool)).collect::<Result<_>>()?;
        drop(held);
        assert_eq!(live(&pool), 3);
        std::thread::sleep(Duration::from_secs(1));
        let conn = get(&pool)?;
        let closed = pool.info().counters.totals().connections_closed;
        // Two closed; the third is the `min_idle` the pool keeps, and is handed out.
        assert_eq!(closed.idle_timeout, 2, "{closed:#?}");
        assert_eq!(closed.total(), 2, "{closed:#?}");
        drop(conn);
        Ok(())
    }

    /// Bug caught: the return check asked only whether a transaction was open outside
    /// autocommit, so a connection whose borrower leaked a stepped statement (safe Rust:
    /// `mem::forget`) went back to the pool holding its read transaction, and the next
    /// borrower read that old snapshot: a row committed since was missing.
    #[test]
    fn a_connection_with_a_statement_still_running_is_not_handed_on() -> TestResult {
        let config = DbConfig {
            max_size: 2,
            min_idle: 0,
            ..DbConfig::default()
        };
        let (_dir, pool) = pool("running-statement", config)?;
        let first = get(&pool)?;
        let other = get(&pool)?;
        first.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1), (2);")?;
        {
            let mut stmt = first.prepare("SELECT v FROM t")?;
            let mut rows = stmt.query([])?;
            assert!(rows.next()?.is_some());
            std::mem::forget(rows);
            std::mem::forget(stmt);
        }
        assert!(first.is_autocommit());
        drop(first);
        other.execute("INSERT INTO t VALUES (3)", [])?;
        drop(other);
        for _ in 0..2 {
            let next = get(&pool)?;
            let n: i64 = next.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
            assert_eq!(n, 3, "a borrower read an old snapshot");
        }
        assert_eq!(pool.info().counters.totals().connections_closed.broken, 1);
        Ok(())
    }

    /// Bug caught: `refuse_if_closed` was the only look at `closed`, before the connection
    /// was taken, so a checkout that was validating its connection (or waiting in r2d2)
    /// while `close` ran got a working connection after `close` had returned, and
    /// `close`'s report of connections still out missed it.
    #[test]
    fn a_checkout_under_way_when_the_pool_closes_is_refused() -> TestResult {
        let config = DbConfig {
            max_size: 1,
            min_idle: 0,
            validate_after_idle: Duration::ZERO,
            ..DbConfig::default()
        };
        let (_dir, pool) = pool("close-during-checkout", config)?;
        let slow = Arc::new(AtomicBool::new(false));
        let hook_slow = Arc::clone(&slow);
        pool.shared.set_connect_hook(Arc::new(move |conn| {
            let slow = Arc::clone(&hook_slow);
            conn.progress_handler(
                1,
                Some(move || {
                    if slow.swap(false, SeqCst) {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    false
                }),
            )?;
            Ok(())
        }));
        get(&pool)?.execute_batch("CREATE TABLE t (v)")?;
        slow.store(true, SeqCst);
        std::thread::scope(|s| -> TestResult {
            // Its validation (`SELECT 1`) takes 300 ms.
            let borrower =
                s.spawn(|| get(&pool).map(|c| c.execute("INSERT INTO t VALUES (1)", [])));
            std::thread::sleep(Duration::from_millis(50));
            let report = pool.close(Instant::now() + Duration::from_millis(100));
            assert!(report.still_out.is_empty());
            let got = borrower
                .join()
                .map_err(|_| anyhow::anyhow!("the borrower panicked"))?;
            assert!(
                matches!(got, Err(Error::Closed { .. })),
                "a connection was handed out after close returned: {got:?}"
            );
            Ok(())
        })
    }

    /// Bug caught: the check after idle of a connection to a moved file ran its WAL
    /// checkpoint under the pool's busy timeout, so a checkout waited that long (3 s here)
    /// while a reader was still on the moved file, whatever its connection timeout.
    #[test]
    fn a_moved_files_check_after_idle_keeps_to_a_short_wait() -> TestResult {
        let config = DbConfig {
            max_size: 2,
            min_idle: 0,
            validate_after_idle: Duration::ZERO,
            connection_timeout: Duration::from_millis(200),
            busy_timeout: Duration::from_secs(3),
            ..DbConfig::default()
        };
        let (dir, pool) = pool("moved-check", config)?;
        let writer = get(&pool)?;
        let reader = get(&pool)?;
        writer.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1);")?;
        reader.execute_batch("BEGIN")?;
        let _: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        writer.execute("INSERT INTO t VALUES (2)", [])?;
        drop(writer);
        std::fs::rename(
            dir.path().join("db.sqlite"),
            dir.path().join("moved.sqlite"),
        )?;
        let start = Instant::now();
        let got = get(&pool);
        let took = start.elapsed();
        drop(reader);
        assert!(got.is_err(), "a connection to a moved file was handed out");
        assert!(
            took < Duration::from_secs(1),
            "the checkout took {took:?} with a connection timeout of 200 ms"
        );
        Ok(())
    }

    /// Bug caught: the file's identity looked at before the open, so that a file renamed
    /// over the path in between was opened, handed out and read with the registered file's
    /// `-wal`; or looked at only once the connection had read (`configure_connection`'s
    /// PRAGMAs read the schema), so that the refused connection's close, the other file's
    /// last, copied the registered file's commits into it and deleted the `-wal`.
    #[test]
    fn a_file_renamed_over_the_path_as_a_connection_opens_is_refused() -> TestResult {
        let config = DbConfig {
            max_size: 2,
            min_idle: 0,
            connection_timeout: Duration::from_secs(2),
            ..DbConfig::default()
        };
        let (dir, pool) = pool("renamed-at-open", config)?;
        let first = get(&pool)?;
        // Commits kept in the `-wal`, as they are between checkpoints.
        first.execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (v); INSERT INTO t VALUES ('registered');",
        )?;
        let wal = dir.path().join("db.sqlite-wal");
        let renamed = pool.info().before_open.swap_files_once(&pool.info().path)?;
        let got = get(&pool);
        assert!(renamed.load(SeqCst), "no connection was opened");
        match got {
            Err(Error::Open {
                cause: OpenCause::FileChanged,
                ..
            }) => {}
            Err(other) => panic!("refused with {other}, not as a changed file"),
            Ok(conn) => {
                let v: String = conn.query_row("SELECT v FROM t", [], |r| r.get(0))?;
                panic!(
                    "a connection on the file renamed over the path was handed out (read {v:?})"
                );
            }
        }
        assert!(wal.exists(), "the registered file's -wal was deleted");
        let v: String = first.query_row("SELECT v FROM t", [], |r| r.get(0))?;
        assert_eq!(v, "registered", "the registered file lost its commits");
        Ok(())
    }

    /// Bug caught: a new connection that read (and here wrote) and then failed its setup was
    /// dropped as a plain connection: with its file moved meanwhile, SQLite's close of the
    /// file's last connection skips the checkpoint and leaves the `-wal` at the old path, so
    /// the moved file lost the commits in it.
    #[test]
    fn a_connection_that_fails_its_setup_is_closed_as_a_pooled_one() -> TestResult {
        let config = DbConfig {
            max_size: 1,
            min_idle: 0,
            connection_timeout: Duration::from_millis(300),
            ..DbConfig::default()
        };
        let (dir, pool) = pool("setup-fails", config)?;
        let path = pool.info().path.clone();
        let moved = dir.path().join("moved.sqlite");
        let failed = Arc::new(AtomicBool::new(false));
        let (hook_failed, hook_moved) = (Arc::clone(&failed), moved.clone());
        pool.shared.set_connect_hook(Arc::new(move |conn| {
            if hook_failed.swap(true, SeqCst) {
                return Ok(());
            }
            conn.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES ('committed');")?;
            std::fs::rename(&path, &hook_moved).expect("move the registered file");
            Err(rusqlite::Error::InvalidQuery)
        }));
        assert!(
            get(&pool).is_err(),
            "a connection on a moved file was handed out"
        );
        assert!(failed.load(SeqCst), "no connection was opened");
        let conn = rusqlite::Connection::open_with_flags(
            &moved,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let v: String = conn.query_row("SELECT v FROM t", [], |r| r.get(0))?;
        assert_eq!(v, "committed");
        Ok(())
    }

    /// Bug caught: a caller that waited, got a connection that failed its check, and then
    /// found another idle at once had its acquire recorded with a wait of zero, though
    /// `acquires_waited` counted it.
    #[test]
    fn a_wait_then_a_failed_check_counts_the_whole_wait() -> TestResult {
        let config = DbConfig {
            max_size: 2,
            min_idle: 0,
            validate_after_idle: Duration::ZERO,
            ..DbConfig::default()
        };
        let (_dir, pool) = pool("wait-then-fail", config)?;
        let poisoned = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let (hook_poisoned, hook_opened) = (Arc::clone(&poisoned), Arc::clone(&opened));
        pool.shared.set_connect_hook(Arc::new(move |conn| {
            let first = hook_opened.fetch_add(1, SeqCst) == 0;
            let poisoned = Arc::clone(&hook_poisoned);
            conn.progress_handler(
                1,
                Some(move || {
                    let fail = first && poisoned.load(SeqCst);
                    if fail {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    fail
                }),
            )?;
            Ok(())
        }));
        let a = get(&pool)?;
        let b = get(&pool)?;
        let before = pool.info().counters.acquire_wait.summary();
        let waited = std::thread::scope(|s| -> anyhow::Result<Duration> {
            let waiter = s.spawn(|| {
                let start = Instant::now();
                get(&pool).map(|_| start.elapsed())
            });
            while pool.shared.waiters().0 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(150));
            // `a` (the first opened, whose check now takes 200 ms and fails) goes to the
            // waiter; `b`, returned while that check runs and nobody waits, into the bag,
            // where the waiter finds it at once.
            poisoned.store(true, SeqCst);
            drop(a);
            std::thread::sleep(Duration::from_millis(50));
            drop(b);
            waiter
                .join()
                .map_err(|_| anyhow::anyhow!("the waiter panicked"))?
                .map_err(anyhow::Error::from)
        })?;
        let after = pool.info().counters.acquire_wait.summary();
        let recorded = Duration::from_nanos(after.sum_ns - before.sum_ns);
        assert!(waited >= Duration::from_millis(150));
        assert!(
            recorded >= Duration::from_millis(150),
            "a wait of {waited:?} recorded as {recorded:?}"
        );
        Ok(())
    }

    /// Bug caught: a connection's slot left the pool's list before the connection itself
    /// was closed, so `close` returned while one dropped on another thread was still
    /// closing: SQLite's close of the last connection copies the WAL into the file and
    /// deletes it, and that went on after `close` had returned (the WAL file still there).
    #[test]
    fn close_returns_once_the_last_connection_is_closed() -> TestResult {
        let config = DbConfig {
            max_size: 2,
            min_idle: 0,
            ..DbConfig::default()
        };
        let (dir, pool) = pool("close-last", config)?;
        {
            let c = get(&pool)?;
            c.execute_batch("CREATE TABLE t (v BLOB)")?;
            // About 2,000 frames in the WAL, under the registry's checkpoint threshold.
            let mut insert = c.prepare("INSERT INTO t VALUES (zeroblob(4000))")?;
            for _ in 0..2000 {
                insert.execute([])?;
            }
        }
        let wal = dir.path().join("db.sqlite-wal");
        assert!(wal.exists());
        let held = get(&pool)?;
        std::thread::scope(|s| -> TestResult {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // The last connection: its close copies the WAL into the file.
                drop(held);
            });
            let report = pool.close(Instant::now() + Duration::from_secs(10));
            assert!(report.still_out.is_empty(), "{report:?}");
            assert!(
                !wal.exists(),
                "close returned while the last connection was still closing"
            );
            Ok(())
        })
    }

    /// Bug caught: with a connection's slot kept until the connection is closed (for
    /// `close`'s wait), a connection opened while another was closing (a PostgreSQL client's
    /// close takes up to a second) got an index past `max_size`, so no place in the bag:
    /// every checkout and return of it went through r2d2's lock for its whole life.
    #[test]
    fn a_closing_connection_gives_its_index_up() -> TestResult {
        let config = DbConfig {
            max_size: 1,
            min_idle: 0,
            ..DbConfig::default()
        };
        let (_dir, pool) = pool("closing-index", config)?;
        let closing = pool.shared.add_slot();
        assert_eq!(closing.index(), 0);
        closing.mark_closing();
        let next = pool.shared.add_slot();
        assert_eq!(
            next.index(),
            0,
            "the new connection has no place in the bag"
        );
        pool.shared.remove_slot(&closing);
        pool.shared.remove_slot(&next);
        Ok(())
    }
}
