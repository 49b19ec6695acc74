//! The endpoint's announcement: its file in the discovery folder, written when it starts
//! and removed when it stops.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::config::Announce;
use crate::discovery::{self, Announcement, DiscoveryError};

/// A written announcement; dropping it removes the file.
#[derive(Debug)]
pub(super) struct Announced {
    path: PathBuf,
}

impl Announced {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), "cannot remove the endpoint's announcement: {e}");
        }
    }
}

/// Announces the endpoint on `addr` as `how` says; `None` when off or when it could not be
/// written (logged: the endpoint serves all the same).
pub(super) fn announce(how: &Announce, addr: SocketAddr) -> Option<Announced> {
    let dir = match how {
        Announce::Off => return None,
        Announce::RuntimeFolder => discovery::folder(),
        Announce::Folder(dir) => Ok(dir.clone()),
    };
    match dir.and_then(|dir| write(&dir, addr)) {
        Ok(announced) => Some(announced),
        Err(e) => {
            tracing::warn!(%addr, "cannot announce the hive-db endpoint (db-monitor will not find it without --attach): {}", crate::error::error_chain(&e));
            None
        }
    }
}

fn write(dir: &Path, addr: SocketAddr) -> Result<Announced, DiscoveryError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiscoveryError::Io { path, source }
    };
    // 0700 (the umask can only take bits away); an existing folder must pass the same
    // checks as a new one.
    match DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err(dir)(e)),
        _ => discovery::check_folder(dir)?,
    }
    let announcement =
        Announcement::of_this_process(addr).map_err(io_err(Path::new("/proc/self/stat")))?;
    let name = announcement.file_name();
    let path = dir.join(&name);
    // Written under a hidden name (readers pass over it) and renamed into place, so a
    // reader never sees half a file. `create_new` (O_EXCL) never follows a link.
    let temp = dir.join(format!(".{name}.tmp"));
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
    };
    let mut file = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by an earlier run of this process id that was killed while writing.
            fs::remove_file(&temp).map_err(io_err(&temp))?;
            open()
        }
        other => other,
    }
    .map_err(io_err(&temp))?;
    let written = file
        .write_all(announcement.to_json().as_bytes())
        .and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_err(&path)(e));
    }
    tracing::debug!(path = %path.display(), "announced the hive-db endpoint");
    Ok(Announced { path })
}
