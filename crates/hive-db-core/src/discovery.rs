//! Finding this user's registries on this host: where an endpoint announces itself, the
//! announcement's format, whether the process behind one still runs, and the listing that
//! a monitor reads.
//!
//! An endpoint (`endpoint` feature) writes one small JSON file per running endpoint into a
//! per-user folder, [`folder`]: `$XDG_RUNTIME_DIR/hive-db`, else `hive-db-<uid>` in the
//! temporary folder. The folder is `0700` and the files `0600`; a folder owned by another
//! user, or writable by group or others, is refused by both sides, and neither follows a
//! symbolic link. An announcement names the process (its id and its start time, so that a
//! recycled process id is recognised) and the loopback address it serves on; the databases
//! are read live from that address's `/stats`, so the file never goes stale while the
//! process runs. [`list`] returns the live announcements and why every other file was
//! skipped; stale ones (the process is gone) are removed on the way.
//!
//! ```no_run
//! # fn main() -> Result<(), hive_db_core::discovery::DiscoveryError> {
//! let listing = hive_db_core::discovery::list()?;
//! for a in &listing.live {
//!     println!("pid {} serves http://{}", a.pid, a.addr);
//! }
//! for s in &listing.skipped {
//!     eprintln!("ignored: {s}");
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `format` field of every announcement, telling it from any other JSON file.
pub const ANNOUNCEMENT_FORMAT: &str = "hive-db-endpoint";

/// The announcement format's version. A reader skips other versions
/// ([`SkipReason::UnsupportedVersion`]).
pub const ANNOUNCEMENT_VERSION: u32 = 1;

/// Largest announcement read; anything longer is not one.
const MAX_ANNOUNCEMENT: u64 = 4096;

/// One running endpoint, as its file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Announcement {
    /// The process serving it.
    pub pid: u32,
    /// The process's start time, in clock ticks since boot (field 22 of `/proc/PID/stat`):
    /// a process that reuses the id has another.
    pub start_time: u64,
    /// Where it listens: a loopback address (a reader skips any other), or every address
    /// (`0.0.0.0`, `[::]`), which a reader reads as loopback's of the same family.
    pub addr: SocketAddr,
    /// Its PID namespace (the inode of `/proc/self/ns/pid`): its `pid` means that process
    /// only there. Absent from older announcements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
}

/// An announcement's file: the format's name and version, then the announcement.
#[derive(Serialize, Deserialize)]
struct Wire {
    format: String,
    version: u32,
    #[serde(flatten)]
    announcement: Announcement,
}

impl Announcement {
    /// This process serving on `addr`.
    ///
    /// # Errors
    ///
    /// When `/proc/self/stat` cannot be read.
    pub fn of_this_process(addr: SocketAddr) -> io::Result<Self> {
        let pid = std::process::id();
        let start_time = start_time(pid)?
            .ok_or_else(|| io::Error::other("this process is not listed in /proc"))?;
        Ok(Self {
            pid,
            start_time,
            addr,
            pid_ns: pid_namespace().ok(),
        })
    }

    /// The file's contents: one JSON object, with the format's name and version.
    pub fn to_json(&self) -> String {
        let wire = Wire {
            format: ANNOUNCEMENT_FORMAT.to_owned(),
            version: ANNOUNCEMENT_VERSION,
            announcement: self.clone(),
        };
        // A struct of numbers and strings always serialises.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads an announcement back, or says why `text` is not one this version reads.
    ///
    /// # Errors
    ///
    /// [`SkipReason::Foreign`] for anything but an announcement (not JSON, another
    /// `format`, missing fields), [`SkipReason::UnsupportedVersion`] for another version,
    /// [`SkipReason::NotLoopback`] for an address other hosts could reach but loopback
    /// cannot. An endpoint bound to every address (`0.0.0.0`, `[::]`, the way to expose it
    /// to a scraper on another host) answers on loopback too: its address reads back as
    /// loopback's (`127.0.0.1`, `::1`), port kept.
    pub fn from_json(text: &str) -> Result<Self, SkipReason> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| SkipReason::Foreign)?;
        if value.get("format").and_then(serde_json::Value::as_str) != Some(ANNOUNCEMENT_FORMAT) {
            return Err(SkipReason::Foreign);
        }
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(ANNOUNCEMENT_VERSION) => {}
            Some(v) => return Err(SkipReason::UnsupportedVersion(v)),
            None => return Err(SkipReason::Foreign),
        }
        let wire: Wire = serde_json::from_value(value).map_err(|_| SkipReason::Foreign)?;
        let mut a = wire.announcement;
        if a.addr.ip().is_unspecified() {
            a.addr.set_ip(match a.addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        if !a.addr.ip().is_loopback() {
            return Err(SkipReason::NotLoopback(a.addr));
        }
        Ok(a)
    }

    /// The file name it is kept under: process id, address and port (`4242-127.0.0.1-41623.json`,
    /// `4242-::1-41623.json`), so one process may serve several endpoints, on one port of two
    /// loopback addresses too.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.json", self.pid, self.addr.ip(), self.addr.port())
    }

    /// Whether its process still runs: the id is listed with the same start time, and is
    /// not a zombie (killed, not yet reaped).
    pub fn is_live(&self) -> bool {
        start_time(self.pid).ok().flatten() == Some(self.start_time)
    }
}

