//! The worker threads: they build the answers that take time (a snapshot and its rendering,
//! a health check) so that the polling thread never waits, and hand them back to it.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use mio::Waker;

use super::response::Response;
use super::routes::{Route, render};
use super::state::State;
use crate::sync::lock;

/// Work for a worker: the answer to `route` for connection `conn`, or, without one, the
/// health check whose answer goes to every connection waiting for it.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) route: Route,
    pub(super) conn: Option<usize>,
}

/// A finished job.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) job: Job,
    pub(super) response: Response,
    /// The job panicked and `response` is a `500`, not to be cached.
    pub(super) panicked: bool,
}

/// A worker: takes jobs until the polling thread is gone, and wakes it with each answer.
pub(super) fn work(
    state: &State,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Done>,
    waker: &Arc<Waker>,
) {
    loop {
        // The polling thread holds the sender: it ends, and so do the workers.
        let Ok(job) = lock(jobs).recv() else {
            return;
        };
        // A bug in one answer must not take a thread from the pool.
        let rendered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render(state, job.route)));
        let (response, panicked) = match rendered {
            Ok(response) => (response, false),
            Err(_) => {
                tracing::error!(route = ?job.route, "hive-db endpoint: an answer panicked");
                (Response::text(500, "the answer failed\n"), true)
            }
        };
        if done
            .send(Done {
                job,
                response,
                panicked,
            })
            .is_err()
        {
            return;
        }
        let _ = waker.wake();
    }
}
