//! The PostgreSQL monitor's way to one server (`Probe`): a thread of that server's own that
//! keeps its client between rounds and measures when asked, each measure waited for within
//! a bound, since the sync client has none of its own on a query or on the startup exchange.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::server::Measured;
use crate::error::error_chain;

/// How long the monitor waits for a server's answer before it counts the server
/// unreachable for the round (and gives its client up).
const ROUND_TRIP: Duration = Duration::from_secs(5);

/// Why a measure failed.
pub(super) enum Failed {
    /// The client's error: connecting, or the facts query.
    Pg(postgres::Error),
    /// No answer within this long (the connect and the query).
    Silent(Duration),
    /// No thread to ask on.
    NoThread(std::io::Error),
    /// The measure panicked.
    Panicked(String),
}

impl Failed {
    /// One line saying why, with the client's causes.
    pub(super) fn why(&self) -> String {
        match self {
            Self::Pg(e) => error_chain(e),
            Self::Silent(waited) => format!(
                "no answer within {:.1}s: the server stopped answering",
                waited.as_secs_f64()
            ),
            Self::NoThread(e) => format!("no thread to ask the server on: {e}"),
            Self::Panicked(why) => format!("the measure failed: {why}"),
        }
    }
}

/// The monitor's way to one server: a thread of its own that keeps its client between
/// rounds and measures when asked (so a round starts no thread), and how many such threads
/// still run: the current one, and any given up while they waited for a silent server.
#[derive(Default)]
pub(super) struct Probe {
    worker: Option<Worker>,
    /// Counted up as a measure's thread starts and down as it ends.
    under_way: Arc<AtomicUsize>,
}

/// The first round's probes, which the monitor's thread carries on with.
pub(super) struct Probes {
    pub(super) primary: Probe,
    pub(super) replicas: Vec<Probe>,
}

/// A measure's thread, as its probe sees it.
struct Worker {
    /// A message asks for a measure; dropped, the thread ends (closing its client).
    ask: SyncSender<()>,
    answer: Receiver<Answer>,
    /// Whether it held a client at its last answer (its next measure need not connect).
    connected: bool,
    thread: std::thread::JoinHandle<()>,
}

/// A measure's result, and whether the thread kept a client after it.
struct Answer {
    result: Result<Measured, Failed>,
    connected: bool,
}

/// The most measures' threads that may run for one server at once. More than one: a
/// thread given up on one frozen backend (the monitor's own) waits as long as that backend
/// does, while a new connection to the same server would answer. Few: a server that never
/// answers at all must not gain a thread a round.
const MAX_UNDER_WAY: usize = 3;

/// How long a probe's drop waits for its thread to close the client: the monitor's own
/// connections are gone when `close` returns (within the monitor's `STOP_WAIT`), unless
/// the server does not answer.
const WORKER_EXIT_WAIT: Duration = Duration::from_secs(1);

impl Probe {
    /// Starts the thread that measures the server of `config`.
    fn start(&mut self, config: &postgres::Config) -> Result<Worker, Failed> {
        if self.under_way.load(SeqCst) >= MAX_UNDER_WAY {
            return Err(Failed::Silent(first_wait(config)));
        }
        let (ask, asked) = std::sync::mpsc::sync_channel(1);
        let (answered, answer) = std::sync::mpsc::sync_channel(1);
        self.under_way.fetch_add(1, SeqCst);
        let under_way = Arc::clone(&self.under_way);
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("hive-pg-measure".to_owned())
            .spawn(move || {
                let _ended = crate::sync::defer(|| {
                    under_way.fetch_sub(1, SeqCst);
                });
                serve(&config, &asked, &answered);
            });
        match spawned {
            Ok(thread) => Ok(Worker {
                ask,
                answer,
                connected: false,
                thread,
            }),
            Err(e) => {
                self.under_way.fetch_sub(1, SeqCst);
                Err(Failed::NoThread(e))
            }
        }
    }

    /// Ends its thread, closing its client: a demoted primary's, so the next measure
    /// connects afresh (to a writable host, if the URL names one).
    pub(super) fn reconnect(&mut self) {
        self.worker = None;
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let Some(Worker { ask, thread, .. }) = self.worker.take() else {
            return;
        };
        drop(ask);
        crate::sync::join_within(thread, WORKER_EXIT_WAIT);
    }
}

/// How long a measure that connects first may take.
fn first_wait(config: &postgres::Config) -> Duration {
    ROUND_TRIP + config.get_connect_timeout().copied().unwrap_or(ROUND_TRIP)
}

