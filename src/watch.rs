//! The watched folder: which files in it are event CSVs.
//!
//! Watched: `*.csv` directly in the folder (or below it, when recursive). Ignored:
//! dot-files and names ending in `.tmp`, `.part`, `.partial`, `.crdownload` or `~`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether a file name is one the folder's CSVs may have.
pub fn is_candidate(name: &str) -> bool {
    const IGNORED: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", "~"];
    !name.starts_with('.')
        && name.to_ascii_lowercase().ends_with(".csv")
        && !IGNORED.iter().any(|s| name.ends_with(s))
}

/// The event CSV files in `dir`, sorted by path.
pub fn scan_folder(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    scan_into(dir, recursive, &mut out)?;
    out.sort();
    Ok(out)
}

fn scan_into(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if recursive && !name.starts_with('.') {
                scan_into(&entry.path(), recursive, out)?;
            }
        } else if is_candidate(name) {
            out.push(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        assert!(is_candidate("events-001.csv"));
        assert!(is_candidate("A.CSV"));
        assert!(!is_candidate(".hidden.csv"));
        assert!(!is_candidate("x.csv.tmp"));
        assert!(!is_candidate("x.csv.part"));
        assert!(!is_candidate("x.csv~"));
        assert!(!is_candidate("x.txt"));
    }
}