/// The start time of process `pid` in clock ticks since boot; `None` when no such process
/// runs (gone, or a zombie).
///
/// # Errors
///
/// When `/proc/PID/stat` exists but cannot be read or parsed.
fn start_time(pid: u32) -> io::Result<Option<u64>> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold spaces or `)`: the fields
    // after the last `)` start with the state (field 3).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&("Z" | "X"))) {
        return Ok(None);
    }
    fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .map(Some)
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat"))
}

/// This process's PID namespace: the inode of `/proc/self/ns/pid`.
fn pid_namespace() -> io::Result<u64> {
    Ok(fs::metadata("/proc/self/ns/pid")?.ino())
}

/// This process's effective user id: the owner of `/proc/self`.
fn uid() -> io::Result<u32> {
    Ok(fs::metadata("/proc/self")?.uid())
}

/// `XDG_RUNTIME_DIR`, when it is an absolute path.
fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
}

/// The folder announcements live in: `$XDG_RUNTIME_DIR/hive-db` when that variable is an
/// absolute path, else `hive-db-<uid>` in [`std::env::temp_dir`].
///
/// # Errors
///
/// [`DiscoveryError::Io`] when the user id cannot be read (no `/proc`).
pub fn folder() -> Result<PathBuf, DiscoveryError> {
    if let Some(dir) = runtime_dir() {
        return Ok(dir.join("hive-db"));
    }
    Ok(std::env::temp_dir().join(format!("hive-db-{}", folder_uid()?)))
}

/// This process's user id, for the folders' names.
fn folder_uid() -> Result<u32, DiscoveryError> {
    uid().map_err(|source| DiscoveryError::Io {
        path: PathBuf::from("/proc/self"),
        source,
    })
}

/// Every folder a registry of this user may announce in, [`folder`] first: with
/// `XDG_RUNTIME_DIR` set, also `hive-db-UID` in the temporary folder; without it, also
/// `/run/user/UID/hive-db` (where that variable usually points). A service started without
/// a login session (systemd, cron) has no `XDG_RUNTIME_DIR`, and a monitor run with
/// `sudo -u` loses it: by [`folder`] alone, each would look in the other's folder.
///
/// # Errors
///
/// As [`folder`].
pub fn folders() -> Result<Vec<PathBuf>, DiscoveryError> {
    let uid = folder_uid()?;
    let first = folder()?;
    let other = if runtime_dir().is_some() {
        std::env::temp_dir().join(format!("hive-db-{uid}"))
    } else {
        PathBuf::from(format!("/run/user/{uid}/hive-db"))
    };
    Ok(if other == first {
        vec![first]
    } else {
        vec![first, other]
    })
}

