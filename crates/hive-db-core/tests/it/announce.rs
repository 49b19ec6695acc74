//! The endpoint's announcement and the discovery listing: the file while it serves, gone
//! when it stops, the folder's and file's permissions, stale and foreign files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hive_db_core::discovery::{self, Announcement, DiscoveryError, SkipReason};
use hive_db_core::endpoint::{self, Announce, EndpointConfig};

use crate::support::{TestResult, config, eventually, fixture};

fn announcing_in(dir: &Path) -> EndpointConfig {
    EndpointConfig {
        announce: Announce::Folder(dir.to_path_buf()),
        ..EndpointConfig::default()
    }
}

fn mode(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// An announcement of this process on `addr`, as JSON with `edit` applied.
fn announcement_json(
    addr: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<String> {
    let a = Announcement::of_this_process(addr.parse()?)?;
    let mut v: serde_json::Value = serde_json::from_str(&a.to_json())?;
    edit(&mut v);
    Ok(v.to_string())
}

/// Bug caught: an endpoint that does not announce itself, an announcement a reader cannot
/// parse or that names another address or process, a folder or file others may read, or
/// a file left behind by `stop` or drop (a monitor would then try a dead address).
#[test]
fn endpoint_announces_while_it_serves() -> TestResult {
    let f = fixture("announced", config())?;
    let folder = f.dir.path().join("hive-db");
    let ep = endpoint::serve(&f.registry, announcing_in(&folder))?;
    let file = ep
        .announcement()
        .ok_or_else(|| anyhow::anyhow!("not announced"))?
        .to_path_buf();
    assert_eq!(file.parent(), Some(folder.as_path()));
    assert_eq!(mode(&folder)?, 0o700);
    assert_eq!(mode(&file)?, 0o600);
    let listing = discovery::list_in(&folder)?;
    assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
    assert_eq!(listing.live.len(), 1);
    assert_eq!(listing.live[0].addr, ep.addr());
    assert_eq!(listing.live[0].pid, std::process::id());
    // Only the announcement: the hidden file it was written under is renamed into place.
    assert_eq!(std::fs::read_dir(&folder)?.count(), 1);
    ep.stop();
    assert!(!file.exists(), "announcement left after stop");
    assert!(discovery::list_in(&folder)?.live.is_empty());

    let dropped = endpoint::serve(&f.registry, announcing_in(&folder))?;
    let file = dropped
        .announcement()
        .ok_or_else(|| anyhow::anyhow!("not announced"))?
        .to_path_buf();
    assert!(file.exists());
    drop(dropped);
    assert!(!file.exists(), "announcement left after drop");

    let off = EndpointConfig {
        announce: Announce::Off,
        ..EndpointConfig::default()
    };
    let quiet = endpoint::serve(&f.registry, off)?;
    assert!(quiet.announcement().is_none());
    assert_eq!(std::fs::read_dir(&folder)?.count(), 0);
    Ok(())
}

/// Bug caught: announcements named by process and port only. Two endpoints of one process
/// on one port of two loopback addresses (dual-stack "localhost", say) shared one file: the
/// second's replaced the first's, so discovery never found the first, and stopping either
/// removed the other's.
#[test]
fn two_endpoints_on_one_port_are_announced_apart() -> TestResult {
    let f = fixture("announced-twice", config())?;
    let folder = f.dir.path().join("hive-db");
    let first = endpoint::serve(&f.registry, announcing_in(&folder))?;
    let second = endpoint::serve(
        &f.registry,
        EndpointConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 2], first.addr().port())),
            ..announcing_in(&folder)
        },
    )?;
    let listed = || -> anyhow::Result<Vec<std::net::SocketAddr>> {
        Ok(discovery::list_in(&folder)?
            .live
            .iter()
            .map(|a| a.addr)
            .collect())
    };
    assert_eq!(listed()?, [first.addr(), second.addr()]);
    second.stop();
    assert_eq!(listed()?, [first.addr()]);
    first.stop();
    assert!(listed()?.is_empty());
    Ok(())
}

/// Bug caught: announcing into (or listing) a folder others may write to, or one reached
/// through a symbolic link, where another user could plant or redirect announcements.
#[test]
fn unsafe_folders_are_refused() -> TestResult {
    let f = fixture("unsafe", config())?;
    let open = f.dir.path().join("open");
    std::fs::create_dir(&open)?;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777))?;
    let ep = endpoint::serve(&f.registry, announcing_in(&open))?;
    assert!(ep.announcement().is_none());
    assert_eq!(std::fs::read_dir(&open)?.count(), 0);
    assert!(matches!(
        discovery::list_in(&open),
        Err(DiscoveryError::UnsafeFolder { .. })
    ));

    let real = f.dir.path().join("real");
    std::fs::create_dir(&real)?;
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700))?;
    let link = f.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link)?;
    let ep = endpoint::serve(&f.registry, announcing_in(&link))?;
    assert!(ep.announcement().is_none());
    assert_eq!(std::fs::read_dir(&real)?.count(), 0);
    assert!(matches!(
        discovery::list_in(&link),
        Err(DiscoveryError::UnsafeFolder { .. })
    ));
    // A folder that does not exist yet lists nothing, and is not created by reading.
    let none = f.dir.path().join("none");
    assert!(discovery::list_in(&none)?.live.is_empty());
    assert!(!none.exists());
    Ok(())
}

