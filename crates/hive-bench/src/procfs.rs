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

#[cfg(test)]
mod tests {
    use super::*;

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
}
