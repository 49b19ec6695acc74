//! The two-pass automatic checkpoint of a `write` whose commit left the WAL at or past
//! [`AUTOCHECKPOINT_FRAMES`](crate::wal::AUTOCHECKPOINT_FRAMES).
//!
//! A checkpoint spends most of its time in fsync, flushing the WAL. Run inside the lane (as
//! SQLite's own hook would run it, inside the commit), it stalls every queued writer for that
//! long. Run outside, it never catches up with writers that keep appending, so the WAL is
//! never emptied and restarted, and grows without bound. So the first pass runs on a
//! checkpointer thread, concurrently with the writers, and flushes and copies the bulk (see
//! [`Checkpoints::first_pass`]); the writer that started it returns at once. The next
//! writer that finds a checkpoint due runs the second pass inside the lane, where nothing
//! can be appended: it copies only what was written during the last of the first pass's
//! checkpoints and leaves the WAL fully copied, so the writer after it starts the WAL again
//! from the beginning.

use std::panic::Location;
#[cfg(test)]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use once_cell::sync::Lazy;
use rusqlite::Connection;
use scheduled_thread_pool::ScheduledThreadPool;

use crate::clock::deadline;
use crate::lane::LaneTurn;
use crate::pool::{DbInfo, PooledConnection};
use crate::sync::{lock, wait_timeout};
use crate::wal::{WAL_FRAMES_LIMIT, passive_checkpoint};

/// The threads that run first passes, apart from the pools' maintenance threads, so that a
/// slow disk delays neither connection opening nor the pools' sweeps.
static CHECKPOINTER: Lazy<ScheduledThreadPool> = Lazy::new(|| {
    ScheduledThreadPool::builder()
        .num_threads(2)
        .thread_name_pattern("hive-db-ckpt-{}")
        .build()
});

/// Frames a background pass may leave for the catch-up pass inside the lane.
const CATCH_UP_FRAMES: i64 = 100;
/// Background passes at most, before the catch-up pass is left to do the rest.
const FIRST_PASSES: usize = 8;

/// A read transaction the passes end before they copy: a lock keeper (`keeper.rs`).
pub(crate) trait LetGo: Send + Sync {
    /// Ends the hold, if any.
    fn let_go(&self);
}

/// Where a database's two-pass automatic checkpoint stands. Moves only forward: `Idle` to
/// `FirstPass` to `CatchUp` and back to `Idle`. Every move but the one out of `FirstPass` is
/// made inside the writer lane, and that one only by the job running the first pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Idle = 0,
    FirstPass = 1,
    CatchUp = 2,
}

/// How a first pass checks out its connection when a checkpointer thread takes it up: from
/// the database's pool, without waiting, and without keeping the database open.
pub(crate) type Checkout =
    Box<dyn Fn(&'static Location<'static>) -> Option<PooledConnection> + Send + Sync>;

/// One database's checkpoint state, shared with the job running its first pass.
pub(crate) struct Checkpoints {
    /// The database's facts; a writer waits for a first pass up to its `connection_timeout`.
    info: Arc<DbInfo>,
    step: AtomicU8,
    /// Guards the end of a first pass, so that a writer waiting for it misses no signal.
    lock: Mutex<()>,
    /// Signalled when a first pass ends.
    done: Condvar,
    /// A writer waited for the current first pass until its timeout: no other waits for it.
    overdue: AtomicBool,
    /// The WAL's frames when the last first pass last looked: a later commit that leaves no
    /// more has seen the WAL start again from the beginning since (frames only grow
    /// otherwise), and what the catch-up step would copy is then a whole new WAL.
    pass_frames: AtomicI64,
    /// Set once, as the database opens; a first pass without it is skipped (the catch-up
    /// step inside the lane then copies the WAL).
    checkout: OnceLock<Checkout>,
    /// The database's lock keepers (see `keeper.rs`), whose holds the passes end: each
    /// holds back what a checkpoint may copy.
    keepers: Mutex<Vec<Weak<dyn LetGo>>>,
    /// The catch-up pass is about to run: keepers take no hold until it is done.
    catching_up: AtomicBool,
    /// Runs at the start of each background checkpoint job (tests slow it down).
    #[cfg(test)]
    first_pass_hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Writers that waited for a background checkpoint pass.
    #[cfg(test)]
    first_pass_waits: AtomicU32,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("db", &self.info.name)
            .field("step", &self.step())
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    pub(crate) fn new(info: Arc<DbInfo>) -> Self {
        Self {
            info,
            step: AtomicU8::new(Step::Idle as u8),
            lock: Mutex::new(()),
            done: Condvar::new(),
            overdue: AtomicBool::new(false),
            pass_frames: AtomicI64::new(0),
            checkout: OnceLock::new(),
            keepers: Mutex::new(Vec::new()),
            catching_up: AtomicBool::new(false),
            #[cfg(test)]
            first_pass_hook: Mutex::new(None),
            #[cfg(test)]
            first_pass_waits: AtomicU32::new(0),
        }
    }

