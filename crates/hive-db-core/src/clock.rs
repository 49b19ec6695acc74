//! The process clock: [`Stamp`]s (instants as integers, so atomics can hold them) and the
//! coarse clock that checkouts read instead of the system clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

/// The origin of every [`Stamp`], set by the first `Registry` (see [`start`]).
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// The clock's origin on the wall clock, in milliseconds since the Unix epoch: worked out
/// once, right after the origin is set, and never again, so that a step of the wall clock
/// (NTP) or a suspend (the monotonic clock stops, the wall clock does not) later on leaves
/// it as it was. Another process reading two snapshots tells a restart by it changing.
static STARTED_UNIX_MS: Lazy<u64> = Lazy::new(|| {
    let since_origin = EPOCH.elapsed();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.saturating_sub(since_origin).as_millis()).unwrap_or(u64::MAX)
});

/// Sets the clock's origin, if it is not set yet. The snapshot's uptime counts from here.
pub(crate) fn start() {
    Lazy::force(&EPOCH);
    Lazy::force(&STARTED_UNIX_MS);
}

/// When the clock's origin was set, on the wall clock as it read then: milliseconds since
/// the Unix epoch.
pub(crate) fn started_at_unix_ms() -> u64 {
    *STARTED_UNIX_MS
}

/// `start + timeout`, or, when that instant cannot be represented (`Duration::MAX`), one
/// about a century later: a deadline that never comes, without `Instant` overflowing.
#[inline]
pub(crate) fn deadline(start: Instant, timeout: Duration) -> Instant {
    const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(NEVER))
        .unwrap_or(start)
}

/// Time since the clock's origin.
pub(crate) fn uptime() -> Duration {
    EPOCH.elapsed()
}

/// An instant, as nanoseconds after the clock's origin. It fits in an [`AtomicStamp`], and
/// costs nothing to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// The stamp of `at` (the origin for an instant before it).
    #[inline]
    pub(crate) fn of(at: Instant) -> Self {
        Self(u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX))
    }

    /// The clock's origin.
    pub(crate) const ORIGIN: Self = Self(0);

    /// Later than every instant: what [`Stamp::after`] gives past the end of the range.
    pub(crate) const NEVER: Self = Self(u64::MAX);

    /// `self + by`, or [`Stamp::NEVER`] when that is past the end of the range.
    pub(crate) fn after(self, by: Duration) -> Self {
        u64::try_from(by.as_nanos())
            .ok()
            .and_then(|n| self.0.checked_add(n))
            .map_or(Self::NEVER, Self)
    }

    /// The instant this stamp stands for.
    pub(crate) fn instant(self) -> Instant {
        *EPOCH + Duration::from_nanos(self.0)
    }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later (an integer, not a
    /// `Duration`: the checkout path compares it with a precomputed bound).
    #[inline]
    pub(crate) fn nanos_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// An `Option<Stamp>` behind an atomic. `None` is stored as 0 and a stamp as its nanoseconds
/// plus one, which only this type sees.
#[derive(Debug, Default)]
pub(crate) struct AtomicStamp(AtomicU64);

impl AtomicStamp {
    #[inline]
    fn encode(stamp: Option<Stamp>) -> u64 {
        stamp.map_or(0, |s| s.0.saturating_add(1))
    }

    #[inline]
    fn decode(bits: u64) -> Option<Stamp> {
        bits.checked_sub(1).map(Stamp)
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> Option<Stamp> {
        Self::decode(self.0.load(order))
    }

    #[inline]
    pub(crate) fn store(&self, stamp: Option<Stamp>, order: Ordering) {
        self.0.store(Self::encode(stamp), order);
    }

    /// Stores `stamp` and returns the stamp it replaced.
    pub(crate) fn swap(&self, stamp: Option<Stamp>, order: Ordering) -> Option<Stamp> {
        Self::decode(self.0.swap(Self::encode(stamp), order))
    }
}

/// The coarse clock: a stamp the clock thread (`pool::maintenance`) advances every [`TICK`].
/// A checkout reads it with one load instead of a clock read (about 35 ns here). It serves
/// validation windows and leak ages, where a few milliseconds do not matter.
static COARSE_NOW: AtomicStamp = AtomicStamp(AtomicU64::new(0));

/// How often the coarse clock advances.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Advances the coarse clock to now.
pub(crate) fn tick() {
    COARSE_NOW.store(Some(Stamp::of(Instant::now())), Ordering::Relaxed);
}

/// The coarse clock's time: at most about [`TICK`] behind, once it is ticking (the origin
/// before that).
#[inline]
pub(crate) fn coarse_now() -> Stamp {
    COARSE_NOW.load(Ordering::Relaxed).unwrap_or(Stamp(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the origin stored as "none", so a connection checked out at the clock's
    /// origin looks idle, or a stamp that does not come back as the instant it stands for.
    #[test]
    fn stamps_round_trip_through_the_atomic() {
        let cell = AtomicStamp::default();
        assert_eq!(cell.load(Ordering::Relaxed), None);
        let origin = Stamp::of(*EPOCH);
        cell.store(Some(origin), Ordering::Relaxed);
        assert_eq!(cell.load(Ordering::Relaxed), Some(origin));
        let later = Stamp::of(*EPOCH + Duration::from_millis(3));
        assert_eq!(cell.swap(Some(later), Ordering::Relaxed), Some(origin));
        assert_eq!(later.nanos_since(origin), 3_000_000);
        assert_eq!(origin.nanos_since(later), 0);
        assert_eq!(later.instant(), *EPOCH + Duration::from_millis(3));
        cell.store(None, Ordering::Relaxed);
        assert_eq!(cell.load(Ordering::Relaxed), None);
    }

    /// Bug caught: `Instant + Duration::MAX` panicking in a deadline, or an unrepresentable
    /// deadline turned into one that has already passed.
    #[test]
    fn a_deadline_saturates_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(deadline(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 60 * 60));
    }
}
