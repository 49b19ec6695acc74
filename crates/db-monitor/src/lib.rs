//! db-monitor: reads the pool state of hive-db registries, from their endpoints or their
//! database files, and reports it once, as JSON, or live.
//!
//! The `db-monitor` binary is [`parse_args`] and [`run`]; exit codes follow the Nagios plugin
//! convention (see `--help`). [`Report`] is what a report says; `--json` prints it.
//!
//! # Examples
//!
//! ```
//! use hive_db_core::{DbConfig, DbName, Registry};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("inventory.db");
//! let registry = Registry::new();
//! let config = DbConfig { create_if_missing: true, ..DbConfig::default() };
//! registry.register(&DbName::new("inventory")?, path.clone(), config)?;
//!
//! let db = format!("inventory={}", path.display());
//! let cli = db_monitor::parse_args(["db-monitor", "--json", "--db", db.as_str()])
//!     .map_err(|code| anyhow::anyhow!("refused: {code:?}"))?;
//! // Prints the report on stdout; a healthy database exits 0.
//! assert_eq!(db_monitor::run(&cli)?, std::process::ExitCode::SUCCESS);
//! # Ok(())
//! # }
//! ```

// The modules in layers, leaves first: each uses only the modules above it in this list
// (docs/ARCHITECTURE.md declares the layers and the workspace's tidy test checks them). Inside a
// layer the order is alphabetical, as rustfmt keeps it, and no module uses a later one.
//
// Leaves: the command line, findings, short human forms, stdout, rates, statuses and exit
// codes.
mod cli;
mod finding;
mod fmt;
mod output;
mod rates;
mod status;
// An endpoint: its client, the probe.
mod attach;
mod probe;
// Reading: the announced endpoints, a database file, one sample of every source, the
// sources.
mod discover;
mod file;
mod sample;
mod source;
// Judging: the checks, and the report they go into.
mod checks;
mod report;
// Rendering: the tables.
mod table;
// The modes: `--continuous`, the one-shot report.
mod live;
mod once;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

pub use crate::cli::Cli;
pub use crate::file::{FileFacts, HealthFacts};
pub use crate::finding::{Finding, FindingKind};
pub use crate::probe::ProbeResult;
pub use crate::rates::Rates;
pub use crate::report::{DbReport, Latencies, Percentiles, Pool, Report, Total};
pub use crate::status::COULD_NOT_RUN;

use crate::attach::Endpoint;
use crate::discover::Discovered;
use crate::sample::Sampler;

/// The command line `args` (the program's name first), or the exit code to end with at once:
/// `--help` and `--version` print and give 0; any other clap error is one line on stderr and
/// [`COULD_NOT_RUN`] (clap itself would exit 2, which here means unhealthy).
///
/// # Errors
///
/// The exit code, when the command line asks for no report.
pub fn parse_args<I, T>(args: I) -> Result<Cli, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::error::ErrorKind;
    let e = match Cli::try_parse_from(args) {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return Err(ExitCode::SUCCESS);
    }
    output::diag(&format!("{} (see --help)", cli::first_paragraph(&e)));
    Err(ExitCode::from(COULD_NOT_RUN))
}

/// Prints `err` and its causes as one line on stderr, after the program's name, control
/// characters escaped: what the binary says when it could not run.
pub fn print_error(err: &anyhow::Error) {
    output::diag(&format!("{err:#}"));
}

/// Reports on the sources `cli` names: once, or with `--continuous` until it ends; or
/// shows a recording again (`--replay`).
///
/// Returns the exit code of the worst status reported: 0 healthy, 1 degraded, 2 unhealthy;
/// the same when stdout was closed (`| head`), which ends the run quietly.
///
/// # Errors
///
/// Whatever keeps it from reporting (exit with [`COULD_NOT_RUN`]): a recording that is
/// truncated or not one, a config file that cannot be read, an endpoint named with
/// `--attach` that cannot be read at the first sample, nothing to report on (no source
/// named, no registry announced and no default database), a report that cannot be written.
pub fn run(cli: &Cli) -> Result<ExitCode> {
    // Looked at now, while a terminal is one: once it hangs up, `isatty` fails on it.
    output::note_stdout();
    if let Some(path) = &cli.replay {
        let settings = live::ReplaySettings {
            continuous: cli.continuous,
            json: cli.json,
        };
        return Ok(ExitCode::from(live::replay(path, settings)?));
    }
    let sources = source::resolve(cli)?;
    let mut sampler = Sampler {
        endpoints: sources
            .endpoints
            .iter()
            .map(|e| Endpoint::new(e, cli.timeout))
            .collect(),
        discovered: sources.discover.then(|| Discovered::new(cli.timeout)),
        files: sources.files,
        timeout: cli.timeout,
    };
    for warning in sampler.refresh() {
        output::diag(&warning);
    }
    if !sampler.has_endpoints() && sampler.files.is_empty() {
        anyhow::bail!("{}", source::nothing_to_monitor(&Discovered::folders())?);
    }
    let code = if cli.continuous {
        live::run(
            &mut sampler,
            live::Settings {
                interval: cli.interval.unwrap_or(Duration::from_secs(2)),
                duration: cli.duration,
                slow: cli.slow,
                json: cli.json,
                history: cli.output.clone(),
            },
        )?
    } else {
        once::run(cli, &sampler)?
    };
    Ok(ExitCode::from(code))
}