/// Checks that `dir` is a folder (not a link to one) of this user that no one else may
/// write to: both the endpoint, before announcing, and [`list_in`] refuse any other.
///
/// # Errors
///
/// [`DiscoveryError::UnsafeFolder`] saying what is wrong; [`DiscoveryError::Io`] when it
/// cannot be examined.
pub fn check_folder(dir: &Path) -> Result<(), DiscoveryError> {
    let io_err = |source| DiscoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(dir).map_err(io_err)?;
    let me = uid().map_err(io_err)?;
    let unsafe_folder = |reason: String| {
        Err(DiscoveryError::UnsafeFolder {
            path: dir.to_path_buf(),
            reason,
        })
    };
    if meta.file_type().is_symlink() {
        return unsafe_folder("it is a symbolic link".to_owned());
    }
    if !meta.is_dir() {
        return unsafe_folder("it is not a folder".to_owned());
    }
    if meta.uid() != me {
        return unsafe_folder(format!("it belongs to user {}, not {me}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return unsafe_folder(format!(
            "group or others may write to it (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Why a file of the folder was not listed as live.
#[derive(Debug)]
#[non_exhaustive]
pub enum SkipReason {
    /// Not an announcement: not JSON, another `format`, fields missing, or too long.
    Foreign,
    /// An announcement of a version this reader does not know.
    UnsupportedVersion(u64),
    /// An announcement of an address other hosts could reach: never followed.
    NotLoopback(SocketAddr),
    /// Its process is gone, or its id now belongs to another process; the file was
    /// removed (`pruned`) or could not be.
    Stale {
        /// The process id it named.
        pid: u32,
        /// Whether the file was removed.
        pruned: bool,
    },
    /// Owned by another user.
    NotOurs {
        /// The owner's user id.
        owner: u32,
    },
    /// Announced from another PID namespace (another container, say, sharing the folder):
    /// its process id cannot be checked from here, so the file is left alone.
    OtherPidNamespace {
        /// The process id it named, in its own namespace.
        pid: u32,
    },
    /// A symbolic link, a folder or anything else that is not a regular file.
    NotAFile,
    /// It could not be read.
    Unreadable(io::Error),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Foreign => write!(f, "not a hive-db endpoint announcement"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "announcement format version {v}; this reader knows version {ANNOUNCEMENT_VERSION}"
            ),
            Self::NotLoopback(addr) => write!(f, "points to {addr}, which is not loopback"),
            Self::Stale { pid, pruned: true } => {
                write!(f, "process {pid} no longer runs (removed)")
            }
            Self::Stale { pid, pruned: false } => write!(f, "process {pid} no longer runs"),
            Self::NotOurs { owner } => write!(f, "belongs to user {owner}"),
            Self::OtherPidNamespace { pid } => write!(
                f,
                "process {pid} of another PID namespace, which cannot be checked from here"
            ),
            Self::NotAFile => write!(f, "not a regular file"),
            Self::Unreadable(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

impl SkipReason {
    /// Whether the file is something a user should hear about: anything but a stale
    /// announcement, which is the ordinary trace of a process that was killed, and one of
    /// another PID namespace, the ordinary trace of a container sharing the folder.
    pub fn is_suspicious(&self) -> bool {
        !matches!(self, Self::Stale { .. } | Self::OtherPidNamespace { .. })
    }
}

/// A file of the folder that was not listed as live, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What [`list`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Listing {
    /// The announcements of running processes, by process id and port.
    pub live: Vec<Announcement>,
    /// Every other file, with why.
    pub skipped: Vec<Skipped>,
}

/// Why the folder could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The folder is not safe to use: another user's, writable by others, or a link.
    #[error("refusing the announcement folder {}: {reason}", path.display())]
    UnsafeFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The folder, or what locates it, could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// The live announcements in [`folder`], and why every other file there was skipped; stale
/// announcements are removed. A folder that does not exist lists nothing.
///
/// # Errors
///
/// As [`folder`] and [`list_in`].
pub fn list() -> Result<Listing, DiscoveryError> {
    list_in(&folder()?)
}

/// [`list`] for the folder `dir`. Files whose names start with `.` (an announcement being
/// written) are passed over in silence, and removed when their writer abandoned them.
///
/// # Errors
///
/// [`DiscoveryError::UnsafeFolder`] for a folder [`check_folder`] refuses;
/// [`DiscoveryError::Io`] when it cannot be read.
pub fn list_in(dir: &Path) -> Result<Listing, DiscoveryError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        _ => check_folder(dir)?,
    }
    let io_err = |source| DiscoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let me = uid().map_err(io_err)?;
    let my_ns = pid_namespace().ok();
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            prune_if_abandoned(&entry.path(), me);
            continue;
        }
        let path = entry.path();
        match read_one(&path, me) {
            // Its pid names another process here, or none: neither live nor stale.
            Ok(a) if a.pid_ns.is_some() && a.pid_ns != my_ns => listing.skipped.push(Skipped {
                path,
                reason: SkipReason::OtherPidNamespace { pid: a.pid },
            }),
            Ok(a) if a.is_live() => listing.live.push(a),
            Ok(a) => {
                let pruned = fs::remove_file(&path).is_ok();
                listing.skipped.push(Skipped {
                    path,
                    reason: SkipReason::Stale { pid: a.pid, pruned },
                });
            }
            Err(reason) => listing.skipped.push(Skipped { path, reason }),
        }
    }
    listing
        .live
        .sort_by_key(|a| (a.pid, a.addr.port(), a.addr.ip()));
    listing.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// How old an announcement being written (`.PID-ADDRESS-PORT.json.tmp`) must be before a reader
/// may take it for abandoned: writing one takes microseconds.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes `path` if it is an announcement being written (`.PID-ADDRESS-PORT.json.tmp`, or
/// `.PID-PORT.json.tmp` from a version that named them so; this
/// user's regular file) that its writer abandoned: no process of that id runs here and it
/// is older than [`ABANDONED_AFTER`] (the age keeps a writer of another PID namespace, whose
/// id means nothing here, from losing its file mid-write). A process killed while writing
/// left it for good otherwise.
fn prune_if_abandoned(path: &Path, me: u32) {
    let Some(pid) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(".json.tmp"))
        .and_then(|n| n.split_once('-'))
        .and_then(|(pid, rest)| {
            let port = rest.rsplit_once('-').map_or(rest, |(_, port)| port);
            port.parse::<u16>().ok().and(pid.parse::<u32>().ok())
        })
    else {
        return;
    };
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > ABANDONED_AFTER);
    if meta.file_type().is_file() && meta.uid() == me && old && matches!(start_time(pid), Ok(None))
    {
        let _ = fs::remove_file(path);
    }
}

