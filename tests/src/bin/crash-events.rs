//! A publisher for crash tests: publishes events through ecosystemiser-db's `EventStore` on a
//! registry's pool and acknowledges each.
//!
//! `crash-events PATH SYNC RUN THREADS COMMITS` opens the EcoSystemiser database at PATH
//! (created and migrated if missing) with `EcoDb::with_registry` and `synchronous` SYNC
//! (`normal` or `full`), and prints `ready`. Then THREADS threads each publish COMMITS events
//! (0: until killed), event `k` of a thread being `hive_tests::crash_event(RUN, thread, k)`.
//! After each `publish` returns `Ok`, the thread prints `ack EVENT_ID` with the id `publish`
//! returned and flushes standard output, so a line on the pipe means an event the store
//! reported stored. When every thread is done it prints `done`.
//!
//! Exit codes: 0 done, 1 a publish or the setup failed (the error on standard error), 2 usage.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ecosystemiser_db::{EcoDb, EventStore, Settings};
use hive_db_core::{DbConfig, Registry, Synchronous};
use hive_tests::crash_event;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(parsed) = parse(&args) else {
        eprintln!("usage: crash-events PATH normal|full RUN THREADS COMMITS");
        return ExitCode::from(2);
    };
    match run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crash-events: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    path: String,
    synchronous: Synchronous,
    run: i64,
    threads: i64,
    commits: i64,
}

fn parse(args: &[String]) -> Option<Args> {
    let [path, sync, run, threads, commits] = args else {
        return None;
    };
    Some(Args {
        path: path.clone(),
        synchronous: match sync.as_str() {
            "normal" => Synchronous::Normal,
            "full" => Synchronous::Full,
            _ => return None,
        },
        run: run.parse().ok()?,
        threads: threads.parse().ok()?,
        commits: commits.parse().ok()?,
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let registry = Registry::new();
    let mut settings = Settings::new(&args.path);
    settings.db = DbConfig {
        synchronous: args.synchronous,
        max_size: 4,
        busy_timeout: Duration::from_secs(10),
        connection_timeout: Duration::from_secs(10),
        ..DbConfig::default()
    };
    let db = EcoDb::with_registry(&registry, &settings).context("open")?;
    let events = EventStore::new(&db);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    ack(&out, "ready")?;

    let workers: Vec<_> = (0..args.threads)
        .map(|thread| {
            let (events, out) = (events.clone(), Arc::clone(&out));
            let (run, commits) = (args.run, args.commits);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut k = 0;
                while commits == 0 || k < commits {
                    let id = events
                        .publish(&crash_event(run, thread, k))
                        .with_context(|| format!("publish {run} {thread} {k}"))?;
                    ack(&out, &format!("ack {id}"))?;
                    k += 1;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a publisher thread panicked"))??;
    }
    registry.close_all(Duration::from_secs(5));
    ack(&out, "done")
}

/// Prints one line and flushes it before returning.
fn ack(out: &Mutex<std::io::Stdout>, line: &str) -> anyhow::Result<()> {
    let out = out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = out.lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
