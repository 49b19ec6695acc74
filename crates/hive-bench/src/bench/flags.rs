//! The flags of `cargo xtask bench`, and the rounds they ask for.

use std::time::Duration;

/// Flags of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Seconds one round of one measurement runs, in the write scenarios (write_contention,
    /// mixed): long enough for SQLite's busy handler to show its worst case.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) seconds: f64,
    /// Rounds in the write scenarios: the paths of a scenario run in turn, this many times,
    /// and each is reported by its median round.
    #[arg(long, default_value_t = 9)]
    pub(crate) rounds: usize,
    /// Seconds of one round in the read scenarios (checkout, point_read, multi_db). Short
    /// rounds keep the two sides of a ratio close in time, so the machine's drift between
    /// them is small.
    #[arg(long, default_value_t = 0.04)]
    pub(crate) read_seconds: f64,
    /// Rounds in the read scenarios.
    #[arg(long, default_value_t = 45)]
    pub(crate) read_rounds: usize,
    /// Rows in the point-read table.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rows: u64,
    /// Threads for the multi-threaded scenarios.
    #[arg(long, default_value_t = 8)]
    pub(crate) threads: usize,
    /// Run only these scenarios (checkout, point_read, write_contention, mixed, multi_db,
    /// pg_point_read, async, many_dbs). `async` runs min(rounds, 3) rounds of `seconds` per
    /// cell.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Run only the paths whose names contain one of these (for profiling one path).
    #[arg(long, value_delimiter = ',')]
    pub(crate) paths: Vec<String>,
    /// Print every round's result on standard error.
    #[arg(long)]
    pub(crate) verbose: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How many rounds a scenario runs, and how long each lasts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rounds {
    pub(super) count: usize,
    pub(super) each: Duration,
}

impl BenchArgs {
    pub(super) fn write_rounds(&self) -> Rounds {
        Rounds {
            count: self.rounds.max(1),
            each: Duration::from_secs_f64(self.seconds),
        }
    }

    pub(super) fn read_rounds(&self) -> Rounds {
        Rounds {
            count: self.read_rounds.max(1),
            each: Duration::from_secs_f64(self.read_seconds),
        }
    }
}