    /// Where first passes check out their connections (once; later calls change nothing).
    pub(crate) fn set_checkout(&self, checkout: Checkout) {
        let _ = self.checkout.set(checkout);
    }

    pub(crate) fn step(&self) -> Step {
        match self.step.load(Acquire) {
            1 => Step::FirstPass,
            2 => Step::CatchUp,
            _ => Step::Idle,
        }
    }

    fn set_step(&self, step: Step) {
        self.step.store(step as u8, Release);
    }

    /// The checkpoint due after a commit that left `wal_frames` frames in the WAL, run with
    /// the writer lane held by `turn`: starts the first pass in the background, or runs the
    /// catch-up pass here, or (if the first pass is still running) nothing. Passes the lane
    /// on when done with it; `conn` goes back to the pool when the pass that uses it ends.
    pub(crate) fn after_commit<P>(
        self: &Arc<Self>,
        conn: PooledConnection,
        turn: LaneTurn<'_, P>,
        wal_frames: i32,
    ) {
        let mut step = self.step();
        if step == Step::FirstPass && wal_frames >= WAL_FRAMES_LIMIT && !self.overdue.load(Relaxed)
        {
            // The writers outrun the background pass. Hold the lane, so nothing more is
            // appended, until it finishes; then catch up here. The WAL stays bounded, at the
            // cost of the writers queued meanwhile, as under SQLite's own checkpoint.
            step = self.wait_for_first_pass();
        }
        // A catch-up due on a WAL that started again since the first pass (the writes paused
        // while the pass copied everything, then a writer restarted it and filled it to the
        // threshold) would copy that whole WAL inside the lane, stalling every queued
        // writer: it is a new first pass's, in the background. Only a restart leaves a
        // commit with no more frames than the pass saw, so this never skips a real
        // catch-up, which is what restarts the WAL under a steady load.
        if step == Step::CatchUp && i64::from(wal_frames) <= self.pass_frames.load(Relaxed) {
            step = Step::Idle;
        }
        match step {
            Step::Idle => {
                self.set_step(Step::FirstPass);
                // Holds taken before would keep the pass from copying past them.
                self.let_keepers_go();
                // The write's connection goes back now, and the pass checks one out when a
                // checkpointer thread takes it up: carried with the job, it stayed out while
                // the job waited behind other databases' passes, and a pool of one served
                // nobody meanwhile.
                drop(conn);
                drop(turn);
                let this = Arc::clone(self);
                CHECKPOINTER.execute(move || {
                    let done = Arc::clone(&this);
                    // Even if the job unwinds, or finds no idle connection, the next due
                    // writer must find the catch-up step, or no `write` would checkpoint this
                    // database again.
                    let _next = crate::sync::defer(move || {
                        let _signal = lock(&done.lock);
                        done.set_step(Step::CatchUp);
                        done.overdue.store(false, Relaxed);
                        done.done.notify_all();
                    });
                    let site = Location::caller();
                    let Some(conn) = this.checkout.get().and_then(|checkout| checkout(site)) else {
                        tracing::debug!(db = %this.info.name,
                            "no idle connection for the background checkpoint; the next write catches up");
                        return;
                    };
                    #[cfg(test)]
                    if let Some(hook) = lock(&this.first_pass_hook).clone() {
                        hook();
                    }
                    this.first_pass(&conn);
                    drop(conn);
                });
            }
            Step::CatchUp => {
                // This pass leaves the WAL fully copied, so that the next writer starts it
                // again: a keeper's read transaction would stop it short of that.
                self.catching_up.store(true, SeqCst);
                // Lowered even if the pass unwinds: keepers would stand back for good.
                let _lowered = crate::sync::defer(|| self.catching_up.store(false, SeqCst));
                self.let_keepers_go();
                self.checkpoint(&conn);
                self.set_step(Step::Idle);
                drop(conn);
                drop(turn);
            }
            // The first pass is still running.
            Step::FirstPass => {
                drop(conn);
                drop(turn);
            }
        }
    }