/// Bug caught: an announcement being written (`.PID-ADDRESS-PORT.json.tmp`) by a process killed
/// mid-write stayed in the folder for good. One whose process is gone and that is older
/// than a minute is removed; a fresh one, or one of a running process, stays.
#[test]
fn an_abandoned_announcement_being_written_is_removed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("hive-db");
    std::fs::create_dir(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    let made = |name: &str, age: Duration| -> anyhow::Result<std::path::PathBuf> {
        let path = folder.join(name);
        let file = std::fs::File::create(&path)?;
        file.set_modified(std::time::SystemTime::now() - age)?;
        Ok(path)
    };
    // Above the kernel's largest process id: no such process.
    let abandoned = made(
        ".99999999-127.0.0.1-9187.json.tmp",
        Duration::from_secs(120),
    )?;
    let abandoned_v6 = made(".99999999-::1-9187.json.tmp", Duration::from_secs(120))?;
    // Named as an earlier version named them.
    let abandoned_earlier = made(".99999999-9190.json.tmp", Duration::from_secs(120))?;
    let fresh = made(".99999999-127.0.0.1-9188.json.tmp", Duration::ZERO)?;
    let running = made(
        &format!(".{}-127.0.0.1-9189.json.tmp", std::process::id()),
        Duration::from_secs(120),
    )?;
    let other = made(".notes.tmp", Duration::from_secs(120))?;
    let listing = discovery::list_in(&folder)?;
    assert!(
        listing.live.is_empty() && listing.skipped.is_empty(),
        "{listing:?}"
    );
    for path in [abandoned, abandoned_v6, abandoned_earlier] {
        assert!(!path.exists(), "the abandoned {} stayed", path.display());
    }
    assert!(fresh.exists() && running.exists() && other.exists());
    Ok(())
}

/// Bug caught: a monitor in another PID namespace (a container sharing the folder, or
/// `unshare --pid --mount-proc`) took every announcement for stale, since its `/proc` lists
/// none of their processes, and removed them: the host's own monitor then found no
/// registry. An announcement without the namespace (an older writer) is judged as before.
#[test]
fn an_announcement_of_another_pid_namespace_is_left_alone() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("hive-db");
    std::fs::create_dir(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    let ours = std::fs::metadata("/proc/self/ns/pid")?.ino();
    // Above the kernel's largest process id: no such process here.
    let theirs = announcement_json("127.0.0.1:9", |v| {
        v["pid"] = 99_999_999.into();
        v["pid_ns"] = (ours + 1).into();
    })?;
    std::fs::write(folder.join("theirs.json"), theirs)?;
    let older = announcement_json("127.0.0.1:10", |v| {
        v["pid"] = 99_999_999.into();
        if let Some(o) = v.as_object_mut() {
            o.remove("pid_ns");
        }
    })?;
    std::fs::write(folder.join("older.json"), older)?;
    let listing = discovery::list_in(&folder)?;
    assert!(listing.live.is_empty(), "{:?}", listing.live);
    let reasons: Vec<String> = listing.skipped.iter().map(ToString::to_string).collect();
    assert!(
        listing
            .skipped
            .iter()
            .any(|s| s.path.ends_with("theirs.json")
                && matches!(s.reason, SkipReason::OtherPidNamespace { pid: 99_999_999 })
                && !s.reason.is_suspicious()),
        "{reasons:?}"
    );
    assert!(folder.join("theirs.json").exists(), "removed: {reasons:?}");
    assert!(!folder.join("older.json").exists(), "{reasons:?}");
    // This process's own announcement carries its namespace, and is live.
    let mine = Announcement::of_this_process("127.0.0.1:11".parse()?)?;
    assert_eq!(mine.pid_ns, Some(ours));
    assert!(Announcement::from_json(&mine.to_json()).is_ok_and(|a| a == mine));
    Ok(())
}

