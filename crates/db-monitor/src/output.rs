//! Writing to stdout and stderr where a closed pipe is an ordinary end, not an error.

use std::io::{self, Write};

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

/// One line on stderr, prefixed with the program's name. Errors are ignored: there is
/// nowhere left to report them.
pub(crate) fn diag(line: &str) {
    let _ = writeln!(io::stderr().lock(), "db-monitor: {line}");
}
