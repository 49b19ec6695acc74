//! Short human forms of durations, sizes and rates for tables, and text made safe for a
//! terminal.

use std::borrow::Cow;
use std::time::Duration;

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a file name or an
/// endpoint's error message shown on a terminal must neither break its line (every problem
/// is one line on stderr) nor send the terminal escape sequences.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `850ns`, `12.3µs`, `4.50ms`, `1.20s`: three significant figures or so.
pub(crate) fn duration(d: Duration) -> String {
    nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// [`duration`] of a count of nanoseconds.
pub(crate) fn nanos(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

/// [`duration`] of a number of milliseconds.
pub(crate) fn millis(ms: f64) -> String {
    nanos((ms * 1e6).max(0.0) as u64)
}

/// `12.3 MiB`.
pub(crate) fn bytes(b: u64) -> String {
    bytesize::ByteSize::b(b).display().iec().to_string()
}

/// `0`, `3.5`, `1250`: a rate per second without noise.
pub(crate) fn rate(r: f64) -> String {
    if r == 0.0 {
        "0".to_owned()
    } else if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a unit boundary off by a factor of 1000.
    #[test]
    fn units() {
        assert_eq!(nanos(999), "999ns");
        assert_eq!(nanos(1_500), "1.5µs");
        assert_eq!(nanos(2_500_000), "2.50ms");
        assert_eq!(nanos(1_200_000_000), "1.20s");
        assert_eq!(millis(4.5), "4.50ms");
        assert_eq!(bytes(2048), "2.0 KiB");
    }

    /// Bug caught: a newline or an escape sequence in a path or message passed to the
    /// terminal as it was (a forged second line, colours changed), or text without any
    /// changed.
    #[test]
    fn printable_escapes_only_control_characters() {
        assert_eq!(printable("/tmp/é b.db"), "/tmp/é b.db");
        assert_eq!(
            printable("no\nUNHEALTHY y: forged\u{1b}[31m\r"),
            "no\\nUNHEALTHY y: forged\\u{1b}[31m\\r"
        );
    }
}
