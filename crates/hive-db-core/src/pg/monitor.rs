//! The monitor of one PostgreSQL database's servers: a thread that, every
//! `monitor_interval`, asks the primary and each replica for their facts on a connection of
//! its own (outside the pools), keeps the primary's write positions, and from them each
//! replica's lag. A server that cannot be reached makes its pool's connections suspect, so
//! they are checked before their next use: after a restart or a failover, none that the
//! server dropped is handed on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::replica::{Replica, WalHistory};
use super::server::{Measured, no_writable_host, refusal};
use crate::error::{Error, Refusal, Result, error_chain};
use crate::pool::PoolShared;
use crate::stats::PgFacts;
use crate::sync::lock;

/// The longest `stop` waits for the monitor's thread to end.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The longest a monitor's connect may take: a silent server must not stall the rounds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the monitor last saw of the primary.
#[derive(Default)]
struct PrimaryState {
    measured: Option<Measured>,
    error: Option<String>,
}

/// A database's servers, as the reads and the monitor share them.
pub(super) struct Servers {
    primary: Arc<PoolShared>,
    primary_config: postgres::Config,
    primary_state: Mutex<PrimaryState>,
    history: Mutex<WalHistory>,
    pub(super) replicas: Vec<Replica>,
    /// Round-robin position among the replicas.
    pub(super) next: AtomicUsize,
    pub(super) fallbacks: AtomicU64,
    pub(super) max_lag: Duration,
    interval: Duration,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// `config` for the monitor's own connection: a short connect timeout and its own name.
fn monitor_config(config: &postgres::Config, db: &str) -> postgres::Config {
    let mut config = config.clone();
    if config
        .get_connect_timeout()
        .is_none_or(|t| *t > CONNECT_TIMEOUT)
    {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name(&format!("{db} (hive-db monitor)"));
    config
}

impl Servers {
    pub(super) fn new(
        primary: Arc<PoolShared>,
        primary_config: &postgres::Config,
        replicas: Vec<Replica>,
        max_lag: Duration,
        interval: Duration,
    ) -> Self {
        let db = primary.info().name.to_string();
        Self {
            primary_config: monitor_config(primary_config, &db),
            primary,
            primary_state: Mutex::default(),
            history: Mutex::default(),
            replicas,
            next: AtomicUsize::new(0),
            fallbacks: AtomicU64::new(0),
            max_lag,
            interval,
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }

    fn monitor_configs(&self) -> Vec<postgres::Config> {
        self.replicas
            .iter()
            .map(|r| monitor_config(&r.config, r.pool.info().name.as_str()))
            .collect()
    }

    /// The first round, at `register`: each server measured once, and refused when it
    /// cannot be what it is registered as (a primary that cannot take writes, a replica that
    /// is not a standby) or refuses us for good (a login, a missing database). A server that
    /// cannot be reached is not refused here: the pool's wait for `min_idle` judges the
    /// primary, and a replica stays down until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] naming the server.
    pub(super) fn first_round(&self) -> Result<Probes> {
        let refused = |target: &Path, cause, e: Option<postgres::Error>| Error::Refused {
            db: self.primary.info().name.clone(),
            target: target.to_path_buf(),
            cause,
            code: e
                .as_ref()
                .and_then(|e| e.code().map(|c| c.code().to_owned())),
            source: e.map(|e| Box::new(e) as _),
        };
        let check = |config: &postgres::Config,
                     client: &mut Probe,
                     target: &Path,
                     primary: bool|
         -> Result<()> {
            match measure(config, client) {
                Ok(m) => match m.wrong_role(primary) {
                    Some(cause) => Err(refused(target, cause, None)),
                    None => Ok(()),
                },
                Err(Failed::Pg(e)) => match refusal(&e) {
                    Some(cause) => Err(refused(target, cause, Some(e))),
                    None if primary && no_writable_host(&e) => {
                        Err(refused(target, Refusal::NotWritable, Some(e)))
                    }
                    None => Ok(()),
                },
                // Not reachable now: judged by the pool's wait, or down until it answers.
                Err(Failed::Silent(_) | Failed::NoThread(_) | Failed::Panicked(_)) => Ok(()),
            }
        };
        let configs = self.monitor_configs();
        let mut primary = Probe::default();
        check(
            &self.primary_config,
            &mut primary,
            &self.primary.info().path,
            true,
        )?;
        let mut clients: Vec<Probe> = (0..configs.len()).map(|_| Probe::default()).collect();
        for ((replica, client), config) in self.replicas.iter().zip(&mut clients).zip(&configs) {
            check(config, client, replica.target(), false)?;
        }
        self.round(&mut primary, &mut clients, &configs);
        Ok(Probes {
            primary,
            replicas: clients,
        })
    }

    /// Starts the monitor's thread, which carries on with the first round's `probes` (their
    /// clients); it ends at [`Servers::stop`] or when `self` is dropped.
    pub(super) fn start(self: &Arc<Self>, probes: Probes) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let configs = self.monitor_configs();
        let handle = std::thread::Builder::new()
            .name(format!("hive-pg-monitor-{}", self.primary.info().name))
            .spawn(move || run(&weak, &configs, probes))?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    /// Ends the monitor's thread (at its next wake-up, which this brings forward).
    pub(super) fn stop(&self) {
        self.stop.store(true, Relaxed);
        if let Some(handle) = lock(&self.thread).as_ref() {
            handle.thread().unpark();
        }
    }

    /// [`Servers::stop`], then waits up to [`STOP_WAIT`] for the thread to end, so that its
    /// own connections are closed when `close` or the registry's drop returns (they used to
    /// linger on the server a moment after). A thread in the middle of a measure of a
    /// silent server is left to end on its own; from the monitor's own thread (its last
    /// reference dropped there) this does not wait for itself.
    pub(super) fn stop_and_wait(&self) {
        self.stop();
        let Some(handle) = lock(&self.thread).take() else {
            return;
        };
        if handle.thread().id() == std::thread::current().id() {
            return;
        }
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !handle.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }

    /// One round: the primary, then each replica against the primary's positions.
    fn round(&self, primary: &mut Probe, replicas: &mut [Probe], configs: &[postgres::Config]) {
        let keep = self.max_lag.saturating_mul(2).max(Duration::from_secs(10));
        let primary_ok = match measure(&self.primary_config, primary) {
            Ok(m) => {
                let mut state = lock(&self.primary_state);
                let ok = m.wrong_role(true).is_none();
                if ok {
                    lock(&self.history).push(m.at, m.wal, keep);
                    state.error = None;
                } else {
                    // A primary demoted under us: writes fail there. Its connections go, and
                    // the monitor's own reconnects (to a writable host, if the URL names one).
                    state.error = Some(
                        "the server is in recovery or read-only: it cannot take writes".to_owned(),
                    );
                    self.primary.suspect_all();
                    primary.reconnect();
                }
                state.measured = Some(m);
                ok
            }
            Err(e) => {
                let why = e.why();
                let mut state = lock(&self.primary_state);
                if state.error.is_none() {
                    tracing::warn!(db = %self.primary.info().name, error = %why, "the primary cannot be reached");
                }
                state.error = Some(why);
                self.primary.suspect_all();
                false
            }
        };
        for ((replica, client), config) in self.replicas.iter().zip(replicas).zip(configs) {
            match measure(config, client) {
                Ok(m) => {
                    let lag = (primary_ok && m.in_recovery)
                        .then(|| lock(&self.history).lag(m.wal))
                        .flatten();
                    replica.measured(m, lag);
                }
                Err(e) => replica.down(e.why()),
            }
        }
    }

    /// How long a replica's last measure counts as current: two monitor intervals. Past
    /// that, its lag grows with the clock.
    pub(super) fn grace(&self) -> Duration {
        self.interval * 2
    }

    /// What the snapshot shows.
    pub(super) fn facts(&self) -> PgFacts {
        let state = lock(&self.primary_state);
        PgFacts {
            primary: state.measured.as_ref().map(Measured::facts),
            primary_error: state.error.clone(),
            replicas: self
                .replicas
                .iter()
                .map(|r| r.snapshot(self.max_lag, self.grace()))
                .collect(),
            replica_fallbacks: self.fallbacks.load(Relaxed),
        }
    }
}

/// How long the monitor waits for a server's answer before it counts the server
/// unreachable for the round (and gives its client up).
const ROUND_TRIP: Duration = Duration::from_secs(5);

/// Why a measure failed.
enum Failed {
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
    fn why(&self) -> String {
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
struct Probe {
    worker: Option<Worker>,
    /// Counted up as a measure's thread starts and down as it ends.
    under_way: Arc<AtomicUsize>,
}

/// The first round's probes, which the monitor's thread carries on with.
pub(super) struct Probes {
    primary: Probe,
    replicas: Vec<Probe>,
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
/// connections are gone when `close` returns (within [`STOP_WAIT`]), unless the server
/// does not answer.
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
    fn reconnect(&mut self) {
        self.worker = None;
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let Some(Worker { ask, thread, .. }) = self.worker.take() else {
            return;
        };
        drop(ask);
        let deadline = std::time::Instant::now() + WORKER_EXIT_WAIT;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
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
fn measure(config: &postgres::Config, probe: &mut Probe) -> Result<Measured, Failed> {
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

fn run(weak: &Weak<Servers>, configs: &[postgres::Config], probes: Probes) {
    let Probes {
        mut primary,
        replicas: mut clients,
    } = probes;
    loop {
        let Some(servers) = weak.upgrade() else {
            return;
        };
        if servers.stop.load(Relaxed) {
            return;
        }
        // A panic in a round must not end the thread: the facts would stop updating, and
        // health would report the last ones for good. (The client's own panics, on its
        // connect when the process is out of file descriptors, are caught on the measures'
        // threads, as that measure's failure.)
        let round = catch_unwind(AssertUnwindSafe(|| {
            servers.round(&mut primary, &mut clients, configs);
        }));
        if let Err(panic) = round {
            tracing::error!(
                db = %servers.primary.info().name,
                panic = %crate::sync::panic_message(&*panic),
                "a round of the PostgreSQL monitor panicked; its clients are dropped and the \
                 next round starts afresh"
            );
            primary = Probe::default();
            clients.iter_mut().for_each(|c| *c = Probe::default());
        }
        let interval = servers.interval;
        drop(servers);
        std::thread::park_timeout(interval);
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
