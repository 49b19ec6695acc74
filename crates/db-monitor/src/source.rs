//! Where the monitor reads from: endpoints, database files named on the command line or in a
//! config file, or the default EcoSystemiser database.

use std::collections::HashSet;
use std::path::Path;

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
}

/// The sources the command line names, or the default database when it names none.
///
/// # Errors
///
/// A config file that cannot be read or has errors, a name given twice, or, with no source,
/// a default database whose path cannot be worked out or that does not exist yet.
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
    if files.is_empty() && endpoints.is_empty() {
        files.push(default_db()?);
    }
    Ok(Sources { endpoints, files })
}

/// The EcoSystemiser database, which must exist: the monitor never creates one.
fn default_db() -> Result<DbSpec> {
    let path = ecosystemiser_db::ecosystemiser_db_path()?;
    if !path.exists() {
        bail!(
            "no EcoSystemiser database at {} yet: nothing to report (the application \
             creates it on first use); name one with --db, --config or --attach",
            path.display()
        );
    }
    let name = DbName::new(ecosystemiser_db::DB_NAME).context("the default database name")?;
    Ok(DbSpec { name, path })
}

/// Reads a config file: one `NAME = PATH` per line, `#` comments, blank lines ignored; a
/// relative PATH is taken from the file's folder.
fn read_config(path: &Path) -> Result<Vec<DbSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_config(&text, base).with_context(|| format!("config file {}", path.display()))
}

fn parse_config(text: &str, base: &Path) -> Result<Vec<DbSpec>> {
    let mut specs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
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
            "# databases\n\ninv = inv.db  # the inventory\nlog=/var/log.db\n",
            Path::new("/etc/hive"),
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].path, PathBuf::from("/etc/hive/inv.db"));
        assert_eq!(specs[1].path, PathBuf::from("/var/log.db"));
        let err = parse_config("inv = a.db\nbroken line\n", Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2: "), "{err:#}");
        assert!(parse_config("# nothing\n", Path::new("/")).is_err());
    }
}
