//! The polling thread: it accepts every connection, reads and writes them all without
//! blocking as `mio` (epoll) reports them ready, holds them to their deadlines and to the
//! connection cap, answers `/health` from its cache, and hands the rest to the workers.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use super::connection::{Connection, Next, refuse_busy};
use super::health::{Ask, HealthCache};
use super::http::parse;
use super::response::Response;
use super::routes::{Route, route};
use super::state::State;
use super::workers::{Done, Job};

pub(super) const WAKER: Token = Token(0);
pub(super) const LISTENER: Token = Token(1);
/// Connection `id` has token `FIRST + id`.
const FIRST: usize = 2;
/// How long to wait before accepting again after an error (out of file descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(25);
/// Connections accepted in one go before the other sockets get their turn, so that a flood
/// of connections cannot starve the requests already in.
const ACCEPT_BATCH: usize = 64;
/// At most one warning of each kind a minute.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the polling thread owns.
pub(super) struct Poller {
    pub(super) poll: Poll,
    pub(super) listener: TcpListener,
    pub(super) state: Arc<State>,
    pub(super) stopping: Arc<AtomicBool>,
    /// Work for the workers; dropped with the poller, which ends them.
    pub(super) jobs: Sender<Job>,
    pub(super) done: Receiver<Done>,
}

/// The poller's own bookkeeping.
struct Run {
    /// Open connections by id; ids grow with time, so the first is the oldest.
    connections: BTreeMap<usize, Connection>,
    next_id: usize,
    health: HealthCache,
    /// The earliest deadline of any connection, or earlier: when to look at them all.
    next_sweep: Option<Instant>,
    /// When to try accepting again after an error.
    accept_again: Option<Instant>,
    warned_accept: Option<Instant>,
    warned_cap: Option<Instant>,
}

