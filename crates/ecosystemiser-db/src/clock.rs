//! Wall-clock timestamps as RFC 3339 text in UTC, and unique event ids, without a date crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(crate) fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(since.as_secs(), since.subsec_micros())
}

/// Formats seconds since the Unix epoch (and microseconds) as RFC 3339 UTC.
pub(crate) fn format_utc(secs: u64, micros: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (non-negative only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// An event id unique on this host: time in microseconds, process id and a counter.
pub(crate) fn new_event_id() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("evt-{:x}-{:x}-{n:x}", since.as_micros(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: an off-by-one in the calendar arithmetic (leap days, month ends).
    #[test]
    fn known_dates() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(
            format_utc(1_735_689_599, 999_999),
            "2024-12-31T23:59:59.999999Z"
        );
        assert_eq!(format_utc(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    /// Bug caught: two events of one process getting the same id.
    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_event_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
