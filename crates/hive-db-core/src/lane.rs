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
//! The lane's mutex guards only the queue. A waiter sleeps with `thread::park` and watches
//! its own flags, so a hand-off never makes the new holder take the mutex again, and the
//! wake-ups happen after the mutex is released.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the front waiter spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// A queued writer's place.
#[derive(Debug)]
struct Waiter {
    thread: Thread,
    /// Set, under the lane's mutex, when the lane is handed to this waiter.
    granted: AtomicBool,
    /// Set, under the lane's mutex, when this waiter becomes the front of the queue.
    front: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    busy: bool,
    queue: VecDeque<Arc<Waiter>>,
}

impl State {
    /// Marks the waiter now at the front and returns it, to be woken once the mutex is
    /// released.
    fn mark_front(&self) -> Option<Arc<Waiter>> {
        let front = self.queue.front()?;
        if front.front.swap(true, Ordering::AcqRel) {
            None
        } else {
            Some(Arc::clone(front))
        }
    }
}

/// A FIFO lock with direct hand-off, bounded waits and a spinning front waiter.
#[derive(Debug, Default)]
pub(crate) struct WriterLane {
    state: Mutex<State>,
}

/// Holding the lane; dropping it passes the lane on.
#[derive(Debug)]
pub(crate) struct LaneTurn<'a> {
    lane: &'a WriterLane,
}

/// The lane did not come round before the deadline.
#[derive(Debug)]
pub(crate) struct LaneTimeout {
    pub(crate) queued: usize,
}

impl WriterLane {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the lane until `deadline`.
    pub(crate) fn acquire(&self, deadline: Instant) -> Result<LaneTurn<'_>, LaneTimeout> {
        let me = {
            let mut state = self.lock();
            if !state.busy {
                state.busy = true;
                return Ok(LaneTurn { lane: self });
            }
            let me = Arc::new(Waiter {
                thread: std::thread::current(),
                granted: AtomicBool::new(false),
                front: AtomicBool::new(state.queue.is_empty()),
            });
            state.queue.push_back(Arc::clone(&me));
            me
        };
        let mut spun = false;
        loop {
            if me.granted.load(Ordering::Acquire) {
                return Ok(LaneTurn { lane: self });
            }
            let now = Instant::now();
            if now >= deadline {
                return self.give_up(&me);
            }
            if !spun && me.front.load(Ordering::Acquire) {
                spun = true;
                Self::spin(&me, (now + SPIN).min(deadline));
                continue;
            }
            // A wake-up may be spurious or stale; the loop re-checks the flags.
            std::thread::park_timeout(deadline - now);
        }
    }

    /// Spins until the lane is granted to `me` or `until` passes.
    fn spin(me: &Waiter, until: Instant) {
        let mut spins = 0u32;
        while !me.granted.load(Ordering::Acquire) {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) {
                if Instant::now() >= until {
                    return;
                }
                // Two cores and more threads: let the lane holder run.
                std::thread::yield_now();
            }
        }
    }

    /// Leaves the queue at the deadline, unless the lane was granted in the meantime.
    fn give_up(&self, me: &Arc<Waiter>) -> Result<LaneTurn<'_>, LaneTimeout> {
        let (queued, wake) = {
            let mut state = self.lock();
            if me.granted.load(Ordering::Acquire) {
                return Ok(LaneTurn { lane: self });
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
        let (next, front) = {
            let mut state = self.lock();
            match state.queue.pop_front() {
                Some(next) => {
                    // The lane stays busy: it passes straight to `next`.
                    next.granted.store(true, Ordering::Release);
                    // The new front starts spinning now, ready for the next hand-off.
                    (Some(next), state.mark_front())
                }
                None => {
                    state.busy = false;
                    (None, None)
                }
            }
        };
        // A spinning waiter needs no wake-up; `unpark` costs a system call only for a
        // parked one.
        if let Some(next) = next {
            next.thread.unpark();
        }
        if let Some(front) = front {
            front.thread.unpark();
        }
    }
}

impl Drop for LaneTurn<'_> {
    fn drop(&mut self) {
        self.lane.release();
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

    /// Bug caught: writers served out of arrival order (barging, LIFO, or a thundering herd).
    #[test]
    fn serves_writers_in_arrival_order() {
        let lane = Arc::new(WriterLane::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = lane.acquire(far()).expect("free lane");
        let mut handles = Vec::new();
        for i in 0..8 {
            let (thread_lane, order) = (Arc::clone(&lane), Arc::clone(&order));
            handles.push(std::thread::spawn(move || {
                let _turn = thread_lane.acquire(far()).expect("lane within 30 s");
                order.lock().unwrap().push(i);
            }));
            // Wait until writer i is queued before starting writer i + 1.
            while lane.queued() < i + 1 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    /// Bug caught: a timed-out waiter left in the queue, blocking everyone after it forever.
    #[test]
    fn a_timed_out_waiter_leaves_the_queue() {
        let lane = Arc::new(WriterLane::default());
        let turn = lane.acquire(far()).expect("free lane");
        let err = lane
            .acquire(Instant::now() + Duration::from_millis(20))
            .expect_err("lane is held");
        assert_eq!(err.queued, 0);
        assert_eq!(lane.queued(), 0);
        drop(turn);
        let again = lane.acquire(Instant::now() + Duration::from_secs(5));
        assert!(again.is_ok(), "lane not free after the holder left");
    }

    /// Bug caught: two writers inside the lane at once.
    #[test]
    fn never_admits_two_writers() {
        let lane = Arc::new(WriterLane::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (lane, inside, barrier) =
                    (Arc::clone(&lane), Arc::clone(&inside), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..500 {
                        let _turn = lane.acquire(far()).expect("lane within 30 s");
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
}
