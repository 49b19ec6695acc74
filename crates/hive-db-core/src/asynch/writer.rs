//! A database's async writer: one thread that serves every async write of the database in
//! the same writer lane as the sync writes.
//!
//! A call takes its place in the lane when it is made, under the writer's queue lock, so the
//! queue holds the calls in the order of their places: the lane grants them in that order,
//! interleaved with sync writers by arrival. The thread watches the front call's place; when
//! the lane is granted to it (with the open batch of the writer before, or free), it runs the
//! closure through `Database::write_in_turn`, the sync writes' own path: the closure in the
//! shared transaction (in a savepoint when others' work is before it), then pass or commit.
//! The next place is often its own, so async writers queued together share one transaction
//! as sync ones do. A call's value waits for its transaction's commit in a commit slot; the
//! thread settles those as they are settled (whoever commits unparks it) and never blocks on
//! one. Out of calls, it watches the queue
//! for [`SPIN`] before it parks, so a task that writes again at once needs no wake-up.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Once, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::asynch::call::{AwaitingCommit, WriteJob};
use crate::batch::Batch;
use crate::clock::deadline;
use crate::database::{Acquired, Database};
use crate::error::{Error, Result};
use crate::lane::{Queued, spin_until};
use crate::sync::{lock, panic_message};

/// How long the idle thread sleeps before it looks at its state again by itself.
const IDLE_NAP: Duration = Duration::from_secs(1);

/// How long the thread, having run out of calls, watches for the next one before it parks:
/// a task that writes again as soon as its write returns needs no wake-up.
const SPIN: Duration = Duration::from_micros(100);

/// A call waiting for its turn, holding its place in the lane.
struct Entry {
    job: Box<dyn WriteJob>,
    place: Queued<Batch>,
    start: Instant,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    closed: bool,
}

struct Shared {
    db: Arc<Database>,
    state: Mutex<State>,
    /// Calls queued (`state.queue`'s length), for the idle thread to watch without the lock.
    queued: AtomicUsize,
    capacity: usize,
}

/// The async writer of one database.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Thread,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("db", &self.shared.db.info().name)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread of `db`, with room for `capacity` calls not started yet.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the thread cannot be started.
    pub(crate) fn start(db: Arc<Database>, capacity: usize) -> Result<Self> {
        let shared = Arc::new(Shared {
            db,
            state: Mutex::new(State::default()),
            queued: AtomicUsize::new(0),
            capacity,
        });
        let info = shared.db.info();
        let serving = Arc::clone(&shared);
        HOOKED.call_once(|| crate::pool::on_tick(expire_queued));
        lock(&WRITERS).push(Arc::downgrade(&shared));
        let handle = std::thread::Builder::new()
            .name(format!("hive-db-write-{}", info.name))
            .spawn(move || serve(&serving))
            .map_err(|source| Error::Io {
                db: info.name.clone(),
                op: "start the async writer thread for",
                path: info.path.clone(),
                source,
            })?;
        Ok(Self {
            thread: handle.thread().clone(),
            shared,
        })
    }

    /// The thread to unpark when a queued call's future is dropped.
    pub(crate) fn thread(&self) -> &Thread {
        &self.thread
    }

    /// Queues `job`, taking its place in the writer lane now.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] or [`Error::QueueFull`].
    pub(crate) fn submit(&self, job: Box<dyn WriteJob>) -> Result<()> {
        let shared = &self.shared;
        let info = shared.db.info();
        let granted = {
            let mut state = lock(&shared.state);
            if state.closed {
                return Err(Error::Closed {
                    db: info.name.clone(),
                });
            }
            if state.queue.len() >= shared.capacity {
                info.counters.async_queue_full.fetch_add(1, Relaxed);
                return Err(Error::QueueFull {
                    db: info.name.clone(),
                    queue: "write",
                    capacity: shared.capacity,
                });
            }
            let start = Instant::now();
            let place = shared.db.lane().enqueue(self.thread.clone());
            let granted = place.is_granted();
            state.queue.push_back(Entry {
                job,
                place,
                start,
                deadline: deadline(start, info.config.connection_timeout),
            });
            shared.queued.store(state.queue.len(), Relaxed);
            info.counters.async_write_queued.fetch_add(1, Relaxed);
            granted
        };
        // A place granted at once was free: the lane had no holder to wake the thread.
        if granted {
            self.thread.unpark();
        }
        Ok(())
    }

    /// Refuses new calls and fails those not started with `Error::Closed` at once (their
    /// futures wake), here: the thread may be inside a long closure, or waiting for a
    /// connection, and would reach them only after it. Each gives up its place in the lane
    /// (a turn granted meanwhile passes on, with any batch it carries). The thread ends once
    /// the call it runs is done and the commits it waits for are settled.
    pub(crate) fn close(&self) {
        let db = &*self.shared.db;
        let queued = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            self.shared.queued.store(0, Relaxed);
            std::mem::take(&mut state.queue)
        };
        for Entry { job, place, .. } in queued {
            db.info().counters.async_write_queued.fetch_sub(1, Relaxed);
            pass_on(db, db.lane().withdraw(place));
            // Its reply, dropped unsent, resolves the future to `Error::Closed`. The
            // closure's drop is the caller's code: a panic in it loses only that call.
            if catch_unwind(AssertUnwindSafe(|| drop(job))).is_err() {
                tracing::error!(db = %db.info().name, "a queued async write's closure panicked as it was dropped at close");
            }
        }
        self.thread.unpark();
    }
}

