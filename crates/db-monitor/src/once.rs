//! The one-shot report: one read (two for an endpoint, an interval apart), checked, written
//! as tables or JSON.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::Cli;
use crate::output::{self, Written};
use crate::report;
use crate::sample::{Depth, Sampler};
use crate::table;

/// Reads, reports, and returns the exit code of the report's status (also when stdout was
/// closed).
///
/// # Errors
///
/// An endpoint that cannot be read at the first read, or a report that cannot be written.
pub(crate) fn run(cli: &Cli, sampler: &Sampler) -> Result<u8> {
    let full = Depth::full(cli.probe);
    // An endpoint is read twice, an interval apart, for rates and the checks that compare
    // two reads (acquire timeouts rising, an interval's p99 wait).
    let (first, last) = if !sampler.has_endpoints() {
        (None, sampler.take(full))
    } else {
        let first = sampler.take_first(Depth::BASIC)?;
        std::thread::sleep(cli.interval.unwrap_or(Duration::from_secs(1)));
        (Some(first), sampler.take(full))
    };
    // A registry killed between the two reads: its announcement, removed, is the only
    // trace, and no refresh comes after.
    for warning in sampler.late_warnings() {
        output::diag(&warning);
    }
    let report = report::build(first.as_ref(), &last, cli.slow);
    let json = || serde_json::to_string_pretty(&report).context("cannot encode the report");
    if let Some(path) = &cli.output {
        let json = json()?;
        output::create(path)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, format!("{json}\n").as_bytes())
            })
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    let label = report.labeler();
    for d in &report.databases {
        for f in d
            .findings
            .iter()
            .filter(|f| f.status == hive_db_core::HealthStatus::Unhealthy)
        {
            output::diag(&format!("{}: {}", label(d), f.message));
        }
    }
    let text = if cli.json {
        format!("{}\n", json()?)
    } else {
        let width = std::io::stdout()
            .is_terminal()
            .then(|| crossterm::terminal::size().ok().map(|(w, _)| w))
            .flatten();
        table::full(&report, width)
    };
    // A closed pipe (`| head`) ends the report quietly, with the status all the same: a
    // check that pipes the report must not see "healthy" because the report was long.
    let _: Written = output::stdout(&text).context("cannot write to stdout")?;
    Ok(report.exit_code())
}
