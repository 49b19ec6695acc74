//! A database's lock keeper for its callers' `get` and `read` (`ReadKeeper`): a [`Keeper`]
//! that the clock's tick opens once the calls keep coming, takes and ends the holds of, and
//! closes when they stop; the calls only say that they came. See `keeper.rs` for what a
//! keeper is and what it must stand back for.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once, TryLockError, Weak};
use std::time::Duration;

use crate::checkpoint::Checkpoints;
use crate::clock::{Stamp, TICK, coarse_now};
use crate::keeper::Keeper;
use crate::pool::DbInfo;
use crate::sync::lock;

/// Ticks in a row with at least [`MIN_CALLS_PER_TICK`] `get` or `read` calls before a
/// database opens its read keeper (about 20 ms of steady calls).
const HOT_TICKS: u32 = 4;

/// Calls in a tick for the tick to count towards opening a read keeper (3,200 a second): a
/// keeper saves each call about 0.7 us, and its holds cost the clock thread a few us a tick
/// and the calls some cache traffic, so a database called less often is better without.
const MIN_CALLS_PER_TICK: u32 = 16;

/// Ticks without calls after which a read keeper closes (10 s), giving its seat back.
const IDLE_TICKS: u64 = 2_000;

/// After a keeper could not be opened (the file moved, a descriptor limit, a lock it could
/// not wait for), or had to close for a cause other than idleness (its file moved, its
/// transaction would not end), how long before the tick opens one again for the same
/// database: the calls go on without one meanwhile, and the maintenance threads are not
/// kept opening and closing.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long [`ReadKeeper::close`] waits at most for a keeper being opened or closed on a
/// maintenance thread (both are quick; the wait is for a thread busy with other work).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long [`ReadKeeper::close`] waits at least for such a keeper, whatever its deadline
/// (for a close with no time to wait, so that the keeper's connection is not left to
/// close, last, after `close` returned).
const CLOSE_WAIT_MIN: Duration = Duration::from_millis(100);

/// Read keepers open at once in the process, at most: each is one more connection (two file
/// descriptors, and its memory), and a process with many busy databases must keep its
/// descriptors for their pools. The first databases to get busy have them.
const MAX_READ_KEEPERS: usize = 64;

/// Read keepers open in the process.
static READ_KEEPERS: AtomicUsize = AtomicUsize::new(0);

/// One of the process's [`MAX_READ_KEEPERS`] seats for a read keeper, given back as it drops.
struct Seat<'a>(&'a AtomicUsize);

impl<'a> Seat<'a> {
    /// A seat counted in `taken`, unless `max` are taken.
    fn take(taken: &'a AtomicUsize, max: usize) -> Option<Self> {
        taken
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(taken))
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A database's lock keeper for its callers' `get` and `read` (see the module docs). The
/// calls only say that they came, the first of each tick with one swap and a push onto a
/// list (the others of the tick pay one load and compare, and, while there is no keeper,
/// one relaxed add to a counter); the clock's tick does the rest,
/// for the databases called since the last: it counts their ticks with calls and has a
/// keeper opened on a maintenance thread once there are [`HOT_TICKS`] in a row (while fewer
/// than [`MAX_READ_KEEPERS`] are open in the process), and takes its holds, ending each at
/// the first tick without calls. Kept until the database closes, its file moves, or it goes
/// [`IDLE_TICKS`] without calls.
pub(crate) struct ReadKeeper(Arc<ReadShared>);

/// What the calls, the tick and the maintenance threads share of a [`ReadKeeper`].
struct ReadShared {
    info: Arc<DbInfo>,
    checkpoints: Arc<Checkpoints>,
    /// The coarse clock's reading (nanoseconds since its origin) of the last call that said
    /// it came: calls of the same tick skip it.
    looked: AtomicU64,
    /// Calls are counted (while there is no keeper: the tick opens one for a busy database).
    counting: AtomicBool,
    /// Calls since the tick last looked, while counted.
    calls: AtomicU32,
    state: Mutex<ReadState>,
    /// Keeper opens tried (for tests).
    #[cfg(test)]
    opens: AtomicU32,
}

/// What the tick tends.
struct ReadState {
    keeper: Option<(Arc<Keeper>, Seat<'static>)>,
    /// Ticks in a row with calls, while there is no keeper.
    hot: u32,
    /// The last tick that found calls.
    called: Stamp,
    /// A maintenance thread is opening the keeper.
    opening: bool,
    /// Keepers taken out by the tick that a maintenance thread has yet to close.
    closing: u32,
    /// No keeper is opened before this (set when one could not be opened).
    retry_at: Stamp,
    /// The database is on [`KEPT`] (listed once, for as long as it lives).
    listed: bool,
    /// Set by `close`: no keeper opens after it.
    closed: bool,
}

/// The databases whose calls came since the last tick, each once per tick.
static CALLED: Mutex<Vec<Arc<ReadShared>>> = Mutex::new(Vec::new());

/// The databases with a read keeper open, for the tick.
static KEPT: Mutex<Vec<Weak<ReadShared>>> = Mutex::new(Vec::new());

/// Hooks [`read_tick`] onto the coarse clock's tick, once per process.
static READ_HOOKED: Once = Once::new();

impl std::fmt::Debug for ReadKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadKeeper").finish_non_exhaustive()
    }
}

