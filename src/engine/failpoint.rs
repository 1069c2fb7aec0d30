//! Failpoints: named steps of the commit path where tests make an update fail (an error
//! returned at that step) or the process die (abort), to check that every step leaves
//! state the next update or restart turns into the fresh-build answer.
//!
//! Test hooks outside the commit path share the mechanism ([`HOOKS`]): `fold.read`
//! (`pause`: the fold of a file waits, once, right after reading it, until the test lets
//! it go), `ingest.pass` (`panic`: the ingest loop panics) and `table.rewrite` (a table of
//! the previous schema version copied into a new file that then does not replace it).
//!
//! Each engine carries its own set (`EngineOptions::failpoints`), so tests in one process
//! do not disturb each other; the command line fills it from `ROLLUPD_FAILPOINTS`
//! (`name=error,name=abort`, `name=error@2` to fail from the second time on). An empty set costs one uncontended lock per step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The steps, in commit order.
pub const POINTS: [&str; 7] = [
    // Inside a file's DuckDB transaction, before it commits.
    "table.commit",
    // Before the store's transaction.
    "store.commit",
    // After the store's transaction landed (as when its flush fails).
    "store.committed",
    // Before a new snapshot replaces the one queries see.
    "publish",
    // Before the extremes a removal took are restored (the generation is published).
    "extremes",
    // Before the rollup partitions are written.
    "partition.write",
    // Before the manifest is replaced.
    "manifest.publish",
];

/// The steps of a layout change (`Engine::relayout`), in order.
pub const LAYOUT_POINTS: [&str; 2] = [
    // After the table's time columns are in the new zone, before any partial is derived.
    "layout.table",
    // After every file's partials are written, before the store's transaction.
    "layout.commit",
];

/// The step of an update whose additions were laid over the rollups: after the
/// generation is published so, before the layers are merged into them.
pub const LAYER_POINTS: [&str; 1] = ["merge"];

/// Test hooks outside the commit path.
pub const HOOKS: [&str; 3] = [
    // In a file's fold, after its bytes are read and before it is checked for changes.
    "fold.read",
    // At the start of each pass of the ingest loop.
    "ingest.pass",
    // After a table of the previous schema version is copied into a new file, before that
    // file replaces the old one.
    "table.rewrite",
];

/// What a failpoint does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The step fails with an error.
    Error,
    /// The step fails with an error from its `n`th time on (1 = at once): a later batch
    /// of a multi-batch update (`name=error@n`).
    ErrorFrom(u32),
    /// The process aborts, as if killed at that step.
    Abort,
    /// The thread panics.
    Panic,
    /// The step waits, the first time it is reached, until the file [`pause_marker`]
    /// names (which it creates) is removed; then the failpoint disarms itself.
    Pause,
}

/// The file whose removal lets a paused step of this process go on.
pub fn pause_marker(pid: u32, name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rollupd.{pid}.{name}.paused"))
}

/// A cheap-to-clone set of armed failpoints.
#[derive(Debug, Clone, Default)]
pub struct Failpoints(Arc<Mutex<HashMap<String, Action>>>);

impl Failpoints {
    /// Parses `name=error,name=abort` (as in `ROLLUPD_FAILPOINTS`).
    pub fn parse(spec: &str) -> Result<Failpoints> {
        let points = Failpoints::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, action) = item.split_once('=').unwrap_or((item, "error"));
            let from = action.strip_prefix("error@").map(str::parse::<u32>);
            let action = match action {
                _ if from.is_some() => match from.expect("checked") {
                    Ok(n) if n > 0 => Action::ErrorFrom(n),
                    _ => {
                        return Err(Error::Internal(format!(
                            "failpoint {name}: {action:?} needs a count from 1 (error@2)"
                        )))
                    }
                },
                "error" => Action::Error,
                "abort" => Action::Abort,
                "panic" => Action::Panic,
                "pause" => Action::Pause,
                other => {
                    return Err(Error::Internal(format!(
                        "failpoint {name}: unknown action {other:?} (error, error@n, abort, panic or pause)"
                    )))
                }
            };
            points.arm(name, action)?;
        }
        Ok(points)
    }

    /// Arms the failpoint `name`.
    pub fn arm(&self, name: &str, action: Action) -> Result<()> {
        if !known(name) {
            return Err(Error::Internal(format!(
                "unknown failpoint {name:?}; known: {}, {}, {}, {}",
                POINTS.join(", "),
                LAYOUT_POINTS.join(", "),
                LAYER_POINTS.join(", "),
                HOOKS.join(", ")
            )));
        }
        self.0
            .lock()
            .expect("failpoints lock")
            .insert(name.to_string(), action);
        Ok(())
    }

    /// Disarms every failpoint.
    pub fn clear(&self) {
        self.0.lock().expect("failpoints lock").clear();
    }

    /// Called at step `name`: fails or aborts if it is armed.
    pub fn hit(&self, name: &str) -> Result<()> {
        debug_assert!(known(name), "unlisted failpoint {name}");
        let action = {
            let mut armed = self.0.lock().expect("failpoints lock");
            match armed.get_mut(name) {
                Some(Action::ErrorFrom(n)) if *n > 1 => {
                    *n -= 1;
                    None
                }
                action => action.copied(),
            }
        };
        match action {
            None => Ok(()),
            Some(Action::Error | Action::ErrorFrom(_)) => {
                Err(Error::Internal(format!("failpoint {name}")))
            }
            Some(Action::Abort) => {
                eprintln!("rollupd: failpoint {name}: aborting");
                std::process::abort()
            }
            Some(Action::Panic) => panic!("failpoint {name}"),
            Some(Action::Pause) => {
                self.0.lock().expect("failpoints lock").remove(name);
                pause(name)
            }
        }
    }
}

/// Whether `name` is a failpoint or hook.
fn known(name: &str) -> bool {
    [&POINTS[..], &LAYOUT_POINTS, &LAYER_POINTS, &HOOKS]
        .iter()
        .any(|points| points.contains(&name))
}

/// Waits (at most a minute) until the test removes this step's marker file.
fn pause(name: &str) -> Result<()> {
    let marker = pause_marker(std::process::id(), name);
    std::fs::write(&marker, b"").map_err(|e| Error::io(&marker, e))?;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while marker.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_arm_and_hit() {
        let f = Failpoints::parse("store.commit=error, publish").unwrap();
        assert!(f.hit("store.commit").is_err());
        assert!(f.hit("publish").is_err());
        assert!(f.hit("table.commit").is_ok());
        f.clear();
        assert!(f.hit("store.commit").is_ok());
        assert!(Failpoints::parse("nowhere=error").is_err());
        assert!(Failpoints::parse("publish=explode").is_err());
        assert!(Failpoints::parse("publish=error@0").is_err());
        let later = Failpoints::parse("store.commit=error@3").unwrap();
        assert!(later.hit("store.commit").is_ok());
        assert!(later.hit("store.commit").is_ok());
        assert!(later.hit("store.commit").is_err());
        assert!(later.hit("store.commit").is_err());
    }
}
