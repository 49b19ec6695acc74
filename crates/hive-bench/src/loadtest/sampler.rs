//! A thread that reads the registry's snapshot while the load runs: it checks that no pool
//! ever has more connections open than its `max_size`, and keeps each database's peaks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use hive_db_core::Registry;

use crate::loadtest::pool::{Peaks, over_max};

/// Time between samples.
pub(crate) const INTERVAL: Duration = Duration::from_millis(10);

/// What the sampler saw.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    /// Snapshots taken.
    pub(crate) samples: u64,
    /// Samples where a pool had more open than `max_size`: (database, live, max).
    pub(crate) over_max: Vec<(String, u32, u32)>,
    /// Peaks per database name.
    pub(crate) peaks: BTreeMap<String, Peaks>,
}

impl Sampled {
    /// Takes one snapshot in.
    pub(crate) fn sample(&mut self, registry: &Registry) {
        self.samples += 1;
        for db in &registry.stats().databases {
            let name = db.name.to_string();
            if let Some((live, max)) = over_max(db)
                && self.over_max.len() < 10
            {
                self.over_max.push((name.clone(), live, max));
            }
            self.peaks.entry(name).or_default().observe(db);
        }
    }
}

/// Samples `registry` every [`INTERVAL`] until `stop` is set, then once more.
pub(crate) fn run(registry: &Registry, stop: &AtomicBool) -> Sampled {
    let mut sampled = Sampled::default();
    while !stop.load(Relaxed) {
        sampled.sample(registry);
        std::thread::park_timeout(INTERVAL);
    }
    sampled.sample(registry);
    sampled
}
