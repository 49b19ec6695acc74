//! `eco-move`: moves an EcoSystemiser SQLite database into PostgreSQL.
//!
//! It migrates the target to the full schema first (through `EcoDb`), then copies every table
//! of the source in batches (`COPY .. FROM STDIN BINARY`, parents before the tables that
//! reference them) inside ONE PostgreSQL transaction, sets each identity column's sequence
//! past the copied ids, reads every table back in the same transaction and compares its row
//! count and checksum with the source's, and commits only when all of them match. So an
//! interrupted or failed move leaves the target's tables as they were: empty (the migrated
//! schema only).
//!
//! The source is never written. It is opened read-only and copied (`VACUUM INTO`, a
//! consistent snapshot, WAL included) into a temporary folder; the copy is brought to the
//! current schema by the data layer (any version it adopts, the original code's files
//! included), and the move reads the copy. A source column the target's schema does not
//! have (one someone added) is refused by name rather than left behind; indexes, triggers
//! and views someone added are schema, not rows, and are listed as not moved.
//!
//! - `failure`: the one error line, and the context each error gets.
//! - `cells`: values on their way, and the checksum both sides compute.
//! - `cli`: the usage, the flags, the progress line and the report.
//! - `target`: the target's tables, their order, the copy, the sequences, the read back.
//! - `source`: the source's snapshot and what it holds beyond the schema.
//! - `run`: the move, in one transaction.

#[cfg(feature = "postgres")]
mod cells;
#[cfg(feature = "postgres")]
mod cli;
#[cfg(feature = "postgres")]
mod failure;
#[cfg(feature = "postgres")]
mod run;
#[cfg(feature = "postgres")]
mod source;
#[cfg(feature = "postgres")]
mod target;

#[cfg(feature = "postgres")]
fn main() -> std::process::ExitCode {
    use std::io::{IsTerminal, Write as _};
    use std::process::ExitCode;

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        // A closed pipe (`| head`) ends quietly.
        let _ = writeln!(std::io::stdout().lock(), "{}", cli::USAGE);
        return ExitCode::SUCCESS;
    }
    let args = match cli::parse_args(args.into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("eco-move: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    // Ctrl-C or SIGTERM: the target's transaction rolls back as the connection closes,
    // unless its `COMMIT` is out already; the snapshot goes either way (the process ends
    // without running drops).
    let _ = ctrlc::set_handler(|| {
        source::remove_temporary();
        let target = match run::PHASE.load(std::sync::atomic::Ordering::SeqCst) {
            run::MOVING => "nothing committed on the target",
            run::COMMITTING => {
                "the move's COMMIT was out: it may have committed; look at the target \
                 before running again"
            }
            _ => "the move had committed",
        };
        eprintln!("eco-move: interrupted; {target}; the snapshot removed");
        std::process::exit(130);
    });
    let progress = cli::Progress::new(std::io::stderr().is_terminal());
    match run::run(&args, &progress) {
        Ok(moved) => match cli::print_report(&moved) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("eco-move: cannot write the report: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        },
        Err(e) => {
            progress.clear();
            eprintln!("eco-move: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "postgres"))]
fn main() -> std::process::ExitCode {
    eprintln!("eco-move: built without ecosystemiser-db's `postgres` feature: nothing to move to");
    std::process::ExitCode::FAILURE
}
