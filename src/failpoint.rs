//! Failpoints: named steps of the commit path where tests make an update fail (an error
//! returned at that step) or the process die (abort), to check that every step leaves
//! state the next update or restart turns into the fresh-build answer.
//!
//! Each engine carries its own set (`EngineOptions::failpoints`), so tests in one process
//! do not disturb each other; the command line fills it from `ROLLUPD_FAILPOINTS`
//! (`name=error,name=abort`). An empty set costs one uncontended lock per step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The steps, in commit order.
pub const POINTS: [&str; 6] = [
    // Inside a file's DuckDB transaction, before it commits.
    "table.commit",
    // Before the store's transaction.
    "store.commit",
    // After the store's transaction landed (as when its flush fails).
    "store.committed",
    // Before a new snapshot replaces the one queries see.
    "publish",
    // Before the rollup partitions are written.
    "partition.write",
    // Before the manifest is replaced.
    "manifest.publish",
];

/// What a failpoint does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The step fails with an error.
    Error,
    /// The process aborts, as if killed at that step.
    Abort,
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
            let action = match action {
                "error" => Action::Error,
                "abort" => Action::Abort,
                other => {
                    return Err(Error::Internal(format!(
                        "failpoint {name}: unknown action {other:?} (error or abort)"
                    )))
                }
            };
            points.arm(name, action)?;
        }
        Ok(points)
    }

    /// Arms the failpoint `name`.
    pub fn arm(&self, name: &str, action: Action) -> Result<()> {
        if !POINTS.contains(&name) {
            return Err(Error::Internal(format!(
                "unknown failpoint {name:?}; known: {}",
                POINTS.join(", ")
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
        debug_assert!(POINTS.contains(&name), "unlisted failpoint {name}");
        match self.0.lock().expect("failpoints lock").get(name) {
            None => Ok(()),
            Some(Action::Error) => Err(Error::Internal(format!("failpoint {name}"))),
            Some(Action::Abort) => {
                eprintln!("rollupd: failpoint {name}: aborting");
                std::process::abort()
            }
        }
    }
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
    }
}
