//! `hive-bench`: the benchmark and load-test driver behind `cargo xtask bench` and
//! `cargo xtask loadtest`. Run it through xtask, which builds it optimised.

mod asynch;
mod bench;
mod loadtest;
mod many_dbs;
mod measure;
mod procfs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "hive-db benchmarks and load test (use cargo xtask bench | loadtest)")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The registry against raw SQLite, r2d2, deadpool-sqlite and connect-per-op; on
    /// PostgreSQL, against a raw client, r2d2_postgres and deadpool-postgres.
    Bench(bench::BenchArgs),
    /// An EcoSystemiser-shaped load on several databases, watched live, then verified.
    Loadtest(loadtest::LoadArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Bench(args) => bench::main(args),
        Task::Loadtest(args) => loadtest::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hive-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
