//! Where the monitor reads from: endpoints, database files named on the command line or in a
//! config file, or, when none is named, the registries this user runs here and the default
//! EcoSystemiser database.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hive_db_core::DbName;

use crate::cli::{Cli, DbSpec, parse_db_spec};

/// What to report on, checked and de-duplicated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sources {
    /// Endpoint base URLs (`http://host:port`).
    pub(crate) endpoints: Vec<String>,
    /// Database files to open read-only.
    pub(crate) files: Vec<DbSpec>,
    /// No source was named: look for the endpoints this user's registries announce.
    pub(crate) discover: bool,
}

/// The sources the command line names; when it names none, discovery and the default
/// database if it exists.
///
/// # Errors
///
/// A config file that cannot be read or has errors, a name given twice, or, with no source,
/// a default database whose path cannot be worked out.
pub(crate) fn resolve(cli: &Cli) -> Result<Sources> {
    let mut files = cli.db.clone();
    if let Some(config) = &cli.config {
        files.extend(read_config(config)?);
    }
    let mut seen = HashSet::new();
    for spec in &files {
        if !seen.insert(spec.name.clone()) {
            bail!("database name `{}` is given twice", spec.name);
        }
    }
    let mut endpoints = Vec::new();
    for e in &cli.attach {
        if endpoints.contains(e) {
            bail!("endpoint {e} is given twice");
        }
        endpoints.push(e.clone());
    }
    let discover = files.is_empty() && endpoints.is_empty();
    if discover {
        files.extend(default_db()?);
    }
    Ok(Sources {
        endpoints,
        files,
        discover,
    })
}

/// The EcoSystemiser database, when it exists: the monitor never creates one.
fn default_db() -> Result<Option<DbSpec>> {
    let path = ecosystemiser_db::ecosystemiser_db_path()?;
    if !path.exists() {
        return Ok(None);
    }
    let name = DbName::new(ecosystemiser_db::DB_NAME).context("the default database name")?;
    Ok(Some(DbSpec { name, path }))
}

/// Why a run with no source named has nothing to report on: no registry announced in
/// `folders`, and no default database yet.
///
/// # Errors
///
/// A default database whose path cannot be worked out.
pub(crate) fn nothing_to_monitor(folders: &[PathBuf]) -> Result<String> {
    let path = ecosystemiser_db::ecosystemiser_db_path()?;
    let folder = if folders.is_empty() {
        "(unknown)".to_owned()
    } else {
        folders
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    Ok(format!(
        "nothing to monitor: no registry of this user announces an endpoint in {folder}, \
         and no EcoSystemiser database at {} yet (the application creates it on \
         first use); name a source with --attach, --db or --config",
        path.display()
    ))
}

/// Largest config file read: far more lines than any host has databases.
const CONFIG_LIMIT: u64 = 1024 * 1024;

/// Reads a config file: one `NAME = PATH` per line, `#` comments, blank lines ignored; a
/// relative PATH is taken from the file's folder.
fn read_config(path: &Path) -> Result<Vec<DbSpec>> {
    let cannot = || format!("cannot read config file {}", path.display());
    // Only a regular file: a FIFO's open waits for a writer without end, and a device such
    // as /dev/zero never ends.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        bail!(
            "{}: not a regular file (a FIFO, socket or device)",
            cannot()
        );
    }
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            std::io::Read::read_to_end(&mut std::io::Read::take(file, CONFIG_LIMIT + 1), &mut text)
        })
        .with_context(cannot)?;
    if text.len() as u64 > CONFIG_LIMIT {
        bail!(
            "{}: larger than {} KiB, not a list of databases",
            cannot(),
            CONFIG_LIMIT / 1024
        );
    }
    let base = path.parent().unwrap_or(Path::new("."));
    parse_config(&text, base).with_context(|| format!("config file {}", path.display()))
}

/// The lines of a config file, as bytes: a PATH may be any bytes, as a Unix file name.
fn parse_config(text: &[u8], base: &Path) -> Result<Vec<DbSpec>> {
    let mut specs = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line
            .iter()
            .position(|&b| b == b'#')
            .map_or(line, |at| &line[..at])
            .trim_ascii();
        if line.is_empty() {
            continue;
        }
        let mut spec = parse_db_spec(line)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("line {}", i + 1))?;
        if spec.path.is_relative() {
            spec.path = base.join(&spec.path);
        }
        specs.push(spec);
    }
    if specs.is_empty() {
        bail!("lists no database (expected `NAME = PATH` lines)");
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Bug caught: comments or blank lines taken as entries, relative paths taken from the
    /// working folder, or an error without its line number.
    #[test]
    fn config_lines() {
        let specs = parse_config(
            b"# databases\n\ninv = inv.db  # the inventory\nlog=/var/log.db\n",
            Path::new("/etc/hive"),
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].path, PathBuf::from("/etc/hive/inv.db"));
        assert_eq!(specs[1].path, PathBuf::from("/var/log.db"));
        let err = parse_config(b"inv = a.db\nbroken line\n", Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2: "), "{err:#}");
        assert!(parse_config(b"# nothing\n", Path::new("/")).is_err());
    }
}
