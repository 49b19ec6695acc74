//! What Linux's `/proc/self` says about this process: threads, memory, open files.
//!
//! Each reader returns 0 (or nothing) where `/proc` is unavailable, so the reports still
//! print; the load test's file check treats an unreadable `/proc/self/fd` as a failure.

use std::path::{Path, PathBuf};

/// A field of `/proc/self/status`, as its first number (`Threads:`, `VmRSS:` in KiB, ...).
fn status_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The process's threads now.
pub(crate) fn thread_count() -> u64 {
    status_field("Threads").unwrap_or(0)
}

/// The process's resident set size now, in bytes.
pub(crate) fn rss_bytes() -> u64 {
    status_field("VmRSS").map_or(0, |kib| kib * 1024)
}

/// The process's peak resident set size so far, in bytes.
pub(crate) fn peak_rss_bytes() -> u64 {
    status_field("VmHWM").map_or(0, |kib| kib * 1024)
}

/// The process's open file descriptors, each with what it points at.
///
/// # Errors
///
/// When `/proc/self/fd` cannot be read.
pub(crate) fn open_files() -> std::io::Result<Vec<PathBuf>> {
    let mut targets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // A descriptor closed between listing and reading (the listing's own among them)
        // is simply no longer open.
        if let Ok(target) = std::fs::read_link(entry?.path()) {
            targets.push(target);
        }
    }
    Ok(targets)
}

/// How many of `files` point inside `dir`.
pub(crate) fn files_under(files: &[PathBuf], dir: &Path) -> usize {
    files.iter().filter(|f| f.starts_with(dir)).count()
}

/// Each thread's time on a CPU so far (`/proc/self/task/*/schedstat`, nanoseconds), by
/// thread id: two readings tell which threads ran between them. Empty where `/proc` does
/// not say (not Linux).
#[derive(Debug, Default)]
pub(crate) struct CpuTimes(std::collections::HashMap<u32, u64>);

impl CpuTimes {
    /// The reading now.
    pub(crate) fn now() -> Self {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Self::default();
        };
        let times = dir
            .flatten()
            .filter_map(|entry| {
                let tid = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
                let on_cpu = stat.split_whitespace().next()?.parse().ok()?;
                Some((tid, on_cpu))
            })
            .collect();
        Self(times)
    }

    /// The threads that ran at least `cell / 100` on a CPU between `self` and `later` (a
    /// thread started meanwhile counts from zero).
    pub(crate) fn busy_until(
        &self,
        later: &CpuTimes,
        cell: std::time::Duration,
    ) -> std::collections::HashSet<u32> {
        let floor = u64::try_from(cell.as_nanos() / 100).unwrap_or(u64::MAX);
        later
            .0
            .iter()
            .filter(|(tid, after)| {
                let before = self.0.get(tid).copied().unwrap_or(0);
                after.saturating_sub(before) >= floor
            })
            .map(|(tid, _)| *tid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Bug caught: a parser that misses the `/proc` fields, so every report says 0 threads,
    /// 0 bytes, or no open files, and the load test's file check can never fail.
    #[test]
    fn reads_this_process() -> anyhow::Result<()> {
        assert!(thread_count() >= 1);
        assert!(rss_bytes() > 0);
        assert!(peak_rss_bytes() >= rss_bytes() / 2);
        let dir = tempfile::tempdir()?;
        let dir = dir.path().canonicalize()?;
        let file = std::fs::File::create(dir.join("held"))?;
        assert_eq!(files_under(&open_files()?, &dir), 1);
        drop(file);
        assert_eq!(files_under(&open_files()?, &dir), 0);
        Ok(())
    }

    /// This thread's id, as `/proc` names it.
    fn tid() -> Option<u32> {
        let link = std::fs::read_link("/proc/thread-self").ok()?;
        link.file_name()?.to_str()?.parse().ok()
    }

    /// Bug caught: the async bench's threads column counting every thread alive (or none),
    /// not the ones that worked: spinning threads are counted, sleeping ones are not.
    #[test]
    fn only_threads_that_ran_are_counted() {
        let Some(_) = tid() else {
            return; // no /proc here
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for busy in [true, true, false, false] {
            let (stop, tx) = (Arc::clone(&stop), tx.clone());
            threads.push(std::thread::spawn(move || {
                let _ = tx.send((busy, tid()));
                // A parked thread takes no CPU at all until it is unparked at the end (a
                // sleeping loop's wake-ups could add up to the floor on a busy machine).
                while !stop.load(Relaxed) {
                    if busy {
                        std::hint::spin_loop();
                    } else {
                        std::thread::park();
                    }
                }
            }));
        }
        let tids: Vec<(bool, Option<u32>)> = rx.iter().take(4).collect();
        let before = CpuTimes::now();
        let cell = Duration::from_millis(300);
        std::thread::sleep(cell);
        let after = CpuTimes::now();
        stop.store(true, Relaxed);
        for t in threads {
            t.thread().unpark();
            t.join().ok();
        }
        let counted = before.busy_until(&after, cell);
        for (busy, tid) in tids {
            let tid = tid.expect("a thread's id");
            assert_eq!(
                counted.contains(&tid),
                busy,
                "thread {tid} busy={busy}: {counted:?}"
            );
        }
    }
}