impl ReadKeeper {
    /// The (not yet open) read keeper of the database of `info` and `checkpoints`.
    pub(crate) fn new(info: &Arc<DbInfo>, checkpoints: &Arc<Checkpoints>) -> Self {
        READ_HOOKED.call_once(|| crate::pool::on_tick(read_tick));
        Self(Arc::new(ReadShared {
            info: Arc::clone(info),
            checkpoints: Arc::clone(checkpoints),
            looked: AtomicU64::new(0),
            counting: AtomicBool::new(true),
            calls: AtomicU32::new(0),
            #[cfg(test)]
            opens: AtomicU32::new(0),
            state: Mutex::new(ReadState {
                keeper: None,
                hot: 0,
                called: Stamp::ORIGIN,
                opening: false,
                closing: 0,
                retry_at: Stamp::ORIGIN,
                listed: false,
                closed: false,
            }),
        }))
    }

    /// Before a caller's `get` or `read`: the first call of each tick says that calls came;
    /// until the database has a keeper, every call is counted.
    #[inline]
    pub(crate) fn before_read(&self) {
        if self.0.counting.load(Relaxed) {
            self.0.calls.fetch_add(1, Relaxed);
        }
        let now = coarse_now().nanos_since(Stamp::ORIGIN);
        if self.0.looked.load(Relaxed) != now && self.0.looked.swap(now, Relaxed) != now {
            self.called();
        }
    }

    #[cold]
    #[inline(never)]
    fn called(&self) {
        lock(&CALLED).push(Arc::clone(&self.0));
    }

    /// Closes the keeper, if any, and one being opened as it opens; none opens after. Before
    /// the pool closes, so that no hold keeps its closing checkpoints back. Waits for a
    /// keeper being opened or closed on a maintenance thread until `until`, within
    /// [`CLOSE_WAIT_MIN`] and [`CLOSE_WAIT`] of `started` (when the close began: one instant
    /// for every database `close_all` closes, so that their floors do not add up).
    pub(crate) fn close(&self, started: std::time::Instant, until: std::time::Instant) {
        let keeper = {
            let mut state = lock(&self.0.state);
            state.closed = true;
            state.keeper.take()
        };
        if let Some((keeper, _seat)) = keeper {
            keeper.close();
        }
        // A keeper being opened closes itself as it finds the mark, and one the tick took out
        // is being closed: both waited for (a bounded while), so that no file of the
        // database stays open once `close` returns.
        let until = until.clamp(started + CLOSE_WAIT_MIN, started + CLOSE_WAIT);
        let busy = |state: &ReadState| state.opening || state.closing > 0;
        while busy(&lock(&self.0.state)) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether a keeper is open now (for tests).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        lock(&self.0.state).keeper.is_some()
    }

    /// Keeper opens tried so far (for tests).
    #[cfg(test)]
    pub(crate) fn opens_tried(&self) -> u32 {
        self.0.opens.load(Relaxed)
    }

    /// Opens the keeper now, on this thread, as the tick has one opened (for tests): after
    /// calls, which the tick has seen (without them, the tick's next look finds a keeper
    /// idle since the clock's origin, in a process more than 10 s old, and closes it).
    #[cfg(test)]
    pub(crate) fn open_now(&self) {
        if let Some(seat) = Seat::take(&READ_KEEPERS, MAX_READ_KEEPERS) {
            {
                let mut state = lock(&self.0.state);
                state.called = coarse_now();
                state.opening = true;
            }
            self.0.open(seat);
        }
    }

    /// Marks a keeper as being opened on a maintenance thread, or no longer (for tests).
    #[cfg(test)]
    pub(crate) fn set_opening(&self, opening: bool) {
        lock(&self.0.state).opening = opening;
    }
}

impl Drop for ReadKeeper {
    /// Closed here, on the thread dropping the database, rather than by whichever owner of
    /// the keeper lets go last (possibly the clock's tick).
    fn drop(&mut self) {
        let now = std::time::Instant::now();
        self.close(now, now + CLOSE_WAIT);
    }
}

