//! The writer lane: one writer per database at a time, the rest queued in FIFO order in
//! process, so writers wait their turn instead of sleeping and retrying in SQLite's busy
//! handler.
//!
//! The lane is handed directly to the oldest waiter, so a newcomer can never overtake the
//! queue. A hand-off to a sleeping thread costs a wake-up (several microseconds, far more on
//! a busy machine), so the waiter at the front of the queue spins briefly instead of sleeping:
//! it is woken early, as soon as it becomes the front, and is usually ready on another core
//! when the lane comes free.
//!
//! A holder may also pass the lane on *with a payload* (the pool's open group-commit
//! transaction) to the next waiter, if that waiter takes payloads; see [`LaneTurn::pass`].
//!
//! Or the holder may run the next waiter's work itself (flat combining): a waiter that joins
//! with [`WriterLane::offer`] lends the lane a closure on its own stack, and the holder takes
//! it with [`LaneTurn::claim`] and runs it on the holder's thread with the payload, without
//! handing anything over; the waiter only wakes when its work is done. A hand-off costs a
//! wake-up and a context switch per writer; on two cores, the threads that switch in and out
//! also keep the next writers from queueing, so batches stay small. Running the queued
//! closures back to back on one thread lets the other core bring the next writers in.
//!
//! Lending a closure from one thread's stack to another is the one `unsafe` part of the
//! crate, and it is all here: see [`Lent`] for why it is sound.
//!
//! The lane's mutex guards only the queue. A waiter sleeps with `thread::park` and watches
//! its own flags, so a hand-off never makes the new holder take the mutex again, and the
//! wake-ups happen after the mutex is released.
//!
//! (Over 900 lines: about 380 are the unit tests of the hand-off and lending protocols,
//! kept next to them. The lending is a second idea in this file because it lives inside the
//! queue's protocol: a job is claimed, granted or withdrawn under the same mutex.)

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How long the front waiter spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// How long a waiter whose job is running sleeps before it looks again by itself (it is woken
/// when the job is done; this only bounds a lost wake-up).
const CLAIMED_NAP: Duration = Duration::from_millis(100);

/// How [`WriterLane::offer`] ended: the lane came to this thread (with the previous holder's
/// payload, if any), or a holder ran the lent job.
#[derive(Debug)]
pub(crate) enum Offered<'a, P> {
    Turn(LaneTurn<'a, P>, Option<P>),
    Ran,
}

/// The work a waiter lends with [`WriterLane::offer`]: it runs with the holder's payload and
/// returns whether its waiter must be woken now (false when something else wakes it later).
pub(crate) type Job<'a, P> = dyn FnMut(&mut P) -> bool + Send + 'a;

/// A waiter's [`Job`], lent to the holder's thread for the time the waiter waits.
///
/// The pointer's lifetime is erased, as `std::thread::scope` erases its closures': the job
/// lives on the stack of the waiter's [`WriterLane::offer`], which does not return while the
/// job may still run. A job is run at most once, by the one holder that claimed it under the
/// lane's mutex (`claimed` is set there, and the waiter is taken out of the queue then). From
/// then on `offer` waits for `done`, with no deadline, and `done` is set only after the call
/// returned or unwound. A waiter not claimed leaves the queue under the same mutex before
/// `offer` returns, so no holder can claim it afterwards. The job is `Send`, so calling it
/// from the holder's thread is allowed; it is never called from two threads.
struct Lent<P>(NonNull<Job<'static, P>>);

// SAFETY: the pointee is `Send`, and only the one thread that claimed the job dereferences the
// pointer (see `Lent`); other threads only move or drop the pointer itself.
#[allow(unsafe_code)]
unsafe impl<P> Send for Lent<P> {}
// SAFETY: as above; a shared `Lent` gives no access to the job.
#[allow(unsafe_code)]
unsafe impl<P> Sync for Lent<P> {}

impl<P> Lent<P> {
    fn new(job: &mut Job<'_, P>) -> Self {
        let ptr: NonNull<Job<'_, P>> = NonNull::from(job);
        // SAFETY: only the lifetime changes (the two fat pointer types differ in nothing
        // else); `Lent` explains why the job outlives every use of the pointer.
        #[allow(unsafe_code)]
        let ptr =
            unsafe { std::mem::transmute::<NonNull<Job<'_, P>>, NonNull<Job<'static, P>>>(ptr) };
        Self(ptr)
    }
}

impl<P> std::fmt::Debug for Lent<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lent")
    }
}

