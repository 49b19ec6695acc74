//! What a person meets: the usage text, the flags, the progress line and the report.

use std::io::Write as _;
use std::path::PathBuf;

use super::cells::Moved;

pub(super) const USAGE: &str = "\
usage: eco-move --from PATH --to URL [--replace] [--batch ROWS]

Moves the EcoSystemiser SQLite database at PATH into the PostgreSQL database at URL:
migrates the target, copies every table in batches in one transaction, verifies row counts
and a checksum per table on both sides, and commits only if every table matches.

  --from PATH    the SQLite file (only read)
  --to URL       the PostgreSQL database (postgres://user@host/db or key=value pairs)
  --replace      empty a target that already holds rows (in the same transaction)
  --batch ROWS   rows per COPY batch (default 10000)

The report (one line per table) goes to standard output; progress to standard error.

Exit status: 0 moved and verified; 1 the move failed or did not verify (the target's tables
are left as they were); 2 bad arguments.";

/// The flags.
#[derive(Debug)]
pub(super) struct Args {
    pub(super) from: PathBuf,
    pub(super) to: String,
    pub(super) replace: bool,
    pub(super) batch: usize,
}

pub(super) fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut from, mut to, mut replace, mut batch) = (None, None, false, 10_000usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--from" => from = Some(PathBuf::from(args.next().ok_or("--from needs a PATH")?)),
            "--to" => to = Some(args.next().ok_or("--to needs a URL")?),
            "--replace" => replace = true,
            "--batch" => {
                batch = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--batch needs a number of rows above 0")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        from: from.ok_or("--from PATH is required")?,
        to: to.ok_or("--to URL is required")?,
        replace,
        batch,
    })
}

/// Progress on standard error: one line redrawn on a terminal, nothing otherwise.
#[derive(Debug)]
pub(super) struct Progress {
    terminal: bool,
}

impl Progress {
    pub(super) fn new(terminal: bool) -> Self {
        Self { terminal }
    }

    pub(super) fn show(&self, table: &str, done: u64, total: u64) {
        if self.terminal {
            let width = 30u64;
            let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
            eprint!(
                "\r\x1b[2K{table:<28} [{}{}] {done}/{total} rows",
                "=".repeat(filled),
                " ".repeat(width as usize - filled.min(width as usize))
            );
            let _ = std::io::stderr().flush();
        }
    }

    pub(super) fn clear(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

/// One line per table moved, then the totals, on standard output.
pub(super) fn print_report(moved: &[Moved]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let total: u64 = moved.iter().map(|m| m.rows).sum();
    for m in moved {
        writeln!(
            out,
            "{:<32} {:>10} rows  checksum {:016x}  ok",
            m.table, m.rows, m.checksum
        )?;
    }
    writeln!(
        out,
        "moved and verified: {} tables, {total} rows",
        moved.len()
    )
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    /// Bug caught: flags taken wrongly (a missing --to accepted, a zero batch).
    #[test]
    fn flags_are_checked() {
        let parse = |a: &[&str]| parse_args(a.iter().map(|s| (*s).to_owned()));
        assert!(parse(&["--from", "a"]).is_err());
        assert!(parse(&["--from", "a", "--to", "u", "--batch", "0"]).is_err());
        assert!(parse(&["--from", "a", "--to", "u", "--what"]).is_err());
        let ok = parse(&["--from", "a", "--to", "u", "--replace", "--batch", "5"]);
        assert!(ok.is_ok_and(|a| a.replace && a.batch == 5 && a.to == "u"));
    }
}