    /// Whether readers' lock keepers must let go and take no hold: a first pass is copying
    /// the WAL, or the catch-up pass is about to.
    pub(crate) fn keepers_stand_back(&self) -> bool {
        self.step() == Step::FirstPass || self.catching_up.load(SeqCst)
    }

    /// Adds a lock keeper, whose holds the passes end.
    pub(crate) fn add_keeper(&self, keeper: Weak<dyn LetGo>) {
        let mut keepers = lock(&self.keepers);
        keepers.retain(|k| k.strong_count() > 0);
        keepers.push(keeper);
    }

    /// Ends every keeper's hold, each under its own lock: a keeper taking a hold meanwhile
    /// finishes first (and is let go), and one that takes the lock after sees the step or
    /// the flag set before this was called, and takes none.
    fn let_keepers_go(&self) {
        let keepers: Vec<Arc<dyn LetGo>> = lock(&self.keepers)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for keeper in keepers {
            keeper.let_go();
        }
    }

    /// Waits, for at most `patience`, until the first pass has finished; returns the step it
    /// leaves. If the pass is not done by then, no writer waits for it again until it is: the
    /// writers go on, and the WAL grows past the limit for that while.
    fn wait_for_first_pass(&self) -> Step {
        #[cfg(test)]
        self.first_pass_waits.fetch_add(1, Relaxed);
        let deadline = deadline(Instant::now(), self.info.config.connection_timeout);
        let mut signal = lock(&self.lock);
        loop {
            let step = self.step();
            if step != Step::FirstPass {
                return step;
            }
            let now = Instant::now();
            if now >= deadline {
                self.overdue.store(true, Relaxed);
                tracing::warn!(db = %self.info.name,
                    "the background checkpoint is slower than the writers; they go on meanwhile");
                return step;
            }
            signal = wait_timeout(&self.done, signal, deadline - now);
        }
    }

    /// The first, background pass: passive checkpoints, repeated while the writers appended
    /// more than [`CATCH_UP_FRAMES`] during the previous one, so the pass inside the lane
    /// stays short.
    fn first_pass(&self, conn: &Connection) {
        let mut copied_before = None;
        for _ in 0..FIRST_PASSES {
            let Some((copied, wal_frames)) = self.checkpoint(conn) else {
                return;
            };
            self.pass_frames.store(wal_frames, Relaxed);
            // Frames this pass copied (none if a writer restarted the WAL meanwhile).
            if copied_before
                .is_some_and(|before: i64| copied.saturating_sub(before) <= CATCH_UP_FRAMES)
            {
                return;
            }
            copied_before = Some(copied);
        }
    }

    /// One passive checkpoint, counted. Returns how many of the WAL's frames have been copied
    /// and how many it holds (see [`crate::wal::Checkpointed`]), or `None` if it failed.
    fn checkpoint(&self, conn: &Connection) -> Option<(i64, i64)> {
        match passive_checkpoint(conn) {
            Ok(done) => {
                self.info.counters.checkpoints.fetch_add(1, Relaxed);
                tracing::trace!(db = %self.info.name, busy = done.busy, wal_frames = done.wal_frames,
                    copied = done.copied, "checkpoint");
                Some((done.copied, done.wal_frames))
            }
            Err(e) => {
                tracing::debug!(db = %self.info.name, error = %e, "checkpoint failed");
                None
            }
        }
    }

    /// Makes each background pass run `hook` first.
    #[cfg(test)]
    pub(crate) fn set_first_pass_hook(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.first_pass_hook) = Some(hook);
    }

    /// Writers that waited for a background pass so far.
    #[cfg(test)]
    pub(crate) fn first_pass_waits(&self) -> u32 {
        self.first_pass_waits.load(Relaxed)
    }
}