/// The writer thread: serves the front call's turn until the writer closes and nothing is
/// left to serve or settle.
///
/// Callers' code runs here outside their closures too, where nothing else catches a panic:
/// the drop of a skipped call's closure and of a value nobody awaits any more, a caller's
/// error conversion, a waker. A panic there loses only the call it came from (its future
/// resolves to [`Error::Closed`], its reply dropped unsent; its turn and any open batch are
/// passed on as the unwinding drops them); the thread logs it and carries on serving the
/// others. Dead, it would leave its places in the lane granted and unused for good, and
/// with them every writer of the database.
fn serve(shared: &Shared) {
    let mut awaiting: Vec<AwaitingCommit> = Vec::new();
    loop {
        match catch_unwind(AssertUnwindSafe(|| serve_calls(shared, &mut awaiting))) {
            Ok(()) => return,
            Err(panic) => tracing::error!(
                db = %shared.db.info().name,
                panic = %panic_message(&*panic),
                "a caller's code panicked on the async writer thread outside its closure (a \
                 value's drop, an error conversion or a waker); that call is lost, the \
                 thread carries on"
            ),
        }
    }
}

/// [`serve`]'s loop, left by unwinding or when the writer is closed and done.
fn serve_calls(shared: &Shared, awaiting: &mut Vec<AwaitingCommit>) {
    let db = &*shared.db;
    let counters = &db.info().counters;
    // Whether the thread has watched for calls since it last ran out of them.
    let mut watched = false;
    loop {
        settle(awaiting);
        let mut state = lock(&shared.state);
        let popped = state.queue.pop_front();
        shared.queued.store(state.queue.len(), Relaxed);
        let Some(Entry {
            job,
            place,
            start,
            deadline,
        }) = popped
        else {
            if state.closed && awaiting.is_empty() {
                return;
            }
            let closed = state.closed;
            drop(state);
            // Not while calls wait for a commit another thread makes: its unpark must end
            // the wait at once, and the watch sees only new calls.
            if !(watched || closed || !awaiting.is_empty()) {
                watched = true;
                // A call meanwhile also leaves an unpark behind: the park below returns at
                // once if this missed one.
                spin_until(Instant::now() + SPIN, || shared.queued.load(Relaxed) > 0);
                continue;
            }
            // Woken by a call, a commit, or close.
            std::thread::park_timeout(IDLE_NAP);
            continue;
        };
        watched = false;
        let closed = state.closed;
        let place = match place.try_take(db.lane()) {
            Ok(acquired) => {
                counters.async_write_queued.fetch_sub(1, Relaxed);
                drop(state);
                turn(db, job, start, deadline, Ok(acquired), awaiting);
                continue;
            }
            Err(place) => place,
        };
        let now = Instant::now();
        if !(closed || job.is_skipped() || now >= deadline) {
            state.queue.push_front(Entry {
                job,
                place,
                start,
                deadline,
            });
            shared.queued.store(state.queue.len(), Relaxed);
            drop(state);
            // Woken when the place is granted or comes to the front, by a commit, by a
            // dropped future, or by close.
            std::thread::park_timeout(deadline - now);
            continue;
        }
        counters.async_write_queued.fetch_sub(1, Relaxed);
        drop(state);
        let acquired = db.lane().withdraw(place);
        if closed {
            // The call never started; its reply, dropped unsent, wakes it with `Closed`.
            pass_on(db, acquired);
            drop(job);
        } else {
            // Skipped, or out of time: `turn` passes the lane on, or reports the timeout
            // (unless the lane came round meanwhile: then it runs).
            turn(db, job, start, deadline, acquired, awaiting);
        }
    }
}

