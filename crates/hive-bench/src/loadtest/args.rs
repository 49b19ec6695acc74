//! The flags of `cargo xtask loadtest`, checked into a [`Plan`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};

use crate::loadtest::mix::Mix;
use crate::loadtest::pgserver::Server;
use crate::loadtest::progress::Style;
use crate::loadtest::run::Limit;
use crate::loadtest::store::Backend;
use crate::loadtest::workload::Layer;

/// Flags of `loadtest`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every check passed, 1 when a check failed (its \
    name is printed on standard error) or the load test could not run.\n\n\
    With --backend postgres the same mix and the same seven checks run on PostgreSQL \
    (docs/OPERATIONS.md says what each check means there)."
)]
pub(crate) struct LoadArgs {
    /// Worker threads, each running operations drawn from the mix one after another.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) workers: u32,
    /// How long the workers run, in seconds (unless --ops is given).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub(crate) seconds: f64,
    /// Operations each worker runs, instead of running for --seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ops: Option<u64>,
    /// Application databases next to `ecosystemiser`, each with the orchestrator's tasks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub(crate) databases: u32,
    /// Seed of the workers' random operation streams: the same seed and worker count draw
    /// the same operations.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Operation weights as name=weight,... (names left out keep their default weight).
    #[arg(long, default_value_t = Mix::default())]
    pub(crate) mix: Mix,
    /// The engine of the databases: SQLite files, or databases of a PostgreSQL server.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub(crate) backend: Backend,
    /// With --backend postgres: a connection URL (or key=value string) of a database on the
    /// server to use, whose user may create and drop databases; each run creates databases
    /// of its own on it (hive_loadtest_PID_RUN_ecosystemiser, .._app_N) and drops them
    /// afterwards. Without it, a private PostgreSQL 15 server is started and stopped (it needs
    /// the postgresql-15 programs in /usr/lib/postgresql/15/bin).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Pool size (`max_size`) of every database.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) max_size: u32,
    /// Folder for the SQLite files: must not exist yet or be empty (default: a temporary
    /// folder, removed afterwards).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Where the metrics endpoint listens (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// Also run the same workload, same seed, with the ecosystemiser operations in plain SQL
    /// (no data layer): through the registry (five pairs against the data layer's runs), a
    /// connection per operation, plain r2d2, and one raw connection per database on one
    /// worker (five pairs against the registry's; on PostgreSQL: the registry and plain
    /// r2d2_postgres); print the ratios.
    #[arg(long)]
    pub(crate) compare: bool,
    /// Print the whole report as one JSON object on standard output.
    #[arg(long)]
    pub(crate) json: bool,
}

fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!("{v} is not between 0 and 86400 seconds"));
    }
    Ok(v)
}

/// A checked load test: what to run, where, and how to show it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) workers: usize,
    pub(crate) limit: Limit,
    pub(crate) app_dbs: usize,
    pub(crate) seed: u64,
    pub(crate) mix: Mix,
    /// How the `ecosystemiser` operations run: through the data layer, except in
    /// `--compare`'s plain-SQL runs.
    pub(crate) layer: Layer,
    pub(crate) max_size: u32,
    pub(crate) dir: Option<PathBuf>,
    /// The PostgreSQL server, for `--backend postgres`; `None` on SQLite.
    pub(crate) server: Option<Server>,
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) compare: bool,
    pub(crate) json: bool,
    pub(crate) progress: Style,
    /// Compare the whole process's open files before and after, not only those in the
    /// data folder (off in tests, whose neighbours open files at the same time).
    pub(crate) whole_process_files: bool,
    /// How long closing waits for borrowed connections.
    pub(crate) close_timeout: Duration,
}

impl Plan {
    /// The engine of the run's databases.
    pub(crate) fn backend(&self) -> Backend {
        match self.server {
            None => Backend::Sqlite,
            Some(_) => Backend::Postgres,
        }
    }
}

impl Plan {
    /// Checks `args`.
    ///
    /// # Errors
    ///
    /// When task operations have a weight but there are no application databases, or
    /// `--dir` is not empty.
    pub(crate) fn from_args(args: LoadArgs) -> anyhow::Result<Self> {
        ensure!(
            args.databases > 0 || !args.mix.has_tasks(),
            "the mix has task operations but --databases is 0: give task_* a weight of 0 \
             or add databases"
        );
        ensure!(
            args.backend == Backend::Postgres || args.url.is_none(),
            "--url names a PostgreSQL server: give --backend postgres too"
        );
        ensure!(
            args.backend == Backend::Sqlite || args.dir.is_none(),
            "--dir is the SQLite files' folder: PostgreSQL keeps its databases on the server"
        );
        if let Some(dir) = &args.dir
            && dir.exists()
            && std::fs::read_dir(dir)?.next().is_some()
        {
            bail!(
                "--dir {} is not empty: the verifier needs databases that hold only this \
                 run's writes",
                dir.display()
            );
        }
        Ok(Self {
            workers: args.workers as usize,
            limit: match args.ops {
                Some(n) => Limit::OpsPerWorker(n),
                None => Limit::Time(Duration::from_secs_f64(args.seconds)),
            },
            app_dbs: args.databases as usize,
            seed: args.seed,
            mix: args.mix,
            layer: Layer::Repositories,
            max_size: args.max_size,
            dir: args.dir,
            server: match args.backend {
                Backend::Sqlite => None,
                Backend::Postgres => Some(args.url.map_or(Server::Private, Server::Given)),
            },
            listen: Some(args.listen),
            compare: args.compare,
            json: args.json,
            progress: Style::Auto,
            whole_process_files: true,
            close_timeout: Duration::from_secs(5),
        })
    }
}
