//! Component spec files: YAML through serde-saphyr, with limits against oversized files,
//! deep nesting and alias bombs. No SQL here.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::spec::ComponentSpec;
use crate::error::{Error, Result};

/// The largest spec file read, in bytes.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The deepest nesting of mappings and sequences accepted.
const MAX_DEPTH: usize = 32;
/// The most aliases (`*ref`) accepted in one file.
const MAX_ALIASES: usize = 256;
/// The most scalar bytes one file may stand for, aliases expanded: twice what a file without
/// aliases can hold, so that aliases cannot multiply a large scalar (the parser's default is
/// 64 MiB).
const MAX_SCALAR_BYTES: usize = 2 * MAX_FILE_BYTES as usize;
/// Folders below the import folder searched for files.
const MAX_FOLDER_DEPTH: usize = 8;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_nodes: 100_000,
            // Two events at most per node (a collection's start and end), and some slack.
            max_events: 300_000,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
            max_recorded_anchor_bytes: MAX_SCALAR_BYTES,
            max_documents: 1,
        },
        // `yes` / `on` stay strings inside free-form JSON parameters.
        strict_booleans: true,
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Parses one spec file's text.
pub(crate) fn parse_spec(path: &Path, text: &str) -> Result<ComponentSpec> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| Error::Yaml {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads and parses one spec file, refusing files over [`MAX_FILE_BYTES`].
pub(crate) fn read_spec(path: &Path) -> Result<ComponentSpec> {
    let file = fs::File::open(path).map_err(io("open", path))?;
    let mut text = String::new();
    let read = file
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io("read", path))?;
    if read as u64 > MAX_FILE_BYTES {
        return Err(Error::Yaml {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    parse_spec(path, &text)
}

/// Every `*.yaml` / `*.yml` file under `dir`, sorted by path, parsed. Symbolic links are
/// not followed.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, ComponentSpec)>> {
    let mut files = Vec::new();
    collect(dir, 0, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|path| read_spec(&path).map(|spec| (path, spec)))
        .collect()
}

fn collect(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io("read folder", dir))? {
        let entry = entry.map_err(io("read folder", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io("inspect", &path))?;
        if kind.is_dir() && depth < MAX_FOLDER_DEPTH {
            collect(&path, depth + 1, files)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

/// Writes `spec` to `path` as YAML, creating its folder.
pub(crate) fn write_spec(path: &Path, spec: &ComponentSpec) -> Result<()> {
    let text = serde_saphyr::to_string(spec).map_err(|e| Error::Yaml {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io("create folder", parent))?;
    }
    fs::write(path, text).map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the parser without limits, so an alias bomb or deep nesting exhausts
    /// memory or stack instead of failing with a typed error.
    #[test]
    fn limits_refuse_bombs_and_deep_nesting() {
        let mut bomb = String::from(
            "type: t\ncategory: c\nname: n\ntechnical:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "  a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let path = Path::new("bomb.yaml");
        assert!(matches!(parse_spec(path, &bomb), Err(Error::Yaml { .. })));

        let deep = format!(
            "type: t\ncategory: c\nname: n\ntechnical:\n  x: {}{}\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(parse_spec(path, &deep), Err(Error::Yaml { .. })));
    }

    /// Bug caught: `yes` / `no` turned into booleans inside free-form parameters.
    #[test]
    fn strict_booleans() -> Result<()> {
        let spec = parse_spec(
            Path::new("s.yaml"),
            "type: t\ncategory: c\nname: n\ntechnical:\n  answer: yes\n  flag: true\n",
        )?;
        assert_eq!(spec.technical["answer"], serde_json::json!("yes"));
        assert_eq!(spec.technical["flag"], serde_json::json!(true));
        Ok(())
    }
}
