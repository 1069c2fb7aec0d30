//! Change detection: compares the folder with the store's registry and says what
//! changed, reading file contents only where metadata alone cannot tell.
//!
//! A file's identity is its content fingerprint, not its path: a renamed file with the
//! same bytes is a move, a file whose folded prefix is intact and that grew is an append,
//! a file with new mtime but the same bytes is a touch. Anything else that differs is a
//! rewrite (including truncation, detected by size and fingerprint).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::store::FileRecord;

/// A file as seen in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    /// Status change time: moves on chmod and chown too, which may make a file readable.
    pub ctime_ns: i64,
}

impl Seen {
    /// Stats a file (following symlinks).
    pub fn stat(path: &Path) -> Result<Seen> {
        let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        Ok(Seen::of(path, &m))
    }

    /// The file at `path` as its metadata `m` describes it.
    pub fn of(path: &Path, m: &std::fs::Metadata) -> Seen {
        use std::os::unix::fs::MetadataExt;
        Seen {
            path: path.to_path_buf(),
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            inode: m.ino(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// What to do about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new file: fold it.
    Add(Seen),
    /// A tracked file that is gone: take its contribution out.
    Remove(FileRecord),
    /// A tracked file whose content changed: old contribution out, new one in.
    Replace(FileRecord, Seen),
    /// A tracked file that grew with its folded prefix intact: fold only the tail.
    Append(FileRecord, Seen),
    /// Same content under a new path or metadata (renamed, touched): no parse.
    Move(FileRecord, Seen),
}

/// xxh3 of the first `len` bytes of a file.
pub fn fingerprint(path: &Path, len: u64) -> Result<u64> {
    let (mut f, _) = crate::ingest::regular::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while hashed",
                ),
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.digest())
}

/// Whether the byte just before `len` is a newline (so the prefix ends with a whole line).
pub fn ends_with_newline(path: &Path, len: u64) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    if len == 0 {
        return Ok(true);
    }
    let (mut f, _) = crate::ingest::regular::open(path)?;
    f.seek(SeekFrom::Start(len - 1))
        .map_err(|e| Error::io(path, e))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).map_err(|e| Error::io(path, e))?;
    Ok(b[0] == b'\n')
}

/// What [`detect`] found.
#[derive(Debug, Default)]
pub struct Detected {
    pub changes: Vec<Change>,
    /// Files that could not be read to tell what changed; their records stay as they are.
    pub failed: Vec<(PathBuf, Error)>,
}

/// The changes that bring `records` in line with the folder listing `seen`.
/// `hash(path, len)` fingerprints a file prefix; it is called only when metadata differs.
/// A file that cannot be read fails alone: it is left out, its record kept.
pub fn detect(
    seen: &[Seen],
    records: &[FileRecord],
    hash: &mut dyn FnMut(&Path, u64) -> Result<u64>,
) -> Detected {
    let by_path: HashMap<&Path, &FileRecord> =
        records.iter().map(|r| (r.path.as_path(), r)).collect();
    let present: std::collections::HashSet<&Path> = seen.iter().map(|s| s.path.as_path()).collect();
    let mut out = Detected::default();
    let mut fresh = Vec::new();
    for s in seen {
        let Some(r) = by_path.get(s.path.as_path()) else {
            fresh.push(s);
            continue;
        };
        if r.size == s.size && r.mtime_ns == s.mtime_ns && r.inode == s.inode {
            continue;
        }
        match classify(r, s, hash) {
            Ok(change) => out.changes.push(change),
            Err(e) => out.failed.push((s.path.clone(), e)),
        }
    }
    let mut gone: Vec<&FileRecord> = records
        .iter()
        .filter(|r| !present.contains(r.path.as_path()))
        .collect();
    for s in fresh {
        // A new path with the bytes of a file gone from the folder is that file, moved.
        let moved = if gone.iter().any(|r| r.size == s.size) {
            match hash(&s.path, s.size) {
                Ok(fp) => gone
                    .iter()
                    .position(|r| r.size == s.size && r.fingerprint == fp),
                Err(e) => {
                    out.failed.push((s.path.clone(), e));
                    continue;
                }
            }
        } else {
            None
        };
        out.changes.push(match moved {
            Some(i) => Change::Move(gone.swap_remove(i).clone(), s.clone()),
            None => Change::Add(s.clone()),
        });
    }
    out.changes
        .extend(gone.into_iter().map(|r| Change::Remove(r.clone())));
    out
}