impl Poller {
    /// Runs until the stop flag is set (and the waker rung).
    pub(super) fn run(mut self) {
        let mut run = Run {
            connections: BTreeMap::new(),
            next_id: 0,
            health: HealthCache::default(),
            next_sweep: None,
            accept_again: None,
            warned_accept: None,
            warned_cap: None,
        };
        let mut events = Events::with_capacity(256);
        let mut poll_warned = None;
        loop {
            let due = match (run.next_sweep, run.accept_again) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = due.map(|at| at.saturating_duration_since(Instant::now()));
            let polled = self.poll.poll(&mut events, timeout);
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    if warn_now(&mut poll_warned) {
                        tracing::error!(error = %e, "hive-db endpoint cannot poll its sockets");
                    }
                    std::thread::sleep(ACCEPT_RETRY);
                }
                continue;
            }
            for event in &events {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept(&mut run),
                    Token(token) => self.progress(&mut run, token - FIRST),
                }
            }
            while let Ok(done) = self.done.try_recv() {
                self.finished(&mut run, done);
            }
            let now = Instant::now();
            if run.accept_again.is_some_and(|at| at <= now) {
                self.accept(&mut run);
            }
            if run.next_sweep.is_some_and(|at| at <= now) {
                self.sweep(&mut run);
            }
        }
    }

    fn accept(&self, run: &mut Run) {
        run.accept_again = None;
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(run, stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, say. The listener reports readiness only on
                    // new arrivals, so come back on a timer for those already queued.
                    if warn_now(&mut run.warned_accept) {
                        tracing::warn!(error = %e, "hive-db endpoint cannot accept a connection");
                    }
                    run.accept_again = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
        // More may be waiting, and the listener will not report them again: come back
        // right after the other sockets' turn.
        run.accept_again = Some(Instant::now());
    }

    /// Takes a new connection, making room at the cap, or refuses it when there is none.
    fn admit(&self, run: &mut Run, mut stream: mio::net::TcpStream) {
        if run.connections.len() >= self.state.config.max_connections {
            if warn_now(&mut run.warned_cap) {
                tracing::warn!(
                    max_connections = self.state.config.max_connections,
                    "hive-db endpoint at its connection cap: closing the oldest idle connection, \
                     or refusing new ones while all are being answered"
                );
            }
            if !self.make_room(run) {
                refuse_busy(&mut stream);
                return;
            }
        }
        let _ = stream.set_nodelay(true);
        let id = run.next_id;
        run.next_id += 1;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(FIRST + id), interest)
            .is_err()
        {
            return;
        }
        let connection = Connection::new(stream, Instant::now(), &self.state.config);
        soonest(&mut run.next_sweep, connection.deadline());
        run.connections.insert(id, connection);
        // Its request is often in already: read it now, before it could be taken for idle.
        self.progress(run, id);
    }

    /// Closes, with `503`, the oldest connection that has sent nothing, or else the oldest
    /// still sending its head. False when every open connection is being answered.
    fn make_room(&self, run: &mut Run) -> bool {
        let max = self.state.config.max_connections;
        let oldest = |run: &Run, which: fn(&Connection) -> bool| {
            run.connections
                .iter()
                .find(|(_, c)| which(c))
                .map(|(id, _)| *id)
        };
        while run.connections.len() >= max {
            let Some(id) = oldest(run, Connection::is_silent) else {
                break;
            };
            // Its request may have come since its last readiness was handled (a scraper
            // accepted a moment before its bytes): read first, and spare it if so.
            self.progress(run, id);
            if run.connections.get(&id).is_some_and(Connection::is_silent) {
                self.evict(run, id);
            }
        }
        if run.connections.len() < max {
            return true;
        }
        match oldest(run, Connection::is_reading) {
            Some(id) => {
                self.evict(run, id);
                true
            }
            None => false,
        }
    }

    fn evict(&self, run: &mut Run, id: usize) {
        if let Some(mut connection) = self.remove(run, id) {
            refuse_busy(connection.stream());
        }
    }

    /// Takes connection `id` as far as its socket allows now.
    fn progress(&self, run: &mut Run, id: usize) {
        // A bug in one request (its parsing, say) must not take the endpoint down.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Some(connection) = run.connections.get_mut(&id) else {
                return;
            };
            let next = connection.progress(&self.state.config);
            self.then(run, id, next);
        }));
        if step.is_err() {
            tracing::error!("hive-db endpoint: a request panicked");
            self.remove(run, id);
        }
    }

    fn then(&self, run: &mut Run, id: usize, next: Next) {
        match next {
            Next::Wait => {
                let deadline = run.connections.get(&id).and_then(Connection::deadline);
                soonest(&mut run.next_sweep, deadline);
            }
            Next::Close => {
                self.remove(run, id);
            }
            Next::Request(head) => self.request(run, id, &head),
        }
    }

    fn request(&self, run: &mut Run, id: usize, head: &[u8]) {
        let parsed = parse(head);
        if parsed.as_ref().is_ok_and(|r| r.method == "HEAD")
            && let Some(connection) = run.connections.get_mut(&id)
        {
            connection.answer_head_only();
        }
        let response = match parsed.map(|request| route(&request)) {
            Err(refusal) => refusal,
            Ok(Err(answer)) => answer,
            Ok(Ok(Route::Health)) => {
                let fresh_for = self.state.config.health_cache;
                match run.health.ask(id, Instant::now(), fresh_for) {
                    Ask::Answer(response) => response,
                    Ask::Wait { start } => {
                        if start {
                            self.submit(Job {
                                route: Route::Health,
                                conn: None,
                            });
                        }
                        return;
                    }
                }
            }
            Ok(Ok(route)) => {
                self.submit(Job {
                    route,
                    conn: Some(id),
                });
                return;
            }
        };
        self.answer(run, id, &response);
    }

    fn submit(&self, job: Job) {
        // The workers end only after this thread: sending cannot fail while it runs.
        let _ = self.jobs.send(job);
    }

    fn finished(&self, run: &mut Run, done: Done) {
        match done.job.conn {
            Some(id) => self.answer(run, id, &done.response),
            None => {
                let waiting = run
                    .health
                    .checked(&done.response, Instant::now(), !done.panicked);
                for id in waiting {
                    self.answer(run, id, &done.response);
                }
            }
        }
    }

    fn answer(&self, run: &mut Run, id: usize, response: &Response) {
        // The connection may be gone: its client closed, or the endpoint cut it.
        let Some(connection) = run.connections.get_mut(&id) else {
            return;
        };
        let next = connection.answer(response, &self.state.config);
        self.then(run, id, next);
    }

    /// Cuts connections past their deadline and finds the next one.
    fn sweep(&self, run: &mut Run) {
        let now = Instant::now();
        let late: Vec<usize> = run
            .connections
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(connection) = run.connections.get_mut(&id) {
                let next = connection.expire(&self.state.config);
                self.then(run, id, next);
            }
        }
        run.next_sweep = run
            .connections
            .values()
            .filter_map(Connection::deadline)
            .min();
    }

    fn remove(&self, run: &mut Run, id: usize) -> Option<Connection> {
        let mut connection = run.connections.remove(&id)?;
        let _ = self.poll.registry().deregister(connection.stream());
        Some(connection)
    }
}

/// Moves `next` earlier to `at`, if `at` is sooner.
fn soonest(next: &mut Option<Instant>, at: Option<Instant>) {
    if let Some(at) = at {
        *next = Some(next.map_or(at, |n| n.min(at)));
    }
}

/// True, and remembers now, when the last warning of its kind is a minute old or none.
fn warn_now(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|at| at.elapsed() > WARN_EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}
