//! The writer lane: one writer per database at a time, the rest queued in FIFO order in
//! process, so writers wait on a condition variable instead of spinning in SQLite's
//! sleeping busy handler.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A queued writer's place. `granted` is only touched under the lane's mutex.
#[derive(Debug)]
struct Waiter {
    cv: Condvar,
    granted: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    busy: bool,
    queue: VecDeque<Arc<Waiter>>,
}

/// A FIFO lock with direct hand-off: a releasing writer passes the lane to the oldest waiter,
/// so a newcomer can never overtake the queue.
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
        let mut state = self.lock();
        if !state.busy {
            state.busy = true;
            return Ok(LaneTurn { lane: self });
        }
        let me = Arc::new(Waiter {
            cv: Condvar::new(),
            granted: false.into(),
        });
        state.queue.push_back(Arc::clone(&me));
        loop {
            if me.granted.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(LaneTurn { lane: self });
            }
            let now = Instant::now();
            if now >= deadline {
                state.queue.retain(|w| !Arc::ptr_eq(w, &me));
                return Err(LaneTimeout {
                    queued: state.queue.len(),
                });
            }
            state = me
                .cv
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Writers waiting, the one holding the lane not included.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn release(&self) {
        let mut state = self.lock();
        match state.queue.pop_front() {
            Some(next) => {
                // The lane stays busy: it passes straight to `next`.
                next.granted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                next.cv.notify_one();
            }
            None => state.busy = false,
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