/// What happened to the tracked file `r`, now seen as `s` with other metadata.
fn classify(
    r: &FileRecord,
    s: &Seen,
    hash: &mut dyn FnMut(&Path, u64) -> Result<u64>,
) -> Result<Change> {
    let prefix_intact = s.size >= r.size && hash(&s.path, r.size)? == r.fingerprint;
    Ok(match (prefix_intact, s.size == r.size) {
        (true, true) => Change::Move(r.clone(), s.clone()),
        (true, false) if ends_with_newline(&s.path, r.size)? => {
            Change::Append(r.clone(), s.clone())
        }
        _ => Change::Replace(r.clone(), s.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u32, path: &str, size: u64, fp: u64) -> FileRecord {
        FileRecord {
            id,
            path: path.into(),
            size,
            mtime_ns: 1,
            inode: 1,
            fingerprint: fp,
            rows: 1,
            bad_rows: 0,
            parts: 1,
        }
    }

    fn seen(path: &str, size: u64, mtime: i64) -> Seen {
        Seen {
            path: path.into(),
            size,
            mtime_ns: mtime,
            inode: 1,
            ctime_ns: mtime,
        }
    }

    #[test]
    fn classifies_every_kind_of_change() {
        // Content is modelled as: fingerprint of (path-independent) length prefixes.
        let contents: HashMap<&str, u64> = [("a", 10), ("b2", 20), ("c", 31), ("d", 40), ("e", 50)]
            .into_iter()
            .collect();
        let hash = |p: &Path, len: u64| -> Result<u64> {
            let base = contents[p.to_str().unwrap()];
            Ok(if p.to_str() == Some("c") && len == 30 {
                30
            } else {
                base + len * 1000
            })
        };
        let records = vec![
            rec(1, "a", 10, 10 + 10 * 1000), // unchanged
            rec(2, "b", 20, 20 + 20 * 1000), // renamed to b2
            rec(3, "c", 30, 30),             // appended
            rec(4, "d", 40, 999),            // rewritten
            rec(5, "gone", 5, 5),            // deleted
            rec(6, "e", 50, 50 + 50 * 1000), // touched
        ];
        let folder = vec![
            seen("a", 10, 1),
            seen("b2", 20, 1),
            seen("c", 45, 2),
            seen("d", 40, 2),
            seen("e", 50, 9),
            seen("new", 7, 1),
        ];
        let mut hash2 = |p: &Path, len: u64| {
            if p == Path::new("new") {
                Ok(7)
            } else {
                hash(p, len)
            }
        };
        // ends_with_newline reads the file; "c" does not exist here, so append is
        // exercised in the integration tests. Drop "c" from this unit check.
        let folder: Vec<Seen> = folder
            .into_iter()
            .filter(|s| s.path != Path::new("c"))
            .collect();
        let records: Vec<FileRecord> = records.into_iter().filter(|r| r.id != 3).collect();
        let changes = detect(&folder, &records, &mut hash2).changes;
        let kinds: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Add(s) => format!("add {}", s.path.display()),
                Change::Remove(r) => format!("remove {}", r.id),
                Change::Replace(r, _) => format!("replace {}", r.id),
                Change::Append(r, _) => format!("append {}", r.id),
                Change::Move(r, s) => format!("move {} {}", r.id, s.path.display()),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["replace 4", "move 6 e", "move 2 b2", "add new", "remove 5"]
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_fails_alone() {
        let records = vec![
            rec(1, "a", 10, 1),
            rec(2, "b", 10, 2),
            rec(3, "gone", 10, 3),
        ];
        let folder = vec![seen("a", 20, 2), seen("b", 10, 2), seen("new", 10, 1)];
        let mut hash = |p: &Path, _: u64| -> Result<u64> {
            match p.to_str() {
                Some("b") => Ok(2),
                _ => Err(Error::io(p, std::io::ErrorKind::PermissionDenied.into())),
            }
        };
        let detected = detect(&folder, &records, &mut hash);
        let failed: Vec<&Path> = detected.failed.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(failed, vec![Path::new("a"), Path::new("new")]);
        assert!(
            matches!(&detected.changes[..], [Change::Move(b, _), Change::Remove(gone)]
                if b.id == 2 && gone.id == 3),
            "{:?}",
            detected.changes
        );
    }
}