/// One file of the folder, checked: a regular file of this user (`me`), not a link, read
/// through the same inode it was checked as.
fn read_one(path: &Path, me: u32) -> Result<Announcement, SkipReason> {
    let meta = fs::symlink_metadata(path).map_err(SkipReason::Unreadable)?;
    if !meta.file_type().is_file() {
        return Err(SkipReason::NotAFile);
    }
    if meta.uid() != me {
        return Err(SkipReason::NotOurs { owner: meta.uid() });
    }
    let file = fs::File::open(path).map_err(SkipReason::Unreadable)?;
    let opened = file.metadata().map_err(SkipReason::Unreadable)?;
    // Replaced between the check and the open (by a link, say): not what was checked.
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(SkipReason::NotAFile);
    }
    let mut text = String::new();
    file.take(MAX_ANNOUNCEMENT + 1)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => SkipReason::Foreign,
            _ => SkipReason::Unreadable(e),
        })?;
    if text.len() as u64 > MAX_ANNOUNCEMENT {
        return Err(SkipReason::Foreign);
    }
    Announcement::from_json(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Announcement {
        Announcement::of_this_process(SocketAddr::from(([127, 0, 0, 1], 9187))).unwrap()
    }

    /// Bug caught: the format not reading back, the version or format tag not checked, or
    /// an address off loopback accepted.
    #[test]
    fn format_round_trip_and_refusals() {
        let a = here();
        assert_eq!(Announcement::from_json(&a.to_json()).unwrap(), a);
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(v["format"], ANNOUNCEMENT_FORMAT);
        assert_eq!(v["version"], ANNOUNCEMENT_VERSION);
        let with = |key: &str, value: serde_json::Value| {
            let mut v = v.clone();
            v[key] = value;
            Announcement::from_json(&v.to_string())
        };
        assert!(matches!(
            with("version", 2.into()),
            Err(SkipReason::UnsupportedVersion(2))
        ));
        assert!(matches!(
            with("format", "other".into()),
            Err(SkipReason::Foreign)
        ));
        assert!(matches!(
            with("addr", "10.0.0.1:80".into()),
            Err(SkipReason::NotLoopback(_))
        ));
        // Bug caught: an endpoint bound to every address (the way to let another host's
        // scraper in) skipped as off loopback, though it answers there: no monitor found it.
        for (bound, read) in [
            ("0.0.0.0:9187", "127.0.0.1:9187"),
            ("[::]:9187", "[::1]:9187"),
        ] {
            let got = with("addr", bound.into()).map(|a| a.addr.to_string());
            assert!(got.as_deref().ok() == Some(read), "{bound}: {got:?}");
        }
        assert!(matches!(with("pid", "x".into()), Err(SkipReason::Foreign)));
        assert!(matches!(
            Announcement::from_json("not json"),
            Err(SkipReason::Foreign)
        ));
    }

    /// Bug caught: this process taken for gone, or another start time (a recycled id) or a
    /// process that does not exist taken for live.
    #[test]
    fn liveness_compares_the_start_time() {
        let a = here();
        assert!(a.is_live());
        let recycled = Announcement {
            start_time: a.start_time + 1,
            ..a.clone()
        };
        assert!(!recycled.is_live());
        // Above the kernel's largest process id (4194304).
        let gone = Announcement {
            pid: 99_999_999,
            ..a
        };
        assert!(!gone.is_live());
    }
}
