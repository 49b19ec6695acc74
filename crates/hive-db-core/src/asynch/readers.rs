//! A database's reader threads: async reads wait in one bounded queue and run on the first
//! idle thread, through the same `Database::read_with` as sync reads.
//!
//! Threads start on demand, up to the configured number (at most one per connection: a
//! thread holds one connection while it reads, so more would only wait for the pool). An
//! idle thread parks; a new call wakes the one that parked last (its caches are the warmest).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use crate::asynch::call::ReadJob;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::sync::lock;

/// How long an idle reader thread sleeps before it looks at its state again by itself; a
/// new call or `close` wakes it sooner.
const IDLE_NAP: Duration = Duration::from_secs(1);

/// How long a reader thread that ran out of calls watches the queue before it parks: a call
/// that comes meanwhile costs no wake-up. One thread at a time does.
const SPIN: Duration = Duration::from_micros(100);

#[derive(Default)]
struct State {
    jobs: VecDeque<Box<dyn ReadJob>>,
    idle: Vec<Thread>,
    spawned: usize,
    closed: bool,
    /// A thread is watching the queue before it parks: it takes the next call itself.
    spinning: bool,
}

struct Shared {
    db: Arc<Database>,
    state: Mutex<State>,
    capacity: usize,
    threads: usize,
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
    /// Reader threads for `db`: at most `threads` of them, and `capacity` calls queued.
    pub(crate) fn new(db: Arc<Database>, threads: usize, capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                db,
                state: Mutex::new(State::default()),
                capacity,
                threads,
            }),
        }
    }

    /// Queues `job` for the next idle reader thread, starting one if none is idle and fewer
    /// than the maximum run.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::QueueFull`], or [`Error::Io`] when no reader thread can be
    /// started at all.
    pub(crate) fn submit(&self, job: Box<dyn ReadJob>) -> Result<()> {
        let shared = &self.shared;
        let info = shared.db.info();
        let (wake, spawn) = {
            let mut state = lock(&shared.state);
            if state.closed {
                return Err(Error::Closed {
                    db: info.name.clone(),
                });
            }
            if state.jobs.len() >= shared.capacity {
                info.counters.async_queue_full.fetch_add(1, Relaxed);
                return Err(Error::QueueFull {
                    db: info.name.clone(),
                    queue: "read",
                    capacity: shared.capacity,
                });
            }
            state.jobs.push_back(job);
            info.counters.async_read_queued.fetch_add(1, Relaxed);
            // The spinning thread takes the first call; any more need a thread woken.
            let taken = state.spinning && state.jobs.len() == 1;
            let wake = if taken { None } else { state.idle.pop() };
            let spawn = !taken && wake.is_none() && state.spawned < shared.threads;
            if spawn {
                state.spawned += 1;
            }
            (wake, spawn)
        };
        if let Some(thread) = wake {
            thread.unpark();
        } else if spawn {
            self.spawn()?;
        }
        Ok(())
    }

    fn spawn(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let info = self.shared.db.info();
        let spawned = std::thread::Builder::new()
            .name(format!("hive-db-read-{}", info.name))
            .spawn(move || serve(&shared));
        if let Err(source) = spawned {
            let mut state = lock(&self.shared.state);
            state.spawned -= 1;
            tracing::warn!(db = %info.name, error = %source, "starting a reader thread failed");
            // With another thread running the call still runs; with none it never would.
            if state.spawned == 0 {
                let stranded = state.jobs.len() as u64;
                state.jobs.clear();
                info.counters.async_read_queued.fetch_sub(stranded, Relaxed);
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

    /// Refuses new calls, fails the queued ones with `Error::Closed` (their futures wake),
    /// and ends the threads once their running calls are done.
    pub(crate) fn close(&self) {
        let (idle, queued) = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            let queued = std::mem::take(&mut state.jobs);
            let counters = &self.shared.db.info().counters;
            counters
                .async_read_queued
                .fetch_sub(queued.len() as u64, Relaxed);
            (std::mem::take(&mut state.idle), queued)
        };
        // Each unsent reply resolves its future to `Error::Closed`.
        drop(queued);
        for thread in idle {
            thread.unpark();
        }
    }
}

/// A reader thread: runs calls until the readers close and the queue is empty.
fn serve(shared: &Shared) {
    let me = std::thread::current();
    let counters = &shared.db.info().counters;
    loop {
        let job = {
            let mut state = lock(&shared.state);
            let mut spun = false;
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    counters.async_read_queued.fetch_sub(1, Relaxed);
                    break job;
                }
                if state.closed {
                    state.spawned -= 1;
                    return;
                }
                if !spun && !state.spinning {
                    spun = true;
                    state.spinning = true;
                    drop(state);
                    watch(&counters.async_read_queued);
                    state = lock(&shared.state);
                    state.spinning = false;
                    continue;
                }
                state.idle.push(me.clone());
                drop(state);
                std::thread::park_timeout(IDLE_NAP);
                state = lock(&shared.state);
                // Woken by a call (which took this thread off the list) or by the timeout.
                state.idle.retain(|t| t.id() != me.id());
            }
        };
        job.run(&shared.db);
    }
}

/// Spins until a call is queued or [`SPIN`] passes, letting other threads run now and then
/// (two cores, more threads).
fn watch(queued: &std::sync::atomic::AtomicU64) {
    let until = std::time::Instant::now() + SPIN;
    let mut spins = 0_u32;
    while queued.load(Relaxed) == 0 {
        std::hint::spin_loop();
        spins += 1;
        if spins.is_multiple_of(64) {
            if std::time::Instant::now() >= until {
                return;
            }
            std::thread::yield_now();
        }
    }
}
