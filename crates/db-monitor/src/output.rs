//! Writing to stdout and stderr where a closed pipe is an ordinary end, not an error.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::OFlags;

/// Whether a write reached its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// The reader went away (`| head`, a terminal that hung up): stop quietly.
    PipeClosed,
}

/// Whether stdout is a terminal, as [`note_stdout`] found it at the start (a terminal that
/// hung up is not one any more: `isatty` fails on it).
static STDOUT_TERMINAL: OnceLock<bool> = OnceLock::new();

/// Notes whether stdout is a terminal; at the start of a run, before it can hang up.
pub(crate) fn note_stdout() {
    STDOUT_TERMINAL.get_or_init(|| io::stdout().is_terminal());
}

fn stdout_is_terminal() -> bool {
    *STDOUT_TERMINAL.get_or_init(|| io::stdout().is_terminal())
}

/// Whether `e`, met writing to stdout or to the terminal (`terminal`), means the reader went
/// away: a closed pipe, or a terminal that hung up (SIGHUP: an ssh session dropped, the
/// terminal window closed), whose writes and reads fail with `EIO`.
pub(crate) fn reader_gone(e: &io::Error, terminal: bool) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
        || (terminal && e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()))
}

/// [`reader_gone`] for an error with context: any cause in its chain.
pub(crate) fn gone(e: &anyhow::Error, terminal: bool) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| reader_gone(e, terminal))
    })
}

/// Writes `text` to stdout and flushes it.
///
/// # Errors
///
/// Any write error but a closed pipe or a hung-up terminal.
pub(crate) fn stdout(text: &str) -> io::Result<Written> {
    let terminal = stdout_is_terminal();
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(Written::Yes),
        Err(e) if reader_gone(&e, terminal) => Ok(Written::PipeClosed),
        Err(e) => Err(e),
    }
}

/// One line on stderr, prefixed with the program's name, its control characters escaped.
/// Errors are ignored: there is nowhere left to report them.
pub(crate) fn diag(line: &str) {
    let line = crate::fmt::printable(line);
    let _ = writeln!(io::stderr().lock(), "db-monitor: {line}");
}

/// Creates or truncates `path` (`--output`, `--history`) without waiting for a reader: a
/// FIFO that no process reads fails at once, where a plain open would wait for one without
/// end, and deaf to Ctrl-C and SIGTERM (their handler only asks the sampling loop to stop).
/// What it opens is written to as usual (a FIFO's reader that stops reading holds the
/// writes, as a pipe on stdout does).
///
/// # Errors
///
/// The open's error; a FIFO without a reader says so.
pub(crate) fn create(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
                io::Error::other("it is a FIFO that no process reads, or a socket")
            } else {
                e
            }
        })?;
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags.difference(OFlags::NONBLOCK))?;
    Ok(file)
}