impl ReadShared {
    /// The tick's look at a database whose calls came since the last tick (`now`): counts
    /// the tick towards opening a keeper when there is none, and has one opened at
    /// [`HOT_TICKS`] in a row. Never waits: a state another thread holds is left for the
    /// next tick.
    fn on_called(self: &Arc<Self>, now: Stamp) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let tick_ns = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
        let steady = now.nanos_since(state.called) <= 3 * tick_ns;
        state.called = now;
        let busy = self.calls.swap(0, Relaxed) >= MIN_CALLS_PER_TICK;
        if state.closed || state.opening || state.keeper.is_some() || now < state.retry_at {
            return;
        }
        state.hot = match (busy, steady) {
            (false, _) => 0,
            (true, true) => state.hot.saturating_add(1),
            (true, false) => 1,
        };
        if state.hot < HOT_TICKS {
            return;
        }
        state.hot = 0;
        let Some(seat) = Seat::take(&READ_KEEPERS, MAX_READ_KEEPERS) else {
            return;
        };
        state.opening = true;
        let shared = Arc::clone(self);
        crate::pool::in_background(move || shared.open(seat));
    }

    /// On a maintenance thread: opens the keeper (an open is no work for the clock's tick),
    /// or closes it at once when the database closed meanwhile.
    fn open(self: &Arc<Self>, seat: Seat<'static>) {
        #[cfg(test)]
        self.opens.fetch_add(1, Relaxed);
        {
            // Closed while this job waited for its thread: nothing to open.
            let mut state = lock(&self.state);
            if state.closed {
                state.opening = false;
                return;
            }
        }
        let keeper = Keeper::open(&self.info, &self.checkpoints, false);
        let mut state = lock(&self.state);
        state.opening = false;
        let Some(keeper) = keeper else {
            state.retry_at = coarse_now().after(RETRY_AFTER);
            return;
        };
        if state.closed {
            drop(state);
            keeper.close();
            return;
        }
        state.keeper = Some((keeper, seat));
        self.counting.store(false, Relaxed);
        if !std::mem::replace(&mut state.listed, true) {
            lock(&KEPT).push(Arc::downgrade(self));
        }
    }

    /// The tick's part for a database with a keeper: a hold while calls came since the last
    /// tick, none after a tick without. A keeper that must close (its file moved, its
    /// transaction stuck, or no calls for [`IDLE_TICKS`]) is closed on a maintenance thread,
    /// and the calls are counted again.
    fn tend(self: &Arc<Self>, now: Stamp) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let wanted = state.called == now;
        let tick_ns = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
        let idle = now.nanos_since(state.called) > IDLE_TICKS.saturating_mul(tick_ns);
        let Some((keeper, _)) = &state.keeper else {
            return;
        };
        if !idle && keeper.tend(now, wanted) {
            return;
        }
        if !idle {
            state.retry_at = now.after(RETRY_AFTER);
        }
        self.counting.store(true, Relaxed);
        if let Some((keeper, seat)) = state.keeper.take() {
            state.closing += 1;
            let shared = Arc::clone(self);
            crate::pool::in_background(move || {
                keeper.close();
                drop(seat);
                let mut state = lock(&shared.state);
                state.closing = state.closing.saturating_sub(1);
            });
        }
    }
}

/// The tick's part for the read keepers: the databases called since the last tick first,
/// then every database with a keeper.
fn read_tick() {
    let now = coarse_now();
    let called = std::mem::take(&mut *lock(&CALLED));
    for shared in &called {
        shared.on_called(now);
    }
    drop(called);
    let kept: Vec<Arc<ReadShared>> = {
        let mut kept = lock(&KEPT);
        kept.retain(|k| k.strong_count() > 0);
        kept.iter().filter_map(Weak::upgrade).collect()
    };
    for shared in &kept {
        shared.tend(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: more read keepers open than the process's cap (a seat taken past it, so a
    /// process with many busy databases spends its file descriptors on keepers), or a seat
    /// not given back as its keeper closes (so keepers stop opening for good).
    #[test]
    fn seats_stop_at_the_cap_and_come_back_as_they_drop() {
        let taken = AtomicUsize::new(0);
        let seats: Vec<Seat<'_>> = (0..3).filter_map(|_| Seat::take(&taken, 2)).collect();
        assert_eq!(seats.len(), 2, "two seats of two");
        assert!(Seat::take(&taken, 2).is_none(), "a third seat of two");
        drop(seats);
        assert_eq!(taken.load(Relaxed), 0, "seats dropped, not given back");
        assert!(Seat::take(&taken, 2).is_some());
    }
}