/// A measure's thread: measures the server of `config` each time it is asked, until its
/// probe lets it go. The client stays between measures; one that failed is dropped here,
/// on this thread, and so is the last one: a client's drop waits for its server, and the
/// monitor must go on. A panic (the client unwraps the runtime it builds to connect, which
/// fails when the process is out of file descriptors) is that measure's failure.
fn serve(config: &postgres::Config, asked: &Receiver<()>, answered: &SyncSender<Answer>) {
    let mut client: Option<Client> = None;
    while asked.recv().is_ok() {
        let measured = catch_unwind(AssertUnwindSafe(|| {
            let mut c = match client.take().filter(|c| !c.is_closed()) {
                Some(c) => c,
                None => config.connect(NoTls)?,
            };
            let m = Measured::query(&mut c)?;
            client = Some(c);
            Ok(m)
        }));
        let result = match measured {
            Ok(m) => m.map_err(Failed::Pg),
            Err(panic) => Err(Failed::Panicked(crate::sync::panic_message(&*panic))),
        };
        let connected = client.is_some();
        if answered.send(Answer { result, connected }).is_err() {
            return;
        }
    }
}

/// Measures the server of `config` on `probe`'s thread, connecting first when it holds no
/// client. The connect and the facts query run there, waited for up to [`ROUND_TRIP`] (and
/// the connect timeout when connecting): the sync client has no bound on a query, nor on
/// the startup exchange after the socket connects (its connect timeout covers only the
/// socket), and a server that stops answering (a frozen backend, whose kernel still
/// acknowledges; a network that drops packets; anything that accepts the connection and
/// says nothing) would hold the monitor for good, its last facts reported as current, and
/// hold `register_postgres`, whose first round is this. A thread given up is let go: it
/// ends (dropping its client) when the server answers or the socket dies, and the next
/// measure starts another; with [`MAX_UNDER_WAY`] of them running, later measures of that
/// server fail at once rather than start another.
pub(super) fn measure(config: &postgres::Config, probe: &mut Probe) -> Result<Measured, Failed> {
    let mut worker = match probe.worker.take() {
        Some(worker) => worker,
        None => probe.start(config)?,
    };
    let wait = if worker.connected {
        ROUND_TRIP
    } else {
        first_wait(config)
    };
    if worker.ask.send(()).is_err() {
        return Err(Failed::Panicked("its thread had ended".to_owned()));
    }
    match worker.answer.recv_timeout(wait) {
        Ok(Answer { result, connected }) => {
            worker.connected = connected;
            probe.worker = Some(worker);
            result
        }
        Err(RecvTimeoutError::Timeout) => Err(Failed::Silent(wait)),
        Err(RecvTimeoutError::Disconnected) => {
            Err(Failed::Panicked("its thread had ended".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config for a port nothing listens on: every connect is refused at once.
    fn refused() -> std::io::Result<postgres::Config> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("nobody")
            .connect_timeout(Duration::from_secs(1));
        Ok(config)
    }

    /// Bug caught: a thread started for every measure (four a second per server at the
    /// default interval), or a probe that loses its thread when a measure fails. One thread
    /// serves every round, and it is counted while it runs.
    #[test]
    fn a_probe_measures_every_round_on_one_thread() -> std::io::Result<()> {
        let config = refused()?;
        let mut probe = Probe::default();
        let mut threads = Vec::new();
        for _ in 0..3 {
            let measured = measure(&config, &mut probe);
            assert!(
                matches!(measured, Err(Failed::Pg(_))),
                "{:?}",
                measured.err().map(|e| e.why())
            );
            let worker = probe.worker.as_ref().expect("the probe keeps its thread");
            assert!(!worker.connected);
            threads.push(worker.thread.thread().id());
            assert_eq!(probe.under_way.load(SeqCst), 1);
        }
        assert!(threads.windows(2).all(|w| w[0] == w[1]), "{threads:?}");
        // Let go, the thread ends and is no longer counted.
        let under_way = Arc::clone(&probe.under_way);
        drop(probe);
        assert_eq!(under_way.load(SeqCst), 0);
        Ok(())
    }

    /// Bug caught: more than [`MAX_UNDER_WAY`] threads for one server, or a probe that
    /// starts no new thread once its given-up ones have ended.
    #[test]
    fn a_probe_starts_no_thread_past_the_bound() -> std::io::Result<()> {
        let config = refused()?;
        let mut probe = Probe::default();
        probe.under_way.store(MAX_UNDER_WAY, SeqCst);
        assert!(matches!(
            measure(&config, &mut probe),
            Err(Failed::Silent(_))
        ));
        assert!(probe.worker.is_none());
        probe.under_way.store(MAX_UNDER_WAY - 1, SeqCst);
        assert!(matches!(measure(&config, &mut probe), Err(Failed::Pg(_))));
        assert!(probe.worker.is_some());
        assert_eq!(probe.under_way.load(SeqCst), MAX_UNDER_WAY);
        Ok(())
    }
}