/// A queued writer's place.
#[derive(Debug)]
struct Waiter<P> {
    thread: Thread,
    /// Set, under the lane's mutex, when the lane is handed to this waiter.
    granted: AtomicBool,
    /// Set, under the lane's mutex, when this waiter becomes the front of the queue.
    front: AtomicBool,
    /// Whether this waiter can be handed a payload with the lane.
    takes_payload: bool,
    /// The payload handed over with the lane, if any; filled before `granted` is set.
    payload: Mutex<Option<P>>,
    /// The work this waiter lent, for the holder to run instead of handing the lane over.
    job: Option<Lent<P>>,
    /// Set, under the lane's mutex, when a holder took the job (and this waiter out of the
    /// queue).
    claimed: AtomicBool,
    /// Set once the claimed job has returned or unwound.
    done: AtomicBool,
    /// Set, under the lane's mutex, when the lane was left free with this waiter, which lent
    /// a job, at the front: it may take the lane, unless a newcomer does first.
    nudged: AtomicBool,
    /// Set, under the lane's mutex, when a newcomer took the lane left free with this waiter
    /// at the front. The next holder to let the lane go hands it to this waiter rather than
    /// leave it free again: a newcomer whose batch cannot take this waiter's job (one writer
    /// a transaction, a full or old batch, a nested write, the health probe) would otherwise
    /// overtake it again and again, hundreds of times, until its deadline.
    overtaken: AtomicBool,
}

impl<P> Waiter<P> {
    fn new(
        thread: Thread,
        granted: bool,
        front: bool,
        takes_payload: bool,
        job: Option<Lent<P>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            thread,
            granted: AtomicBool::new(granted),
            front: AtomicBool::new(front),
            takes_payload,
            payload: Mutex::new(None),
            job,
            claimed: AtomicBool::new(false),
            done: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            overtaken: AtomicBool::new(false),
        })
    }
}

/// Who to wake once the lane's mutex is released: the new holder and the new front.
type Woken<P> = (Option<Arc<Waiter<P>>>, Option<Arc<Waiter<P>>>);

#[derive(Debug)]
struct State<P> {
    busy: bool,
    queue: VecDeque<Arc<Waiter<P>>>,
}

impl<P> Default for State<P> {
    fn default() -> Self {
        Self {
            busy: false,
            queue: VecDeque::new(),
        }
    }
}

impl<P> State<P> {
    /// Takes the free lane for a newcomer. A waiter at the front (left the free lane by
    /// [`State::release`]) is overtaken by it: it gets the lane at the next release.
    fn take_free(&mut self) {
        self.busy = true;
        if let Some(front) = self.queue.front() {
            front.overtaken.store(true, Ordering::Relaxed);
        }
    }

    /// Marks the waiter now at the front and returns it, to be woken once the mutex is
    /// released.
    fn mark_front(&self) -> Option<Arc<Waiter<P>>> {
        let front = self.queue.front()?;
        if front.front.swap(true, Ordering::AcqRel) {
            None
        } else {
            Some(Arc::clone(front))
        }
    }

    /// Lets the lane go with no payload. When the front waiter lent a job, the lane is left
    /// free, for whoever takes it first: a writer already running (often the one that just
    /// let it go, writing again) takes it at once, where handing it to the front waiter
    /// would leave it idle while that thread wakes; the taker runs the front waiter's job in
    /// its batch, as any holder does. The front waiter is nudged, so that it takes the lane
    /// itself if nobody else comes. Otherwise (also when a newcomer overtook that waiter
    /// once already) the lane is handed to the front waiter.
    fn release(&mut self) -> Woken<P> {
        match self.queue.front() {
            Some(front) if front.job.is_some() && !front.overtaken.load(Ordering::Relaxed) => {
                self.busy = false;
                front.nudged.store(true, Ordering::Release);
                (Some(Arc::clone(front)), None)
            }
            _ => self.hand_off(None),
        }
    }

    /// Hands the lane to the front waiter, with `payload`; returns the new holder and the new
    /// front, to be woken once the mutex is released. With no waiter, frees the lane.
    fn hand_off(&mut self, payload: Option<P>) -> Woken<P> {
        match self.queue.pop_front() {
            Some(next) => {
                if payload.is_some() {
                    *lock(&next.payload) = payload;
                }
                // The lane stays busy: it passes straight to `next`.
                next.granted.store(true, Ordering::Release);
                // The new front starts spinning now, ready for the next hand-off.
                (Some(next), self.mark_front())
            }
            None => {
                self.busy = false;
                (None, None)
            }
        }
    }
}

/// Wakes the new holder and the new front after the lane's mutex is released. A spinning
/// waiter needs no wake-up; `unpark` costs a system call only for a parked one.
fn wake<P>((next, front): Woken<P>) {
    if let Some(next) = next {
        next.thread.unpark();
    }
    if let Some(front) = front {
        front.thread.unpark();
    }
}

