//! Short human forms of durations, sizes and rates for tables.

use std::time::Duration;

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
}
