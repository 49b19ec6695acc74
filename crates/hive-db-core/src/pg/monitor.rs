//! The monitor of one PostgreSQL database's servers: a thread that, every
//! `monitor_interval`, asks the primary and each replica for their facts on a connection of
//! its own (outside the pools), keeps the primary's write positions, and from them each
//! replica's lag. A server that cannot be reached makes its pool's connections suspect, so
//! they are checked before their next use: after a restart or a failover, none that the
//! server dropped is handed on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::probe::{Failed, Probe, Probes, measure};
use super::replica::{Replica, WalHistory};
use super::server::{Measured, no_writable_host, refusal};
use crate::error::{Error, Refusal, Result};
use crate::pool::PoolShared;
use crate::stats::{DbCounters, PgFacts};
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
    /// The database name's counters.
    pub(super) fn counters(&self) -> &DbCounters {
        &self.primary.info().counters
    }

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
        crate::sync::join_within(handle, STOP_WAIT);
    }

    /// One round: the primary, then each replica against the primary's positions.
    fn round(&self, primary: &mut Probe, replicas: &mut [Probe], configs: &[postgres::Config]) {
        let keep = self.max_lag.saturating_mul(2).max(Duration::from_secs(10));
        let primary = match measure(&self.primary_config, primary) {
            Ok(m) => {
                let mut state = lock(&self.primary_state);
                let ok = m.wrong_role(true).is_none();
                if ok {
                    let before = state.measured.as_ref().and_then(|p| p.timeline);
                    let mut history = lock(&self.history);
                    if before.is_some() && m.timeline.is_some() && before != m.timeline {
                        history.clear();
                    }
                    history.push(m.at, m.wal, keep);
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
                let timeline = m.timeline;
                state.measured = Some(m);
                ok.then_some(timeline)
            }
            Err(e) => {
                let why = e.why();
                let mut state = lock(&self.primary_state);
                if state.error.is_none() {
                    tracing::warn!(db = %self.primary.info().name, error = %why, "the primary cannot be reached");
                }
                state.error = Some(why);
                self.primary.suspect_all();
                None
            }
        };
        let primary_ok = primary.is_some();
        let timeline = primary.flatten();
        for ((replica, client), config) in self.replicas.iter().zip(replicas).zip(configs) {
            match measure(config, client) {
                Ok(m) => {
                    if m.in_recovery
                        && let Some(why) = m.not_following(timeline)
                    {
                        replica.not_following(m, why);
                        continue;
                    }
                    let lag = (primary_ok && m.in_recovery)
                        .then(|| lock(&self.history).lag(m.wal, self.max_lag))
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
            replica_fallbacks: self.counters().replica_fallbacks.load(Relaxed),
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