/// Spins until `done` is true or `until` passes, yielding now and then: on two cores with
/// more threads, the thread this one waits for may need the core.
pub(crate) fn spin_until(until: Instant, done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        std::hint::spin_loop();
        spins += 1;
        if spins.is_multiple_of(64) {
            if Instant::now() >= until {
                return;
            }
            std::thread::yield_now();
        }
    }
}

/// A FIFO lock with direct hand-off, bounded waits, a spinning front waiter, and an optional
/// payload passed from holder to holder.
#[derive(Debug)]
pub(crate) struct WriterLane<P = ()> {
    state: Mutex<State<P>>,
}

impl<P> Default for WriterLane<P> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
        }
    }
}

/// Holding the lane; dropping it passes the lane on, without a payload.
#[derive(Debug)]
pub(crate) struct LaneTurn<'a, P = ()> {
    lane: &'a WriterLane<P>,
    /// False once the lane has been passed on with a payload.
    held: bool,
}

/// The lane did not come round before the deadline.
#[derive(Debug)]
pub(crate) struct LaneTimeout {
    pub(crate) queued: usize,
}

impl<P> WriterLane<P> {
    fn lock(&self) -> MutexGuard<'_, State<P>> {
        lock(&self.state)
    }

    /// Waits for the lane until `deadline`. The lane may come with the previous holder's
    /// payload.
    pub(crate) fn acquire(
        &self,
        deadline: Instant,
    ) -> Result<(LaneTurn<'_, P>, Option<P>), LaneTimeout> {
        self.wait(deadline, true)
    }

    /// Waits for the lane until `deadline`, never taking a payload: a holder with one
    /// finishes with it before this waiter's turn.
    pub(crate) fn acquire_plain(&self, deadline: Instant) -> Result<LaneTurn<'_, P>, LaneTimeout> {
        self.wait(deadline, false).map(|(turn, _)| turn)
    }

    #[cfg(feature = "async")]
    /// Takes a place in the queue (or the free lane) for `thread`, without waiting: for a
    /// thread that serves several writers' turns in order (the async writer). It watches its
    /// places with `Queued::try_take` and leaves with `WriterLane::withdraw`; `thread` is
    /// unparked when a place is granted or comes to the front. Always takes payloads.
    ///
    /// The free lane is taken only when nobody is queued: a lane left free for a nudged
    /// lending waiter (`State::release`) may have this thread's earlier places behind that
    /// waiter, and a later place granted first would wait for them while they wait for it.
    pub(crate) fn enqueue(&self, thread: Thread) -> Queued<P> {
        let mut state = self.lock();
        let granted = !state.busy && state.queue.is_empty();
        if granted {
            state.busy = true;
        }
        let front = granted || state.queue.is_empty();
        let me = Waiter::new(thread, granted, front, true, None);
        if !granted {
            state.queue.push_back(Arc::clone(&me));
        }
        Queued(me)
    }

    #[cfg(feature = "async")]
    /// Leaves the queue, unless the lane was granted to `place` meanwhile: then the turn,
    /// with its payload, is the caller's to use or pass on.
    pub(crate) fn withdraw(
        &self,
        place: Queued<P>,
    ) -> Result<(LaneTurn<'_, P>, Option<P>), LaneTimeout> {
        self.give_up(&place.0)
    }

    fn wait(
        &self,
        deadline: Instant,
        takes_payload: bool,
    ) -> Result<(LaneTurn<'_, P>, Option<P>), LaneTimeout> {
        let me = {
            let mut state = self.lock();
            if !state.busy {
                state.take_free();
                return Ok((self.turn(), None));
            }
            let front = state.queue.is_empty();
            let me = Waiter::new(std::thread::current(), false, front, takes_payload, None);
            state.queue.push_back(Arc::clone(&me));
            me
        };
        let mut spun = false;
        loop {
            if me.granted.load(Ordering::Acquire) {
                return Ok(self.granted(&me));
            }
            let now = Instant::now();
            if now >= deadline {
                return self.give_up(&me);
            }
            if !spun && me.front.load(Ordering::Acquire) {
                spun = true;
                spin_until((now + SPIN).min(deadline), || {
                    me.granted.load(Ordering::Acquire)
                });
                continue;
            }
            // A wake-up may be spurious or stale; the loop re-checks the flags.
            std::thread::park_timeout(deadline - now);
        }
    }

    /// Waits for the lane until `deadline`, as [`WriterLane::acquire`], lending `job` to the
    /// holders meanwhile: a holder may run it on its own thread, with its payload (see
    /// [`LaneTurn::claim`]), instead of handing the lane over. Returns the turn if the lane
    /// came to this thread, or [`Offered::Ran`] once a holder ran the job (or it unwound
    /// there). A job claimed before the deadline is waited for past it: it is running.
    pub(crate) fn offer(
        &self,
        deadline: Instant,
        job: &mut Job<'_, P>,
    ) -> Result<Offered<'_, P>, LaneTimeout> {
        let me = {
            let mut state = self.lock();
            if !state.busy {
                state.take_free();
                return Ok(Offered::Turn(self.turn(), None));
            }
            let front = state.queue.is_empty();
            let me = Waiter::new(
                std::thread::current(),
                false,
                front,
                true,
                Some(Lent::new(job)),
            );
            state.queue.push_back(Arc::clone(&me));
            me
        };
        // From here until this returns, a holder may run `job`: every return below is after
        // `done`, after `granted` (no holder claims a granted waiter: it has left the queue),
        // or after leaving the queue unclaimed, under the lane's mutex.
        let mut spun = false;
        loop {
            if me.done.load(Ordering::Acquire) {
                return Ok(Offered::Ran);
            }
            if me.granted.load(Ordering::Acquire) {
                let (turn, payload) = self.granted(&me);
                return Ok(Offered::Turn(turn, payload));
            }
            if me.claimed.load(Ordering::Acquire) {
                // Running: woken when it is done (or when its commit is settled).
                std::thread::park_timeout(CLAIMED_NAP);
                continue;
            }
            let now = Instant::now();
            let expired = now >= deadline;
            if expired || me.nudged.swap(false, Ordering::AcqRel) {
                let (turn, wake) = {
                    let mut state = self.lock();
                    if me.granted.load(Ordering::Acquire) || me.claimed.load(Ordering::Acquire) {
                        continue;
                    }
                    if state.busy && !expired {
                        // A newcomer took the lane: it runs this job or lets the lane go.
                        continue;
                    }
                    state.queue.retain(|w| !Arc::ptr_eq(w, &me));
                    let wake = state.mark_front();
                    if state.busy {
                        (
                            Err(LaneTimeout {
                                queued: state.queue.len(),
                            }),
                            wake,
                        )
                    } else {
                        state.busy = true;
                        (Ok(Offered::Turn(self.turn(), None)), wake)
                    }
                };
                if let Some(front) = wake {
                    front.thread.unpark();
                }
                return turn;
            }
            if !spun && me.front.load(Ordering::Acquire) {
                // At the front: the lane, or a holder for the job, comes soon.
                spun = true;
                spin_until((now + SPIN).min(deadline), || {
                    me.granted.load(Ordering::Acquire)
                        || me.claimed.load(Ordering::Acquire)
                        || me.nudged.load(Ordering::Acquire)
                });
                continue;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    fn turn(&self) -> LaneTurn<'_, P> {
        LaneTurn {
            lane: self,
            held: true,
        }
    }

    fn granted(&self, me: &Waiter<P>) -> (LaneTurn<'_, P>, Option<P>) {
        (self.turn(), lock(&me.payload).take())
    }

    /// Leaves the queue at the deadline, unless the lane was granted in the meantime.
    fn give_up(&self, me: &Arc<Waiter<P>>) -> Result<(LaneTurn<'_, P>, Option<P>), LaneTimeout> {
        let (queued, wake) = {
            let mut state = self.lock();
            if me.granted.load(Ordering::Acquire) {
                return Ok(self.granted(me));
            }
            state.queue.retain(|w| !Arc::ptr_eq(w, me));
            (state.queue.len(), state.mark_front())
        };
        if let Some(front) = wake {
            front.thread.unpark();
        }
        Err(LaneTimeout { queued })
    }

    /// Writers waiting, the one holding the lane not included.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn release(&self) {
        let woken = self.lock().release();
        wake(woken);
    }
}

