//! Regular files only: what a folder entry is, and reading one without ever blocking.
//!
//! Only regular files are data. Symlinks are followed, and count only when they point at
//! a regular file; a FIFO, socket, device or directory (named `*.csv` or reached through
//! a symlink) is never opened. A path can be swapped between a stat and an open, so
//! [`open`] opens with `O_NONBLOCK` (opening a FIFO cannot hang) and checks the opened
//! file itself (`fstat`) before reading a byte.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::ingest::changes::Seen;

/// What a non-regular entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
    Device,
    Directory,
    Other,
}

impl Special {
    /// What `m` is, or `None` for a regular file.
    pub fn of(m: &Metadata) -> Option<Special> {
        let t = m.file_type();
        if t.is_file() {
            None
        } else if t.is_fifo() {
            Some(Special::Fifo)
        } else if t.is_socket() {
            Some(Special::Socket)
        } else if t.is_block_device() || t.is_char_device() {
            Some(Special::Device)
        } else if t.is_dir() {
            Some(Special::Directory)
        } else {
            Some(Special::Other)
        }
    }
}

impl std::fmt::Display for Special {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Special::Fifo => "a FIFO",
            Special::Socket => "a socket",
            Special::Device => "a device",
            Special::Directory => "a directory",
            Special::Other => "not a regular file",
        })
    }
}

/// Why an entry with a CSV name is not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a regular file; `link` when reached through a symlink.
    Special { kind: Special, link: bool },
    /// A symlink to nothing.
    DanglingLink,
    /// A subfolder that could not be listed (recursive scans), with the error.
    Unlistable(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Special { kind, link: false } => write!(f, "skipped: {kind}"),
            Skip::Special { kind, link: true } => write!(f, "skipped: a symlink to {kind}"),
            Skip::DanglingLink => f.write_str("skipped: a symlink to nothing"),
            Skip::Unlistable(e) => write!(f, "skipped: cannot list the folder: {e}"),
        }
    }
}

/// Stats `path` (following symlinks): the file if it is a regular one, otherwise why it
/// is skipped. `None` when it vanished meanwhile.
pub fn classify(path: &Path) -> Option<Result<Seen, Skip>> {
    let link = std::fs::symlink_metadata(path)
        .ok()?
        .file_type()
        .is_symlink();
    match std::fs::metadata(path) {
        Ok(m) => Some(match Special::of(&m) {
            None => Ok(Seen::of(path, &m)),
            Some(kind) => Err(Skip::Special { kind, link }),
        }),
        Err(_) if link => Some(Err(Skip::DanglingLink)),
        Err(_) => None,
    }
}

/// Opens `path` for reading if it is a regular file, without blocking whatever it is.
/// Fails with `Error::BadFile` for anything else.
pub fn open(path: &Path) -> Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let m = file.metadata().map_err(|e| Error::io(path, e))?;
    match Special::of(&m) {
        None => Ok((file, m)),
        Some(kind) => Err(Error::BadFile {
            path: path.to_path_buf(),
            reason: format!("not read: {kind}"),
        }),
    }
}

/// The file `s` was stat'ed as, open for reading; fails with `Error::Changed` when the
/// file at its path is not that one any more (other size, mtime or inode).
pub fn open_as_seen(s: &Seen) -> Result<File> {
    let (file, m) = open(&s.path)?;
    if !same(s, &m) {
        return Err(Error::Changed(s.path.clone()));
    }
    Ok(file)
}

/// Fails with `Error::Changed` unless the file at `s.path` is still as `s` saw it (size,
/// mtime, inode): checked after a fold, so a file changed while folded is never
/// committed half old, half new.
pub fn still_as_seen(s: &Seen) -> Result<()> {
    match std::fs::metadata(&s.path) {
        Ok(m) if same(s, &m) => Ok(()),
        _ => Err(Error::Changed(s.path.clone())),
    }
}

fn same(s: &Seen, m: &Metadata) -> bool {
    let now = Seen::of(&s.path, m);
    (now.size, now.mtime_ns, now.inode) == (s.size, s.mtime_ns, s.inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_classified_and_never_blocks_an_open() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.csv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let skip = Skip::Special {
            kind: Special::Fifo,
            link: false,
        };
        assert_eq!(classify(&fifo), Some(Err(skip)));
        assert!(matches!(open(&fifo), Err(Error::BadFile { .. })));
        let link = dir.path().join("zero.csv");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let skip = Skip::Special {
            kind: Special::Device,
            link: true,
        };
        assert_eq!(classify(&link), Some(Err(skip)));
    }
}
