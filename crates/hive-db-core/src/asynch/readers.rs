//! A database's reader threads: async reads wait in one bounded queue and run on the first
//! idle thread, through the same `Database::read_with` as sync reads.
//!
//! The hand-off takes no lock while the threads keep up: a call goes onto a lock-free
//! bounded queue (crossbeam's `ArrayQueue`), and a thread that has just finished a call, or
//! the one watching the queue before it parks, takes it from there. A lock is taken only to
//! park a thread or to wake one, when the queue ran dry.
//!
//! Threads start on demand, up to the configured number (at most one per connection: a
//! thread holds one connection while it reads, so more would only wait for the pool). An
//! idle thread parks; a new call wakes the one that parked last (its caches are the warmest),
//! but only when the threads already awake have more than [`CALLS_PER_THREAD`] calls each
//! queued: a point read takes microseconds, and on few cores more threads awake than the
//! calls need preempt each other in the middle of reads, which is most of a read's tail
//! latency. A call queued behind threads that are all busy with long reads is not left
//! there: a check at the coarse clock's tick, [`STALL`] or more after such a call, wakes
//! another thread when a call queued before it is still queued. (The tick runs anyway, on
//! the clock thread; a timer of its own per check, on the maintenance threads, woke three
//! of them every 2 ms per busy database, and their wake-ups preempted the readers enough to
//! show in the reads' throughput and tail.)
//!
//! From its first call on, a thread has a lock keeper (`keeper.rs`), which holds a read
//! transaction while the thread serves calls so that theirs take SQLite's WAL read lock
//! without a system call; it lets go when the thread parks, and waits for the next thread
//! to wake in the readers' list. `close` closes every keeper the readers opened, parked or
//! not (a busy thread's is not in use while its call runs).
//!
//! Two orderings keep a call from being stranded, each a store, a full fence and a load on
//! both sides: a thread puts itself on the idle list and then looks at the queue once more
//! before it parks, while a caller pushes its call and then looks for an idle thread; and
//! `close` marks the readers closed and then empties the queue, while a caller pushes and
//! then looks at the mark (and empties the queue itself when it is set).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
use std::sync::{Arc, Mutex, Once, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::asynch::call::ReadJob;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::keeper::Keeper;
use crate::lane::spin_until;
use crate::sync::{lock, panic_message};

/// How long an idle reader thread sleeps before it looks at its state again by itself; a
/// new call or `close` wakes it sooner.
const IDLE_NAP: Duration = Duration::from_secs(1);

/// How long a reader thread that ran out of calls watches the queue before it parks: a call
/// that comes meanwhile costs no wake-up. One thread at a time does.
const SPIN: Duration = Duration::from_micros(100);

/// Queued calls per awake reader thread before a call wakes another.
const CALLS_PER_THREAD: usize = 8;

/// How long a call waits behind busy reader threads, at least, before another thread is
/// woken for it (at the next tick of the coarse clock after that).
const STALL: Duration = Duration::from_millis(2);

struct Shared {
    db: Arc<Database>,
    jobs: ArrayQueue<Box<dyn ReadJob>>,
    /// Parked threads (or about to park), the last parked at the end.
    idle: Mutex<Vec<Thread>>,
    /// `idle`'s length, for callers to read without the lock.
    idle_count: AtomicUsize,
    /// Threads started and not ended.
    spawned: AtomicUsize,
    closed: AtomicBool,
    /// A thread is watching the queue before it parks: it takes the next call itself.
    spinning: AtomicBool,
    /// Calls pushed onto the queue so far (counted just before the push).
    pushed: AtomicU64,
    /// Calls taken from the queue so far.
    taken: AtomicU64,
    /// A stall check is armed (in [`ARMED`], for the clock's tick).
    stall_check: AtomicBool,
    /// The lock keepers of parked threads, holding nothing (see `keeper.rs`): a thread takes
    /// one when it wakes.
    keepers: Mutex<Vec<Arc<Keeper>>>,
    /// Every keeper opened for these readers, for `close` to close.
    every_keeper: Mutex<Vec<Weak<Keeper>>>,
    threads: usize,
}

impl Shared {
    /// Empties the queue: each call's dropped reply resolves its future to `Error::Closed`.
    /// The closure's drop is the caller's code: a panic in it loses only that call (it
    /// would otherwise unwind out of `close`, half done, or into another caller's call).
    fn drain(&self) {
        let counters = &self.db.info().counters;
        while let Some(job) = self.jobs.pop() {
            counters.async_read_queued.fetch_sub(1, Relaxed);
            if catch_unwind(AssertUnwindSafe(|| drop(job))).is_err() {
                tracing::error!(db = %self.db.info().name, "a queued async read's closure panicked as it was dropped unrun");
            }
        }
    }

    /// Takes the last parked thread off the idle list, if any.
    fn pop_idle(&self) -> Option<Thread> {
        let mut idle = lock(&self.idle);
        let thread = idle.pop();
        self.idle_count.store(idle.len(), SeqCst);
        thread
    }
}

/// The reader threads of one database.
pub(crate) struct Readers {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("db", &self.shared.db.info().name)
            .field("threads", &self.shared.threads)
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// Reader threads for `db`: at most `threads` of them, and `capacity` calls queued (both
    /// at least 1).
    pub(crate) fn new(db: Arc<Database>, threads: usize, capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                db,
                jobs: ArrayQueue::new(capacity.max(1)),
                idle: Mutex::new(Vec::new()),
                idle_count: AtomicUsize::new(0),
                spawned: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                spinning: AtomicBool::new(false),
                pushed: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                stall_check: AtomicBool::new(false),
                keepers: Mutex::new(Vec::new()),
                every_keeper: Mutex::new(Vec::new()),
                threads: threads.max(1),
            }),
        }
    }

    /// Queues `job` for the next idle reader thread, waking one or starting one if none is
    /// watching the queue.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::QueueFull`], or [`Error::Io`] when no reader thread can be
    /// started at all.
    pub(crate) fn submit(&self, job: Box<dyn ReadJob>) -> Result<()> {
        let shared = &self.shared;
        let info = shared.db.info();
        if shared.closed.load(SeqCst) {
            return Err(Error::Closed {
                db: info.name.clone(),
            });
        }
        // Counted before the push, so a thread taking it at once never counts below zero.
        info.counters.async_read_queued.fetch_add(1, Relaxed);
        shared.pushed.fetch_add(1, SeqCst);
        if let Err(job) = shared.jobs.push(job) {
            shared.pushed.fetch_sub(1, SeqCst);
            info.counters.async_read_queued.fetch_sub(1, Relaxed);
            info.counters.async_queue_full.fetch_add(1, Relaxed);
            drop(job);
            return Err(Error::QueueFull {
                db: info.name.clone(),
                queue: "read",
                capacity: shared.jobs.capacity(),
            });
        }
        fence(SeqCst);
        if shared.closed.load(SeqCst) {
            // `close` may have emptied the queue before this call reached it.
            shared.drain();
            return Ok(());
        }
        // The watching thread takes the first call; any more need a thread woken.
        if shared.spinning.load(SeqCst) && shared.jobs.len() <= 1 {
            return Ok(());
        }
        // Threads running calls take the queued ones as they finish.
        let awake = shared
            .spawned
            .load(SeqCst)
            .saturating_sub(shared.idle_count.load(SeqCst));
        if awake > 0 && shared.jobs.len() <= CALLS_PER_THREAD * awake {
            check_for_stall(shared);
            return Ok(());
        }
        wake_or_start(shared)
    }

    /// Refuses new calls, fails the queued ones with `Error::Closed` (their futures wake),
    /// and ends the threads once their running calls are done.
    pub(crate) fn close(&self) {
        let shared = &self.shared;
        shared.closed.store(true, SeqCst);
        fence(SeqCst);
        shared.drain();
        let idle = {
            let mut idle = lock(&shared.idle);
            shared.idle_count.store(0, SeqCst);
            std::mem::take(&mut *idle)
        };
        for thread in idle {
            thread.unpark();
        }
        // Closed here, not by their threads as they end: once `close` returns, no keeper has
        // the file open or holds a read mark, which the pool's closing checkpoints of the
        // connections still out must not find in their way.
        // Every hold ended first, so that no keeper's closing checkpoint (of a moved file)
        // waits for another's read mark; then each closed here, on this thread, not by
        // whichever owner drops it last (the clock's tick, say).
        let parked = std::mem::take(&mut *lock(&shared.keepers));
        let every: Vec<Arc<Keeper>> = std::mem::take(&mut *lock(&shared.every_keeper))
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for keeper in &every {
            keeper.release();
        }
        for keeper in parked.iter().chain(&every) {
            keeper.close();
        }
    }
}

