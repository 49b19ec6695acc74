//! Writing to stdout and stderr where a closed pipe is an ordinary end, not an error.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use rustix::fs::OFlags;

/// Whether a write reached its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// The reader went away (`| head`): stop quietly.
    PipeClosed,
}

/// Writes `text` to stdout and flushes it.
///
/// # Errors
///
/// Any write error but a closed pipe.
pub(crate) fn stdout(text: &str) -> io::Result<Written> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(Written::Yes),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Written::PipeClosed),
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
