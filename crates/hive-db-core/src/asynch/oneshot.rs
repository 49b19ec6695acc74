//! The one-shot reply of an async call: the [`DbFuture`] the caller awaits, and the
//! [`Reply`] the database's thread fills. It also keeps the call's phase, which is what the
//! cancellation contract is written in: a future dropped while its call is queued marks the
//! call skipped; dropped once it has started, the call runs to its end.
//!
//! A mutex per call rather than atomics: the caller polls it a few times, the thread touches
//! it twice, and nobody else waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use crate::error::{Error, Result};
use crate::name::DbName;
use crate::stats::DbCounters;
use crate::sync::lock;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the database's thread.
    Queued,
    /// Its work is running (or about to, a writer holding its turn in the lane).
    Started,
    /// The reply is in, or the replying side is gone.
    Done,
    /// The future was dropped before the work started: skip it.
    Skipped,
    /// The future was dropped while the work ran: nobody takes the reply.
    Abandoned,
    /// The call's deadline passed while it was queued, behind work its thread was running:
    /// its error is in, and the work is skipped.
    Expired,
}

#[derive(Debug)]
struct State<T> {
    phase: Phase,
    value: Option<T>,
    waker: Option<Waker>,
    /// The reply was dropped unsent while its thread unwound: a panic in the caller's code
    /// outside the closure (see [`Reply`]'s `Drop`).
    unwound: bool,
}

/// What the future and the reply share.
#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    db: DbName,
    /// `"read"` or `"write"`, for the error of a call lost to a panic.
    op: &'static str,
    counters: Arc<DbCounters>,
    /// Unparked when the future is dropped while queued, so a thread watching queued calls
    /// (the async writer, whose calls hold places in the writer lane) lets the place go soon.
    watcher: Option<Thread>,
}

/// The future of an async call of the registry (cargo feature `async`): resolves to what the
/// call's closure returned, or to the error that kept it from running.
///
/// Runs on any executor: it needs no runtime, only a waker, and never blocks the thread
/// that polls it. One ready at its call (an inline read, an error known at once) still
/// yields to its executor once in every 32 on a thread, so a loop of them cannot keep the
/// thread from its other tasks. The call is sent to the database's threads when it is made, not when the
/// future is first polled, so calls keep the order in which they were made.
///
/// Dropping it cancels the call, as far as that is safe:
/// - before the call's work started, the work is skipped (counted in
///   `totals.async_cancelled_before_start`): a write leaves its place in the writer lane;
/// - once it started, the work runs to its end and commits or rolls back as it would have
///   (counted in `totals.async_cancelled_after_start`); a group-commit transaction is never
///   cut short, and no connection or lane is left held.
#[must_use = "the call's result is lost unless the future is awaited; dropping it cancels the \
              call if its work has not started"]
pub struct DbFuture<T, E = Error> {
    inner: Inner<Result<T, E>>,
}

#[derive(Debug)]
enum Inner<T> {
    /// Known at the call: an error, or an inline read's result. `None` once taken.
    Ready(Option<T>),
    Waiting(Arc<Shared<T>>),
}

impl<T, E> std::fmt::Debug for DbFuture<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.inner {
            Inner::Ready(Some(_)) => "ready",
            Inner::Ready(None) => "taken",
            Inner::Waiting(_) => "waiting",
        };
        f.debug_struct("DbFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The replying side of a call, held by the database's thread with the call's closure.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    shared: Arc<Shared<T>>,
    sent: bool,
}

impl<T, E> DbFuture<T, E> {
    /// A future already resolved to `value`.
    pub(crate) fn ready(value: Result<T, E>) -> Self {
        Self {
            inner: Inner::Ready(Some(value)),
        }
    }
}

impl<T, E: From<Error>> DbFuture<T, E> {
    /// A future for a call (`op`, `"read"` or `"write"`) of database `db`, and the reply its
    /// thread fills. `watcher` is unparked if the future is dropped while the call is queued.
    pub(crate) fn new(
        db: &DbName,
        op: &'static str,
        counters: &Arc<DbCounters>,
        watcher: Option<Thread>,
    ) -> (Self, Reply<Result<T, E>>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                phase: Phase::Queued,
                value: None,
                waker: None,
                unwound: false,
            }),
            db: db.clone(),
            op,
            counters: Arc::clone(counters),
            watcher,
        });
        let reply = Reply {
            shared: Arc::clone(&shared),
            sent: false,
        };
        (
            Self {
                inner: Inner::Waiting(shared),
            },
            reply,
        )
    }
}

/// How many futures ready at their call a thread resolves in a row before one yields.
const READY_BUDGET: u32 = 32;

thread_local! {
    static READY_LEFT: std::cell::Cell<u32> = const { std::cell::Cell::new(READY_BUDGET) };
}

