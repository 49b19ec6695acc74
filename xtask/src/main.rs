//! Project automation: `cargo xtask ci | bench | loadtest`.
//!
//! Each task runs other cargo commands with the `CARGO` this was started with, so the pinned
//! toolchain is used throughout. Benchmarks and the load test run in an optimised build.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  ci         the gate: fmt --check, clippy -D warnings, tests, docs -D warnings
             (the only place it is written; .ci/run calls it)
  bench      the registry against raw SQLite, r2d2 and deadpool, and on a private
             PostgreSQL against a raw client, r2d2_postgres and deadpool-postgres,
             optimised (--help for flags)
  loadtest   an EcoSystemiser-shaped load on several databases, watched live and verified,
             optimised (--help for flags)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("ci") => ci(),
        Some("bench") => optimised("bench", &rest),
        Some("loadtest") => optimised("loadtest", &rest),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Run from the workspace root whatever the caller's folder.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

fn step(name: &str, mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: {name}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// The gate, the only place it is written (`.ci/run` calls this). The tidy checks run as
/// part of `cargo test --workspace` (the `hive-tests` package).
fn ci() -> anyhow::Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("cargo fmt --all --check", fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy", clippy)?;
    // The core as a dependent application builds it: default features, no dev-dependencies
    // (the workspace's own build turns on the features its tests need).
    let mut core = cargo();
    core.args([
        "clippy",
        "--package",
        "hive-db-core",
        "--lib",
        "--",
        "-D",
        "warnings",
    ]);
    step(
        "cargo clippy -p hive-db-core --lib (default features)",
        core,
    )?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    step("cargo test --workspace", test)?;
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("cargo doc", doc)?;
    Ok(())
}

/// Runs the `hive-bench` binary's `task` in a release build, passing `args` on.
fn optimised(task: &str, args: &[String]) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "hive-bench",
        "--",
    ])
    .arg(task)
    .args(args);
    step(&format!("hive-bench {task} (release build)"), cmd)
}