/// Wakes the thread that parked last, or starts one when none is parked and fewer than the
/// limit run.
///
/// # Errors
///
/// [`Error::Io`] when no reader thread runs and none can be started.
fn wake_or_start(shared: &Arc<Shared>) -> Result<()> {
    if shared.idle_count.load(SeqCst) > 0
        && let Some(thread) = shared.pop_idle()
    {
        thread.unpark();
        return Ok(());
    }
    let start = shared
        .spawned
        .fetch_update(SeqCst, SeqCst, |n| (n < shared.threads).then_some(n + 1))
        .is_ok();
    if start {
        spawn(shared)?;
    }
    Ok(())
}

fn spawn(shared: &Arc<Shared>) -> Result<()> {
    let info = shared.db.info();
    let serving = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("hive-db-read-{}", info.name))
        .spawn(move || serve(&serving));
    if let Err(source) = spawned {
        let running = shared.spawned.fetch_sub(1, SeqCst) - 1;
        tracing::warn!(db = %info.name, error = %source, "starting a reader thread failed");
        // With another thread running the call still runs; with none it never would.
        if running == 0 {
            shared.drain();
            return Err(Error::Io {
                db: info.name.clone(),
                op: "start a reader thread for",
                path: info.path.clone(),
                source,
            });
        }
    }
    Ok(())
}

