//! The state folder's lock: one rollupd process (daemon, build or direct query) per state
//! folder at a time.
//!
//! An exclusive `flock` on `<state>/LOCK`, held for the life of the process that took it
//! and released by the kernel when that process dies, so a crashed daemon never leaves a
//! lock behind. The file holds the holder's pid, for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock on a state folder; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock of `state`, or fails naming the process that holds it.
    pub fn acquire(state: &Path) -> Result<StateLock> {
        let path = state.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(&path, err));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(in_use(state, pid.trim()));
        }
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        write(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(StateLock { _file: file })
    }
}

fn in_use(state: &Path, pid: &str) -> Error {
    let holder = if pid.is_empty() {
        "another rollupd process".to_string()
    } else {
        format!("another rollupd process (pid {pid})")
    };
    Error::State {
        path: PathBuf::from(state),
        reason: format!(
            "in use by {holder}; query a running daemon through its socket, or stop it first"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use by another rollupd process (pid "),
            "{err}"
        );
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