/// A place in the lane's queue taken with `WriterLane::enqueue`.
#[cfg(feature = "async")]
#[derive(Debug)]
pub(crate) struct Queued<P>(Arc<Waiter<P>>);

#[cfg(feature = "async")]
impl<P> Queued<P> {
    /// True once the lane has been granted to this place.
    pub(crate) fn is_granted(&self) -> bool {
        self.0.granted.load(Ordering::Acquire)
    }

    /// The turn, with its payload, once the lane has been granted to this place; else the
    /// place back.
    pub(crate) fn try_take(
        self,
        lane: &WriterLane<P>,
    ) -> Result<(LaneTurn<'_, P>, Option<P>), Self> {
        if self.0.granted.load(Ordering::Acquire) {
            Ok(lane.granted(&self.0))
        } else {
            Err(self)
        }
    }
}

/// A job taken from the front waiter with [`LaneTurn::claim`], to run once.
#[derive(Debug)]
pub(crate) struct Claimed<P>(Arc<Waiter<P>>);

impl<P> Claimed<P> {
    /// Runs the job with `payload` on this thread, then tells its waiter it is done (also if
    /// the job unwinds).
    pub(crate) fn run(self, payload: &mut P) {
        /// Sets `done`, and wakes the waiter when asked (always when unwinding).
        struct Finish<'w, P> {
            waiter: &'w Waiter<P>,
            wake: bool,
        }
        impl<P> Drop for Finish<'_, P> {
            fn drop(&mut self) {
                // After this store the waiter may return and its job be gone: the job is not
                // touched again; `waiter` itself is kept alive by the `Arc`.
                self.waiter.done.store(true, Ordering::Release);
                if self.wake {
                    self.waiter.thread.unpark();
                }
            }
        }
        let waiter = &*self.0;
        let Some(job) = &waiter.job else {
            unreachable!("only a waiter that lent a job is claimed")
        };
        let mut finish = Finish { waiter, wake: true };
        // SAFETY: this waiter was claimed once, under the lane's mutex, by this turn, and its
        // `offer` waits for `done`, set by `finish` after this call (see `Lent`).
        #[allow(unsafe_code)]
        let wake = unsafe { (*job.0.as_ptr())(payload) };
        finish.wake = wake;
    }
}