/// A reader queue's stall check, waiting for a tick of the coarse clock.
struct Armed {
    shared: Weak<Shared>,
    /// When the check was asked for, and the calls pushed by then.
    at: Instant,
    pushed: u64,
}

/// The stall checks asked for and not made yet, in every registry of the process.
static ARMED: Mutex<Vec<Armed>> = Mutex::new(Vec::new());

/// Hooks [`check_stalls`] onto the coarse clock's tick, once per process.
static HOOKED: Once = Once::new();

/// Makes sure a stall check is due: once [`STALL`] has passed, at the next tick of the coarse
/// clock (every 5 ms; it runs anyway, so the checks wake no thread of their own), if a call
/// queued before now is still in the queue (the queue is first in, first out: fewer calls
/// taken than pushed by now), another thread is woken (or started). While calls stay queued
/// the check comes again, so no call waits more than about 12 ms (2 ms, then up to two
/// ticks) behind busy threads while another could run it. No check is due when every thread
/// runs already: a thread parks only with the queue empty, so none could be woken.
fn check_for_stall(shared: &Arc<Shared>) {
    if shared.stall_check.load(Relaxed)
        || (shared.idle_count.load(SeqCst) == 0 && shared.spawned.load(SeqCst) >= shared.threads)
        || shared.stall_check.swap(true, SeqCst)
    {
        return;
    }
    HOOKED.call_once(|| crate::pool::on_tick(check_stalls));
    let armed = Armed {
        shared: Arc::downgrade(shared),
        at: Instant::now(),
        pushed: shared.pushed.load(SeqCst),
    };
    lock(&ARMED).push(armed);
}

/// The tick's part: makes the stall checks asked for at least [`STALL`] ago.
fn check_stalls() {
    let due: Vec<Armed> = {
        let mut armed = lock(&ARMED);
        if armed.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, young) = std::mem::take(&mut *armed)
            .into_iter()
            .partition(|a| now.saturating_duration_since(a.at) >= STALL);
        *armed = young;
        due
    };
    // Every due database may ask for a check again from here on, whatever happens to the
    // others' checks below (a check that unwinds must not leave its flag set with no check
    // armed: no check would ever be asked for again).
    let due: Vec<(Arc<Shared>, u64)> = due
        .into_iter()
        .filter_map(|check| {
            let shared = check.shared.upgrade()?;
            shared.stall_check.store(false, SeqCst);
            Some((shared, check.pushed))
        })
        .collect();
    for (shared, pushed) in due {
        if shared.jobs.is_empty() || shared.closed.load(SeqCst) {
            continue;
        }
        if shared.taken.load(SeqCst) < pushed
            && let Err(e) = wake_or_start(&shared)
        {
            tracing::warn!(db = %shared.db.info().name, error = %e, "a stall check started no reader thread");
        }
        check_for_stall(&shared);
    }
}

