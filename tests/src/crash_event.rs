//! The events `crash-events` publishes, rebuilt from their ids so that a test can check each
//! one it finds reads back exactly as it was published.

use ecosystemiser_db::Event;
use serde_json::json;

use crate::Rng;

/// The id of event `k` of writer thread `thread` in run `run`.
pub fn crash_event_id(run: i64, thread: i64, k: i64) -> String {
    format!("crash-{run}-{thread}-{k}")
}

/// `(run, thread, k)` of an id made by [`crash_event_id`].
pub fn parse_crash_event_id(id: &str) -> Option<(i64, i64, i64)> {
    let mut parts = id.strip_prefix("crash-")?.split('-');
    let key = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(key)
}

/// Event `k` of thread `thread` in run `run`: the same every time, with every optional field
/// set on some events and not on others, and a padding string of up to 1,500 characters so
/// that the WAL grows and crashes also land in checkpoints.
pub fn crash_event(run: i64, thread: i64, k: i64) -> Event {
    let mut rng = Rng::new(((run as u64) << 40) ^ ((thread as u64) << 24) ^ (k as u64));
    let pad: String = (0..rng.range(0, 1500))
        .map(|_| char::from(b'a' + rng.range(0, 26) as u8))
        .collect();
    let payload = json!({
        "run": run,
        "thread": thread,
        "k": k,
        "share": k as f64 / 8.0,
        "tags": ["crash", format!("t{thread}")],
        "pad": pad,
    });
    let mut event = Event::new("crash.published", format!("writer-{thread}"), payload);
    event.event_id = crash_event_id(run, thread, k);
    // Fixed text, not the clock: the test rebuilds the event.
    event.timestamp = format!("2026-01-01T00:00:{:02}.{k:06}Z", thread % 60);
    event = event.correlated(format!("run-{run}"));
    if k % 2 == 0 {
        event = event.for_simulation(format!("sim-{thread}"));
    }
    if k % 3 == 0 {
        event.metadata = Some(json!({"k_mod_3": 0, "nested": {"run": run}}));
    }
    event
}