/// Every async writer of the process, for the tick's look at its queued calls' deadlines.
static WRITERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Hooks [`expire_queued`] onto the coarse clock's tick, once per process.
static HOOKED: Once = Once::new();

/// The tick's part (every 5 ms): each queued call whose deadline has passed resolves to
/// [`Error::WriterLaneTimeout`] (counted in `writer_timeouts`), as a sync writer's wait ends
/// at its deadline. The writer thread does that itself for the call at the front while it
/// waits for the lane; this covers the calls behind the work the thread runs meanwhile (a
/// closure of its own, a lent one, a commit waiting for a checkpoint), which would
/// otherwise wait for as long as that work. An expired call keeps its place in the lane
/// until the thread reaches it and gives the place up unused, as a dropped future's.
fn expire_queued() {
    let writers: Vec<Arc<Shared>> = {
        let mut writers = lock(&WRITERS);
        writers.retain(|w| w.strong_count() > 0);
        writers.iter().filter_map(Weak::upgrade).collect()
    };
    let now = Instant::now();
    for shared in &writers {
        if shared.queued.load(Relaxed) == 0 {
            continue;
        }
        let db = &shared.db;
        let state = lock(&shared.state);
        // Deadlines grow along the queue: each is its call's time in `submit` plus the
        // database's one timeout.
        for entry in state.queue.iter().take_while(|e| e.deadline <= now) {
            let timeout = Error::WriterLaneTimeout {
                db: db.info().name.clone(),
                waited: entry.start.elapsed(),
                queued: db.lane().queued(),
            };
            // The caller's error conversion runs here: a panic in it loses only its call.
            if catch_unwind(AssertUnwindSafe(|| entry.job.expire(timeout))).unwrap_or(false) {
                db.info().counters.writer_timeouts.fetch_add(1, Relaxed);
            }
        }
    }
    // A writer whose last other owner let go meanwhile is dropped (its database with it,
    // perhaps) on a maintenance thread, not on the clock's.
    let last: Vec<Arc<Shared>> = writers
        .into_iter()
        .filter(|w| Arc::strong_count(w) == 1)
        .collect();
    if !last.is_empty() {
        crate::pool::in_background(move || drop(last));
    }
}

/// Serves one call's turn: runs it, unless its future was dropped before (then the lane
/// passes on untouched).
fn turn(
    db: &Database,
    job: Box<dyn WriteJob>,
    start: Instant,
    deadline: Instant,
    acquired: Acquired<'_>,
    awaiting: &mut Vec<AwaitingCommit>,
) {
    if !job.start() {
        pass_on(db, acquired);
        return;
    }
    if let Some(waiting) = job.run(db, start, deadline, acquired) {
        awaiting.push(waiting);
    }
}

/// Gives up a turn not used: the batch it carries goes on (or commits), the lane passes on.
fn pass_on(db: &Database, acquired: Acquired<'_>) {
    match acquired {
        Ok((turn, Some(batch))) => db.end_turn(batch, turn),
        Ok((turn, None)) => drop(turn),
        Err(_) => {}
    }
}

/// Replies to the calls whose transaction's commit has been settled.
fn settle(awaiting: &mut Vec<AwaitingCommit>) {
    let mut i = 0;
    while i < awaiting.len() {
        match awaiting[i].slot.try_take() {
            Some(outcome) => {
                let call = awaiting.swap_remove(i);
                (call.done)(outcome);
            }
            None => i += 1,
        }
    }
}