/// Bug caught: the announcement of a killed process taken for live (a dead process id, an
/// id now used by another process, a zombie not yet reaped), or left in the folder; or a
/// stale one's pruning removing files that are not announcements.
#[test]
fn stale_announcements_are_pruned() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("hive-db");
    std::fs::create_dir(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    // A process killed before it could remove its file.
    let mut child = Command::new("sleep").arg("60").spawn()?;
    let pid = child.id();
    let child_start = {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat
            .rsplit_once(')')
            .ok_or_else(|| anyhow::anyhow!("unexpected stat"))?
            .1
            .to_owned();
        rest.split_whitespace()
            .nth(19)
            .ok_or_else(|| anyhow::anyhow!("unexpected stat"))?
            .parse::<u64>()?
    };
    let killed = announcement_json("127.0.0.1:9", |v| {
        v["pid"] = pid.into();
        v["start_time"] = child_start.into();
    })?;
    std::fs::write(folder.join("killed.json"), &killed)?;
    assert_eq!(discovery::list_in(&folder)?.live.len(), 1, "alive at first");
    child.kill()?;
    // Not reaped yet: a zombie, which runs no more (once the signal has landed).
    assert!(
        eventually(Duration::from_secs(10), || discovery::list_in(&folder)
            .is_ok_and(|l| l.live.is_empty())),
        "zombie taken for live"
    );
    assert!(!folder.join("killed.json").exists());
    child.wait()?;
    std::fs::write(folder.join("killed.json"), &killed)?;
    // This process's id with another start time: the id was recycled.
    let recycled = announcement_json("127.0.0.1:10", |v| {
        v["start_time"] = (v["start_time"].as_u64().unwrap_or(0) + 1).into();
    })?;
    std::fs::write(folder.join("recycled.json"), recycled)?;
    std::fs::write(folder.join("garbage.json"), "{")?;

    let listing = discovery::list_in(&folder)?;
    assert!(listing.live.is_empty(), "{:?}", listing.live);
    let stale: Vec<_> = listing
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::Stale { pruned: true, .. }))
        .map(|s| s.path.file_name().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stale, ["killed.json", "recycled.json"]);
    assert!(!folder.join("killed.json").exists());
    assert!(!folder.join("recycled.json").exists());
    assert!(
        folder.join("garbage.json").exists(),
        "a foreign file was removed"
    );
    Ok(())
}

/// Bug caught: a file that is not an announcement, of a newer version, pointing off
/// loopback, or a symbolic link followed or listed as a registry to read.
#[test]
fn foreign_files_are_skipped_with_their_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("hive-db");
    std::fs::create_dir(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(folder.join("garbage"), [0xff, 0xfe, 0x00])?;
    std::fs::write(folder.join("other.json"), r#"{"format":"other","pid":1}"#)?;
    let remote = announcement_json("127.0.0.1:9", |v| v["addr"] = "192.0.2.1:9187".into())?;
    std::fs::write(folder.join("remote.json"), remote)?;
    let future = announcement_json("127.0.0.1:9", |v| v["version"] = 99.into())?;
    std::fs::write(folder.join("future.json"), future)?;
    let live = announcement_json("127.0.0.1:9", |_| {})?;
    let target = dir.path().join("elsewhere.json");
    std::fs::write(&target, &live)?;
    std::os::unix::fs::symlink(&target, folder.join("link.json"))?;
    std::fs::write(folder.join(".being-written.tmp"), "{")?;

    let listing = discovery::list_in(&folder)?;
    assert!(listing.live.is_empty(), "{:?}", listing.live);
    let reasons: Vec<(String, String)> = listing
        .skipped
        .iter()
        .map(|s| {
            let name = s
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let kind = match &s.reason {
                SkipReason::Foreign => "foreign",
                SkipReason::UnsupportedVersion(99) => "version",
                SkipReason::NotLoopback(_) => "off loopback",
                SkipReason::NotAFile => "not a file",
                _ => "other",
            };
            (name, kind.to_owned())
        })
        .collect();
    let want = [
        ("future.json", "version"),
        ("garbage", "foreign"),
        ("link.json", "not a file"),
        ("other.json", "foreign"),
        ("remote.json", "off loopback"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(reasons, want);
    assert!(listing.skipped.iter().all(|s| s.reason.is_suspicious()));
    assert_eq!(
        std::fs::read_dir(&folder)?.count(),
        6,
        "a skipped file was removed"
    );
    Ok(())
}

/// Bug caught: another user's announcement followed (they could point the monitor at
/// their own server), or another user's folder used for announcements. Needs root to
/// give files away; skipped otherwise.
#[test]
fn other_users_files_and_folders_are_refused() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        println!("skipped: only root can give a file to another user");
        return Ok(());
    }
    const NOBODY: u32 = 65534;
    let f = fixture("others", config())?;
    let folder = f.dir.path().join("hive-db");
    std::fs::create_dir(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    let theirs = folder.join("theirs.json");
    std::fs::write(&theirs, announcement_json("127.0.0.1:9", |_| {})?)?;
    std::os::unix::fs::chown(&theirs, Some(NOBODY), None)?;
    let listing = discovery::list_in(&folder)?;
    assert!(listing.live.is_empty(), "{:?}", listing.live);
    assert!(matches!(
        listing.skipped[..],
        [ref s] if matches!(s.reason, SkipReason::NotOurs { owner: NOBODY })
    ));

    std::os::unix::fs::chown(&folder, Some(NOBODY), None)?;
    assert!(matches!(
        discovery::list_in(&folder),
        Err(DiscoveryError::UnsafeFolder { .. })
    ));
    let ep = endpoint::serve(&f.registry, announcing_in(&folder))?;
    assert!(ep.announcement().is_none());
    assert_eq!(std::fs::read_dir(&folder)?.count(), 1);
    Ok(())
}