impl<'a, P> LaneTurn<'a, P> {
    /// Takes the job of the front waiter, when it lent one ([`WriterLane::offer`]), and that
    /// waiter out of the queue; the lane stays with this turn.
    pub(crate) fn claim(&self) -> Option<Claimed<P>> {
        let (claimed, front) = {
            let mut state = self.lane.lock();
            if state.queue.front().is_none_or(|w| w.job.is_none()) {
                return None;
            }
            let waiter = state.queue.pop_front()?;
            waiter.claimed.store(true, Ordering::Release);
            (waiter, state.mark_front())
        };
        if let Some(front) = front {
            front.thread.unpark();
        }
        Some(Claimed(claimed))
    }

    /// Hands the lane, with `payload`, to the oldest waiter, if there is one and it takes
    /// payloads. Otherwise gives both back: the caller still holds the lane.
    pub(crate) fn pass(mut self, payload: P) -> Result<(), (Self, P)> {
        let woken = {
            let mut state = self.lane.lock();
            if !state.queue.front().is_some_and(|w| w.takes_payload) {
                drop(state);
                return Err((self, payload));
            }
            state.hand_off(Some(payload))
        };
        self.held = false;
        wake(woken);
        Ok(())
    }
}

impl<P> Drop for LaneTurn<'_, P> {
    fn drop(&mut self) {
        if self.held {
            self.lane.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// Far more than a few hand-offs take on a loaded machine, far less than `far()`.
    const HAND_OFFS: Duration = Duration::from_secs(10);

    /// Bug caught: writers served out of arrival order (barging, LIFO, or a thundering herd).
    #[test]
    fn serves_writers_in_arrival_order() {
        let lane = Arc::new(WriterLane::<()>::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = lane.acquire_plain(far()).expect("free lane");
        let mut handles = Vec::new();
        for i in 0..8 {
            let (thread_lane, order) = (Arc::clone(&lane), Arc::clone(&order));
            handles.push(std::thread::spawn(move || {
                let _turn = thread_lane.acquire_plain(far()).expect("lane within 30 s");
                order.lock().unwrap().push(i);
            }));
            // Wait until writer i is queued before starting writer i + 1.
            while lane.queued() < i + 1 {
                std::thread::yield_now();
            }
        }
        let released = Instant::now();
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
        // Each waiter would still get the lane at its 30 s deadline after a lost wake-up.
        assert!(
            released.elapsed() < HAND_OFFS,
            "a hand-off waited for a deadline"
        );
    }

    /// Bug caught: a timed-out waiter left in the queue, blocking everyone after it forever.
    #[test]
    fn a_timed_out_waiter_leaves_the_queue() {
        let lane = Arc::new(WriterLane::<()>::default());
        let turn = lane.acquire_plain(far()).expect("free lane");
        let err = lane
            .acquire_plain(Instant::now() + Duration::from_millis(20))
            .expect_err("lane is held");
        assert_eq!(err.queued, 0);
        assert_eq!(lane.queued(), 0);
        drop(turn);
        let again = lane.acquire_plain(Instant::now() + Duration::from_secs(5));
        assert!(again.is_ok(), "lane not free after the holder left");
    }

    /// Bug caught: two writers inside the lane at once.
    #[test]
    fn never_admits_two_writers() {
        let lane = Arc::new(WriterLane::<()>::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (lane, inside, barrier) =
                    (Arc::clone(&lane), Arc::clone(&inside), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..500 {
                        let _turn = lane.acquire_plain(far()).expect("lane within 30 s");
                        let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(n, 0, "two writers in the lane");
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    /// Bug caught: a payload passed with the lane lost, given to the wrong waiter, or given
    /// out of arrival order.
    #[test]
    fn pass_hands_the_payload_to_the_oldest_waiter() {
        let lane = Arc::new(WriterLane::<u32>::default());
        let (first, none) = lane.acquire(far()).expect("free lane");
        assert!(none.is_none(), "a free lane carries no payload");
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..4u32 {
            let (thread_lane, got) = (Arc::clone(&lane), Arc::clone(&got));
            handles.push(std::thread::spawn(move || {
                let (turn, payload) = thread_lane.acquire(far()).expect("lane within 30 s");
                got.lock().unwrap().push((i, payload));
                let next = payload.map_or(100, |p| p + 1);
                // Each holder passes a payload on; the last finds nobody and keeps the lane.
                if let Err((turn, _)) = turn.pass(next) {
                    drop(turn);
                }
            }));
            while lane.queued() < i as usize + 1 {
                std::thread::yield_now();
            }
        }
        let released = Instant::now();
        first.pass(10).expect("a waiter is queued");
        for h in handles {
            h.join().unwrap();
        }
        assert!(
            released.elapsed() < HAND_OFFS,
            "a hand-off waited for a deadline"
        );
        assert_eq!(
            *got.lock().unwrap(),
            vec![(0, Some(10)), (1, Some(11)), (2, Some(12)), (3, Some(13))]
        );
        assert!(
            lane.acquire_plain(Instant::now() + Duration::from_secs(5))
                .is_ok(),
            "the last holder kept the lane"
        );
    }

    /// Bug caught: a payload handed to a waiter that cannot take one (the health probe), which
    /// would strand the open transaction it carries; or the lane lost when nobody takes it.
    #[test]
    fn pass_returns_the_payload_when_the_next_waiter_takes_none() {
        let lane = Arc::new(WriterLane::<u32>::default());
        let (turn, _) = lane.acquire(far()).expect("free lane");
        // Nobody waiting: the holder keeps the lane and the payload.
        let (turn, payload) = turn.pass(1).expect_err("nobody to pass to");
        assert_eq!(payload, 1);
        let plain = {
            let lane = Arc::clone(&lane);
            std::thread::spawn(move || lane.acquire_plain(far()).map(drop).is_ok())
        };
        while lane.queued() < 1 {
            std::thread::yield_now();
        }
        let (turn, payload) = turn.pass(2).expect_err("the front waiter takes no payload");
        assert_eq!(payload, 2);
        assert_eq!(lane.queued(), 1, "the plain waiter is still queued");
        drop(turn);
        assert!(plain.join().unwrap(), "the plain waiter got the lane");
    }

    /// Bug caught: a place taken with `enqueue` served out of arrival order with plain
    /// waiters, granted without its payload, or left in the queue after `withdraw`, so that
    /// the waiters behind it never get the lane.
    #[cfg(feature = "async")]
    #[test]
    fn enqueued_places_keep_their_order_and_leave_cleanly() {
        let lane = Arc::new(WriterLane::<u32>::default());
        let me = std::thread::current();
        let first = lane.enqueue(me.clone());
        assert!(first.is_granted(), "a free lane is granted at once");
        let second = lane.enqueue(me.clone());
        let plain = {
            let lane = Arc::clone(&lane);
            std::thread::spawn(move || lane.acquire(far()).map(|(_, p)| p).ok())
        };
        while lane.queued() < 2 {
            std::thread::yield_now();
        }
        let third = lane.enqueue(me);
        let second = second.try_take(&lane).expect_err("the lane is held");
        let (turn, payload) = first.try_take(&lane).expect("granted");
        assert!(payload.is_none());
        turn.pass(5).expect("the second place takes payloads");
        let (turn, payload) = second.try_take(&lane).expect("granted by the pass");
        assert_eq!(payload, Some(5));
        turn.pass(6).expect("the plain waiter takes payloads");
        assert_eq!(plain.join().unwrap(), Some(Some(6)));
        // The plain waiter's turn dropped: the lane went on to the third place.
        assert!(third.is_granted());
        let fourth = lane.enqueue(std::thread::current());
        assert!(lane.withdraw(fourth).is_err(), "not granted: it leaves");
        let (turn, _) = lane.withdraw(third).expect("granted before it withdrew");
        drop(turn);
        assert_eq!(lane.queued(), 0);
        assert!(
            lane.acquire_plain(Instant::now() + Duration::from_secs(5))
                .is_ok(),
            "the lane is free again"
        );
    }

    /// Bug caught: a place taken with `enqueue` while the lane is free but its front waiter,
    /// which lent a job, has not taken it yet, granted at once: ahead of that waiter and of
    /// the same thread's earlier places. The async writer serves its places in order, so it
    /// waited for its earlier place while the lane sat granted to the later one, and every
    /// writer behind them stalled until that place's deadline.
    #[cfg(feature = "async")]
    #[test]
    fn a_place_taken_while_a_lending_waiter_is_nudged_queues_behind_it() {
        let lane = Arc::new(WriterLane::<Vec<u32>>::default());
        let me = std::thread::current();
        let (mut turn, _) = lane.acquire(far()).expect("free lane");
        let lender = offer_recording(&lane, 1, far());
        while lane.queued() < 1 {
            std::thread::yield_now();
        }
        let earlier = lane.enqueue(me.clone());
        // Past the lender's spin: it sleeps until it is nudged.
        std::thread::sleep(Duration::from_millis(50));
        // Let the lane go as a holder does, but take the next place before the lender wakes.
        let woken = lane.lock().release();
        turn.held = false;
        let later = lane.enqueue(me);
        assert!(!later.is_granted(), "a later place overtook the queue");
        wake(woken);
        let (ran, _) = lender.join().unwrap();
        assert!(
            !ran,
            "nobody ran the lender's job: it took the free lane itself"
        );
        let deadline = Instant::now() + HAND_OFFS;
        while !earlier.is_granted() {
            assert!(Instant::now() < deadline, "the earlier place never granted");
            std::thread::yield_now();
        }
        assert!(!later.is_granted(), "two places granted at once");
        let (turn, _) = earlier.try_take(&lane).expect("granted");
        drop(turn);
        assert!(later.is_granted(), "the later place is next");
        let (turn, _) = later.try_take(&lane).expect("granted");
        drop(turn);
        assert_eq!(lane.queued(), 0);
    }

    /// Bug caught: a lane let go with a lending waiter at the front was left free for a
    /// newcomer, and a newcomer that did not run that waiter's job let it go free again, for
    /// the next newcomer: a writer writing in a loop overtook the queued one hundreds of
    /// times (with one writer a transaction, or a nested write, taking it). Overtaken once,
    /// the waiter is handed the lane at the next release.
    #[test]
    fn a_lending_waiter_is_overtaken_at_most_once() {
        let lane = Arc::new(WriterLane::<Vec<u32>>::default());
        let (mut turn, _) = lane.acquire(far()).expect("free lane");
        let lender = offer_recording(&lane, 1, far());
        while lane.queued() < 1 {
            std::thread::yield_now();
        }
        // Past the lender's spin: it sleeps until it is woken.
        std::thread::sleep(Duration::from_millis(50));
        // Let the lane go as a holder does; a newcomer takes it before the lender wakes, and
        // lets it go again without running the lender's job.
        let first = lane.lock().release();
        turn.held = false;
        let (mut newcomer, _) = lane
            .acquire(Instant::now())
            .expect("the lane was left free");
        let second = lane.lock().release();
        newcomer.held = false;
        assert!(
            lane.acquire(Instant::now()).is_err(),
            "the lane was left free again for a second newcomer"
        );
        wake(first);
        wake(second);
        let (ran, _) = lender.join().unwrap();
        assert!(!ran, "the lender was handed the lane, not its job run");
        assert_eq!(lane.queued(), 0);
        assert!(lane.acquire(Instant::now()).is_ok(), "the lender let it go");
    }

    /// Bug caught: a waiter whose deadline passes just as the lane is handed to it, with a
    /// payload, leaving the queue anyway: the lane would stay busy for good and the payload
    /// (an open transaction) be lost.
    #[test]
    fn a_waiter_handed_the_lane_at_its_deadline_keeps_it() {
        let lane = Arc::new(WriterLane::<u32>::default());
        let (mut turn, _) = lane.acquire(far()).expect("free lane");
        let waiter = {
            let lane = Arc::clone(&lane);
            std::thread::spawn(move || {
                lane.acquire(Instant::now() + Duration::from_millis(50))
                    .map(|(turn, payload)| {
                        drop(turn);
                        payload
                    })
                    .map_err(|e| e.queued)
            })
        };
        while lane.queued() < 1 {
            std::thread::yield_now();
        }
        // Hold the queue's mutex past the waiter's deadline, so that it times out and blocks
        // in `give_up`; then hand it the lane, as `pass` does, under that mutex.
        let mut state = lane.lock();
        std::thread::sleep(Duration::from_millis(300));
        let woken = state.hand_off(Some(7));
        drop(state);
        turn.held = false;
        wake(woken);
        assert_eq!(waiter.join().unwrap(), Ok(Some(7)));
        assert!(
            lane.acquire_plain(Instant::now() + Duration::from_secs(5))
                .is_ok(),
            "the lane is free again"
        );
    }

    /// Offers a job that records the holder's payload and its thread, from a new thread.
    fn offer_recording(
        lane: &Arc<WriterLane<Vec<u32>>>,
        i: u32,
        deadline: Instant,
    ) -> std::thread::JoinHandle<(bool, Option<std::thread::ThreadId>)> {
        let lane = Arc::clone(lane);
        std::thread::spawn(move || {
            let mut ran_on = None;
            let mut job = |seen: &mut Vec<u32>| {
                seen.push(i);
                ran_on = Some(std::thread::current().id());
                true
            };
            let ran = matches!(lane.offer(deadline, &mut job), Ok(Offered::Ran));
            (ran, ran_on)
        })
    }

    /// Bug caught: a holder that cannot take the jobs queued writers lent, takes them out of
    /// arrival order, runs one twice, or lets a waiter return (its job gone) before the job
    /// ran; or the lane lost while its holder runs jobs.
    #[test]
    fn a_holder_runs_the_lent_jobs_in_arrival_order_on_its_own_thread() {
        let lane = Arc::new(WriterLane::<Vec<u32>>::default());
        let (turn, _) = lane.acquire(far()).expect("free lane");
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let w = offer_recording(&lane, i, far());
                while lane.queued() < i as usize + 1 {
                    std::thread::yield_now();
                }
                w
            })
            .collect();
        let mut seen = Vec::new();
        while let Some(job) = turn.claim() {
            job.run(&mut seen);
        }
        assert_eq!(seen, [0, 1, 2, 3]);
        for w in waiters {
            let (ran, on) = w.join().unwrap();
            assert!(ran, "the waiter was not told its job ran");
            assert_eq!(on, Some(std::thread::current().id()));
        }
        assert!(
            lane.acquire_plain(Instant::now() + Duration::from_millis(20))
                .is_err(),
            "the lane left its holder"
        );
        drop(turn);
    }

    /// Bug caught: a job claimed after its waiter timed out and returned (a call into a dead
    /// stack frame), or a timed-out waiter left in the queue.
    #[test]
    fn a_timed_out_offer_leaves_nothing_to_claim() {
        let lane = Arc::new(WriterLane::<Vec<u32>>::default());
        let (turn, _) = lane.acquire(far()).expect("free lane");
        let w = offer_recording(&lane, 7, Instant::now() + Duration::from_millis(20));
        let (ran, on) = w.join().unwrap();
        assert!(!ran && on.is_none());
        assert!(turn.claim().is_none(), "a job left to claim");
        assert_eq!(lane.queued(), 0);
    }

    /// Bug caught: a lane let go with a lending waiter at the front staying busy with nobody
    /// to run (the waiter never nudged), or a waiter whose job unwound on the holder's thread
    /// never told (it would wait forever).
    #[test]
    fn a_free_lane_goes_to_the_lending_waiter_and_an_unwinding_job_is_reported() {
        let lane = Arc::new(WriterLane::<Vec<u32>>::default());
        let turn = lane.acquire_plain(far()).expect("free lane");
        let waiter = {
            let lane = Arc::clone(&lane);
            std::thread::spawn(move || {
                let mut job = |_: &mut Vec<u32>| true;
                matches!(lane.offer(far(), &mut job), Ok(Offered::Turn(..)))
            })
        };
        while lane.queued() < 1 {
            std::thread::yield_now();
        }
        let released = Instant::now();
        drop(turn);
        assert!(
            waiter.join().unwrap(),
            "the waiter did not take the free lane"
        );
        assert!(released.elapsed() < HAND_OFFS, "taken only at its deadline");

        let (turn, _) = lane.acquire(far()).expect("free lane again");
        let panicking = {
            let lane = Arc::clone(&lane);
            std::thread::spawn(move || {
                let mut job = |_: &mut Vec<u32>| -> bool { panic!("the job unwinds") };
                matches!(lane.offer(far(), &mut job), Ok(Offered::Ran))
            })
        };
        while lane.queued() < 1 {
            std::thread::yield_now();
        }
        let job = turn.claim().expect("a lent job");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.run(&mut Vec::new());
        }));
        assert!(unwound.is_err());
        assert!(panicking.join().unwrap(), "the waiter was not told");
        drop(turn);
    }
}