/// Takes one from this thread's budget of ready futures; `false` (and a new budget) when it
/// is spent: the caller yields once.
fn spend_ready_budget() -> bool {
    READY_LEFT.with(|left| match left.get() {
        0 => {
            left.set(READY_BUDGET);
            false
        }
        n => {
            left.set(n - 1);
            true
        }
    })
}

// The result is only ever moved out, never pinned in place.
impl<T, E> Unpin for DbFuture<T, E> {}

impl<T, E: From<Error>> Future for DbFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.inner {
            // Polled again after it resolved, which `Future` leaves open: it stays pending.
            Inner::Ready(None) => Poll::Pending,
            Inner::Ready(value) => {
                if !spend_ready_budget() {
                    // A loop of calls ready at once (inline reads) would never give its
                    // executor thread back; so every so often, one yields first.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                value.take().map_or(Poll::Pending, Poll::Ready)
            }
            Inner::Waiting(shared) => {
                let mut state = lock(&shared.state);
                if let Some(value) = state.value.take() {
                    drop(state);
                    this.inner = Inner::Ready(None);
                    return Poll::Ready(value);
                }
                if state.phase == Phase::Done {
                    // The replying side went without a reply: its database was closed, or
                    // the caller's code panicked on the database's thread.
                    let db = shared.db.clone();
                    let err = match state.unwound {
                        false => Error::Closed { db },
                        true => Error::Panicked {
                            db,
                            op: shared.op,
                            message: LOST_TO_A_PANIC.to_owned(),
                        },
                    };
                    drop(state);
                    this.inner = Inner::Ready(None);
                    return Poll::Ready(Err(err.into()));
                }
                match &mut state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<T, E> Drop for DbFuture<T, E> {
    fn drop(&mut self) {
        let Inner::Waiting(shared) = &self.inner else {
            return;
        };
        let mut state = lock(&shared.state);
        match state.phase {
            Phase::Queued => {
                state.phase = Phase::Skipped;
                drop(state);
                let counters = &shared.counters;
                counters.async_cancelled_before_start.fetch_add(1, Relaxed);
                if let Some(watcher) = &shared.watcher {
                    watcher.unpark();
                }
            }
            Phase::Started => {
                state.phase = Phase::Abandoned;
                drop(state);
                let counters = &shared.counters;
                counters.async_cancelled_after_start.fetch_add(1, Relaxed);
            }
            Phase::Done | Phase::Skipped | Phase::Abandoned | Phase::Expired => {}
        }
    }
}

impl<T> Reply<T> {
    /// Marks the call started, unless its future was dropped: then `false`, and the work is
    /// to be skipped.
    pub(crate) fn start(&self) -> bool {
        let mut state = lock(&self.shared.state);
        match state.phase {
            Phase::Queued => {
                state.phase = Phase::Started;
                true
            }
            Phase::Skipped => false,
            // Started once already: a writer's call starts when its turn comes, and may be
            // asked again; any other phase means the work is not to run (again).
            Phase::Started => true,
            Phase::Done | Phase::Abandoned | Phase::Expired => false,
        }
    }

    /// True when the work is not to run: its future was dropped, or it expired, before the
    /// work started.
    pub(crate) fn is_skipped(&self) -> bool {
        matches!(
            lock(&self.shared.state).phase,
            Phase::Skipped | Phase::Expired
        )
    }

    /// Resolves the future to `value` (its timeout) if the work has not started, and marks
    /// the work to be skipped; `false`, changing nothing, once it has started (or the
    /// future is gone).
    pub(crate) fn expire(&self, value: T) -> bool {
        let waker = {
            let mut state = lock(&self.shared.state);
            if state.phase != Phase::Queued {
                return false;
            }
            state.phase = Phase::Expired;
            state.value = Some(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Hands the result to the future and wakes it; dropped if nobody waits for it.
    pub(crate) fn send(mut self, value: T) {
        self.sent = true;
        let waker = {
            let mut state = lock(&self.shared.state);
            if matches!(
                state.phase,
                Phase::Skipped | Phase::Abandoned | Phase::Expired
            ) {
                return;
            }
            state.phase = Phase::Done;
            state.value = Some(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The message of [`Error::Panicked`] for a call whose reply was lost to a panic outside its
/// closure.
const LOST_TO_A_PANIC: &str = "the caller's code panicked on the database's thread outside \
                               the closure (a value's drop, an error conversion or a waker)";

impl<T> Drop for Reply<T> {
    /// A reply dropped unsent still wakes the future, which then resolves to
    /// `Error::Closed` (its database closed, its thread gone), or to `Error::Panicked` when
    /// it was dropped by a panic unwinding its thread.
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        let waker = {
            let mut state = lock(&self.shared.state);
            if matches!(
                state.phase,
                Phase::Skipped | Phase::Abandoned | Phase::Expired
            ) {
                return;
            }
            state.phase = Phase::Done;
            state.unwound = std::thread::panicking();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