/// A new keeper for a thread of these readers, listed for `close`; `None` once they are
/// closed (`close` sets the mark before it empties the list, which this looks at under the
/// list's lock: a keeper opened meanwhile is closed here or by `close`).
fn open_keeper(shared: &Shared) -> Option<Arc<Keeper>> {
    if shared.closed.load(SeqCst) {
        return None;
    }
    let keeper = Keeper::open(shared.db.info(), shared.db.checkpoints(), true)?;
    let mut every = lock(&shared.every_keeper);
    if shared.closed.load(SeqCst) {
        drop(every);
        keeper.close();
        return None;
    }
    every.retain(|k| k.strong_count() > 0);
    every.push(Arc::downgrade(&keeper));
    Some(keeper)
}

/// A reader thread: runs calls until the readers close and the queue is empty.
fn serve(shared: &Shared) {
    let me = std::thread::current();
    let counters = &shared.db.info().counters;
    // Taken (or opened) after the first call since the thread woke: that call does not wait
    // for it. `wanted`: not looked for since.
    let mut keeper: Option<Arc<Keeper>> = None;
    let mut wanted = true;
    // Whether this thread watched the queue since its last call: once before each park.
    let mut watched = false;
    loop {
        if let Some(job) = shared.jobs.pop() {
            counters.async_read_queued.fetch_sub(1, Relaxed);
            shared.taken.fetch_add(1, Relaxed);
            if let Some(k) = keeper.as_ref()
                && !k.before_call()
            {
                keeper = None;
            }
            // The closure's panic is its caller's error (`ReadCall::run`); the caller's code
            // beyond it (a skipped closure's or an unawaited value's drop, an error
            // conversion, a waker) may panic here too: that call is lost, not the thread.
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job.run(&shared.db))) {
                tracing::error!(
                    db = %shared.db.info().name,
                    panic = %panic_message(&*panic),
                    "a caller's code panicked on an async reader thread outside its closure (a \
                     value's drop, an error conversion or a waker); that call is lost, the \
                     thread carries on"
                );
            }
            if std::mem::take(&mut wanted) {
                keeper = lock(&shared.keepers).pop().or_else(|| open_keeper(shared));
            }
            watched = false;
            continue;
        }
        if shared.closed.load(SeqCst) {
            // Closed here, before the thread ends: `close` may have looked for it already.
            if let Some(k) = keeper.take() {
                k.close();
            }
            shared.spawned.fetch_sub(1, SeqCst);
            return;
        }
        if !watched && !shared.spinning.swap(true, SeqCst) {
            watched = true;
            spin_until(Instant::now() + SPIN, || !shared.jobs.is_empty());
            shared.spinning.store(false, SeqCst);
            continue;
        }
        watched = false;
        if let Some(k) = keeper.take()
            && k.release()
        {
            let mut parked = lock(&shared.keepers);
            // `close` sets the mark before it empties the list: a keeper put there after
            // would never be closed by it, so it is closed here.
            if shared.closed.load(SeqCst) {
                drop(parked);
                k.close();
            } else {
                parked.push(k);
            }
        }
        wanted = true;
        {
            let mut idle = lock(&shared.idle);
            idle.push(me.clone());
            shared.idle_count.store(idle.len(), SeqCst);
        }
        fence(SeqCst);
        // A call pushed before this thread was on the list woke nobody: look once more.
        if shared.jobs.is_empty() && !shared.closed.load(SeqCst) {
            std::thread::park_timeout(IDLE_NAP);
        }
        // Woken by a call (which took this thread off the list), by `close`, or by the nap.
        let mut idle = lock(&shared.idle);
        idle.retain(|t| t.id() != me.id());
        shared.idle_count.store(idle.len(), SeqCst);
    }
}
