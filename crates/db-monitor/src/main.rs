//! db-monitor: reads the pool state of hive-db registries, from their endpoints or their
//! database files, and reports it once, as JSON, or live. Exit codes follow the Nagios plugin
//! convention (see `--help`).

mod attach;
mod checks;
mod cli;
mod file;
mod fmt;
mod live;
mod output;
mod probe;
mod rates;
mod report;
mod sample;
mod source;
mod table;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::attach::Endpoint;
use crate::cli::Cli;
use crate::output::Written;
use crate::sample::{Depth, Sampler};

/// Exit code for "could not run" (Nagios UNKNOWN).
const COULD_NOT_RUN: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(clap_error(&e)),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DB_MONITOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            output::diag(&format!("{err:#}"));
            ExitCode::from(COULD_NOT_RUN)
        }
    }
}

/// `--help` and `--version` print and exit 0; any other clap error is one line on stderr
/// and "could not run" (clap itself would exit 2, which here means unhealthy).
fn clap_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        _ => {
            // clap's first paragraph names the problem; the rest is usage and tips.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            output::diag(&format!("{first} (see --help)"));
            COULD_NOT_RUN
        }
    }
}

fn run(cli: &Cli) -> Result<u8> {
    let sources = source::resolve(cli)?;
    if let Some(spec) = sources.files.first().filter(|_| sources.default_db) {
        let path = &spec.path;
        if !path.exists() {
            bail!(
                "no EcoSystemiser database at {} yet: nothing to report (the application \
                 creates it on first use); name one with --db, --config or --attach",
                path.display()
            );
        }
    }
    let sampler = Sampler {
        endpoints: sources
            .endpoints
            .iter()
            .map(|e| Endpoint::new(e, cli.timeout))
            .collect(),
        files: sources.files,
        timeout: cli.timeout,
    };
    if cli.continuous {
        return live::run(
            &sampler,
            live::Settings {
                interval: cli.interval.unwrap_or(Duration::from_secs(2)),
                duration: cli.duration,
                slow: cli.slow,
                json: cli.json,
                history: cli.output.clone(),
            },
        );
    }
    one_shot(cli, &sampler)
}

fn one_shot(cli: &Cli, sampler: &Sampler) -> Result<u8> {
    let full = Depth {
        quick_check: true,
        endpoint_files: true,
        probe: cli.probe.map(Duration::from_secs_f64),
    };
    // An endpoint is read twice, an interval apart, for rates and the checks that compare
    // two reads (acquire timeouts rising, an interval's p99 wait).
    let (first, last) = if sampler.endpoints.is_empty() {
        (None, sampler.take(full))
    } else {
        let first = sampler.take(Depth {
            quick_check: false,
            endpoint_files: false,
            probe: None,
        });
        if let Some(e) = first.endpoint_errors.first() {
            bail!("{e}");
        }
        std::thread::sleep(cli.interval.unwrap_or(Duration::from_secs(1)));
        (Some(first), sampler.take(full))
    };
    let report = report::build(first.as_ref(), &last, cli.slow);
    let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
    if let Some(path) = &cli.output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    for d in &report.databases {
        for f in d
            .findings
            .iter()
            .filter(|f| f.status == hive_db_core::HealthStatus::Unhealthy)
        {
            output::diag(&format!("{}: {}", d.name, f.message));
        }
    }
    let text = if cli.json {
        format!("{json}\n")
    } else {
        let width = std::io::stdout()
            .is_terminal()
            .then(|| crossterm::terminal::size().ok().map(|(w, _)| w))
            .flatten();
        table::full(&report, width)
    };
    match output::stdout(&text).context("cannot write to stdout")? {
        Written::Yes => Ok(report.exit_code),
        Written::PipeClosed => Ok(0),
    }
}
