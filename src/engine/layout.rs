//! The layout, what the rollups are computed in (the time zone of the derived time
//! columns and the rollup set), and changing it from the DuckDB table, which holds every
//! folded row: no CSV is read again, whether on open (a changed config) or while the
//! daemon answers from the old layout (`Engine::relayout`).
//!
//! A change runs as one update would, under the update lock: the table's time columns
//! are computed again in a new zone (one DuckDB transaction), each file's partials of
//! the rollups new to the layout are built from its rows in the table as a fold builds
//! them from its text, the partials of the rollups kept are copied, every file's new
//! partials file is written, and one store commit names them all with the new layout.
//! Then the new rollups are published in one generation. A failure or crash before that commit leaves
//! the old layout whole (the table's zone, if it changed, is put right on the next open or
//! change, which compares it with the store's).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::schema::Zone;

use crate::rollup::partial::{self, Partial, Positions};
use crate::rollup::{Layered, MergeStack, RollupRows, RollupSpec};
use crate::storage::store::{Commit, FileRecord};

use super::update::encode_all;
use super::{Committed, Engine};

/// What the rollups are computed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The time zone of the derived time columns.
    pub zone: Zone,
    /// The rollups kept.
    pub specs: Vec<RollupSpec>,
}

impl Layout {
    /// What moving from `self` to `to` changes.
    pub fn change_to(&self, to: &Layout) -> LayoutChange {
        let names = |a: &[RollupSpec], b: &[RollupSpec]| {
            a.iter()
                .filter(|s| !b.contains(s))
                .map(RollupSpec::name)
                .collect()
        };
        LayoutChange {
            added: names(&to.specs, &self.specs),
            removed: names(&self.specs, &to.specs),
            time_zone: (self.zone != to.zone).then(|| ZoneChange {
                from: self.zone.name(),
                to: to.zone.name(),
            }),
        }
    }
}

/// What a layout change changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutChange {
    /// Rollups added, by name.
    pub added: Vec<String>,
    /// Rollups removed, by name.
    pub removed: Vec<String>,
    /// The time zone, when it changes (every rollup is then computed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<ZoneChange>,
}

impl LayoutChange {
    /// Whether nothing changes (the rollup set may still be reordered).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.time_zone.is_none()
    }
}

impl std::fmt::Display for LayoutChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(z) = &self.time_zone {
            parts.push(format!("time zone {} → {}", z.from, z.to));
        }
        if !self.added.is_empty() {
            parts.push(format!("rollups added: {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("rollups removed: {}", self.removed.join(", ")));
        }
        match parts.is_empty() {
            true => f.write_str("no change"),
            false => f.write_str(&parts.join("; ")),
        }
    }
}

/// A time zone change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneChange {
    pub from: String,
    pub to: String,
}

/// How far a running layout change is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutProgress {
    pub change: LayoutChange,
    /// What it is doing now.
    pub step: String,
    /// Files whose partials in the new layout are written.
    pub files_done: u64,
    /// Files to write them for.
    pub files: u64,
    /// When the change started (Unix milliseconds).
    pub started_ms: u64,
}

/// What a layout change did.
#[derive(Debug, Clone)]
pub struct LayoutReport {
    pub change: LayoutChange,
    /// The generation the new layout was published in (the current one, when nothing
    /// changed).
    pub generation: u64,
    /// Files whose partials were derived from the table.
    pub files: usize,
    /// Rows of the table those partials were computed from.
    pub rows: u64,
    pub elapsed: Duration,
}

/// Table rows whose partials are derived together (a few of the bench's files, one of
/// the full-size set's): bounds what a change holds besides the new rollups.
const ROWS_PER_STEP: u64 = 4_000_000;

/// Whether files whose rows the table lacks stop a change (while the daemon answers) or
/// are dropped from the store, to be folded again by the next update (on open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lacking {
    Refuse,
    Refold,
}

/// What a layout change derived from the table and committed.
pub(super) struct Derived {
    generation: u64,
    /// Per rollup of the new layout, its merged rows when it was computed anew (`None`
    /// for a rollup kept as it was).
    rollups: Vec<Option<RollupRows>>,
    /// Files whose partials were derived, and their rows.
    files: usize,
    rows: u64,
}

impl Engine {
    /// The layout of the published rollups.
    pub fn layout(&self) -> Arc<Layout> {
        self.layout.read().expect("layout lock").clone()
    }

    /// How far the running layout change is, if one runs.
    pub fn layout_progress(&self) -> Option<LayoutProgress> {
        self.layout_progress.lock().expect("progress lock").clone()
    }

    /// Moves to another layout without reading any CSV, while queries keep being answered
    /// from the published snapshot: rollups new to it (all of them, for another time zone)
    /// are computed from the table, those removed go, and the new set is published in one
    /// generation. Waits for a running update; updates wait for it. Fails, leaving the old
    /// layout in place, when the table lacks rows of some file (a repair the next update
    /// makes) or on any error along the way.
    pub fn relayout(&self, to: Layout) -> Result<LayoutReport> {
        let _one = self.updating.lock().expect("update lock");
        let started = Instant::now();
        let from = self.layout();
        let change = from.change_to(&to);
        if *from == to {
            return Ok(LayoutReport {
                change,
                generation: self.snapshot().generation(),
                files: 0,
                rows: 0,
                elapsed: started.elapsed(),
            });
        }
        if !self.unloaded.lock().expect("unloaded lock").is_empty() {
            return Err(Error::Internal(
                "the table lacks rows of some files until the next update folds them again; \
                 try again after it"
                    .into(),
            ));
        }
        let _progress = self.track(&change);
        let derived = self.derive_layout(&from, &to, Lacking::Refuse)?;
        let generation = derived.generation;
        let mut committed = self.committed.lock().expect("committed lock");
        let same_zone = from.zone == to.zone;
        let (rollups, pending) = to
            .specs
            .iter()
            .zip(derived.rollups)
            .map(|(spec, rows)| match rows {
                Some(rows) => (Layered::from(rows), Vec::new()),
                None => {
                    let at = kept_at(&from, spec, same_zone).expect("a kept rollup");
                    let pending = committed.pending.get(at).cloned().unwrap_or_default();
                    (committed.rollups[at].clone(), pending)
                }
            })
            .unzip();
        *committed = Committed {
            generation,
            rollups,
            pending,
        };
        *self.layout.write().expect("layout lock") = Arc::new(to);
        drop(committed);
        tracing::info!(%change, generation, "layout changed");
        self.catch_up()?;
        if self.restore_pending()? {
            self.catch_up()?;
        }
        Ok(LayoutReport {
            change,
            generation,
            files: derived.files,
            rows: derived.rows,
            elapsed: started.elapsed(),
        })
    }

    /// Shows `change` as running (`layout_progress`) until the guard drops.
    fn track(&self, change: &LayoutChange) -> ProgressGuard<'_> {
        let started_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        *self.layout_progress.lock().expect("progress lock") = Some(LayoutProgress {
            change: change.clone(),
            step: "starting".into(),
            files_done: 0,
            files: 0,
            started_ms,
        });
        ProgressGuard(self)
    }

    fn progress(&self, update: impl FnOnce(&mut LayoutProgress)) {
        if let Some(p) = self.layout_progress.lock().expect("progress lock").as_mut() {
            update(p);
        }
    }

    /// Moves the table and the store from layout `from` to `to`: the table's time
    /// columns into `to`'s zone, then every file's partials into `to`'s rollups (copied
    /// for the rollups kept, computed from the table for the others), committed in one
    /// store transaction with the new layout. Returns the commit's generation and the
    /// rollups computed anew, merged.
    pub(super) fn derive_layout(
        &self,
        from: &Layout,
        to: &Layout,
        lacking: Lacking,
    ) -> Result<Derived> {
        let in_table = self.table.files()?;
        let (whole, lost): (Vec<FileRecord>, Vec<FileRecord>) =
            self.store.files()?.into_iter().partition(|r| {
                in_table
                    .get(&(r.id as i32))
                    .is_some_and(|f| f.size == r.size && f.parts == r.parts as i32)
            });
        if !lost.is_empty() && lacking == Lacking::Refuse {
            return Err(Error::Internal(format!(
                "the table lacks rows of {} file(s) (first {})",
                lost.len(),
                lost[0].path.display()
            )));
        }
        self.table_to_zone(to.zone)?;
        let derived = self.derive_partials(from, to, &whole, &lost);
        if derived.is_err() && from.zone != to.zone {
            // Updates go on in the old layout: the table must be in its zone again.
            if let Err(e) = self.table_to_zone(from.zone) {
                tracing::error!("putting the table back in {}: {e}", from.zone.name());
            }
        }
        derived
    }

    /// `derive_layout` once the table is in `to`'s zone: every whole file's partials
    /// file, those of `lost` dropped, one store commit.
    fn derive_partials(
        &self,
        from: &Layout,
        to: &Layout,
        whole: &[FileRecord],
        lost: &[FileRecord],
    ) -> Result<Derived> {
        self.opts.failpoints.hit("layout.table")?;
        let same_zone = from.zone == to.zone;
        let kept: Vec<Option<usize>> = to
            .specs
            .iter()
            .map(|s| kept_at(from, s, same_zone))
            .collect();
        let generation = self.store.generation()? + 1;
        let mut commit = Commit {
            generation,
            removed: lost.iter().map(|r| r.id).collect(),
            layout: Some((to.zone.name(), to.specs.clone())),
            ..Commit::default()
        };
        self.progress(|p| {
            p.step = "computing partials from the table".into();
            p.files = whole.len() as u64;
        });
        let merged = self.write_partials(to, &kept, whole, &mut commit);
        let landed = merged.and_then(|merged| {
            self.opts.failpoints.hit("layout.commit")?;
            self.store.commit(&commit, self.store.next_id()?)?;
            Ok(merged)
        });
        if landed.is_err() {
            // What a commit that did not land wrote: the store removes it on open too.
            self.store.discard_partials(&commit.prewritten, generation);
        }
        Ok(Derived {
            generation,
            rollups: landed?,
            files: whole.len(),
            rows: whole.iter().map(|r| r.rows).sum(),
        })
    }

    /// Puts the table's time columns in `zone` if they are in another one (the store's
    /// zone, when the table never recorded one).
    pub(super) fn table_to_zone(&self, zone: Zone) -> Result<()> {
        let recorded = match self.table.zone()? {
            Some(z) => Some(z),
            None => self.store.layout()?.map(|(z, _)| z),
        };
        if recorded.as_deref() == Some(zone.name().as_str()) {
            return Ok(());
        }
        self.progress(|p| {
            p.step = format!("computing the table's time columns in {}", zone.name())
        });
        let started = Instant::now();
        self.table.set_zone(zone)?;
        tracing::info!(
            zone = %zone.name(),
            ms = started.elapsed().as_millis() as u64,
            "the table's time columns were computed again"
        );
        Ok(())
    }

    /// Writes each file's partials file of the commit's generation in layout `to`, a few
    /// files at a time, adding it to the commit; returns the rollups computed anew (the
    /// `None` entries of `kept`), merged.
    fn write_partials(
        &self,
        to: &Layout,
        kept: &[Option<usize>],
        files: &[FileRecord],
        commit: &mut Commit,
    ) -> Result<Vec<Option<RollupRows>>> {
        let fresh: Vec<RollupSpec> = to
            .specs
            .iter()
            .zip(kept)
            .filter(|(_, k)| k.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        let mut sums: Vec<MergeStack> = fresh.iter().map(|_| MergeStack::default()).collect();
        for step in steps(files) {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            let started = Instant::now();
            for (r, partial) in step.iter().zip(self.derive_files(step, &fresh)?) {
                let mut encoded = encode_all(&partial, self.store.countries()).into_iter();
                sums.par_iter_mut()
                    .zip(partial)
                    .for_each(|(sum, rows)| sum.push(rows));
                let parts = kept
                    .iter()
                    .map(|k| match k {
                        Some(at) => self.store.partial_bytes(r.id, *at),
                        None => Ok(encoded.next().expect("one partial per new rollup")),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.store.write_partials(r.id, commit.generation, &parts)?;
                commit.prewritten.push(r.id);
            }
            tracing::debug!(
                files = step.len(),
                ms = started.elapsed().as_millis() as u64,
                "partials derived from the table"
            );
            self.progress(|p| p.files_done += step.len() as u64);
        }
        let mut sums = sums.into_iter();
        Ok(kept
            .iter()
            .map(|k| {
                k.is_none()
                    .then(|| sums.next().expect("a sum per new rollup").finish())
            })
            .collect())
    }

    /// Each file's partials of `specs`, built from its rows in the table as a fold builds
    /// them from its text: DuckDB reads one file while the one before is aggregated.
    fn derive_files(&self, files: &[FileRecord], specs: &[RollupSpec]) -> Result<Vec<Partial>> {
        if specs.is_empty() {
            return Ok(vec![Vec::new(); files.len()]);
        }
        let queued = files
            .iter()
            .map(|r| self.table.file_rows(r.id))
            .collect::<Result<Vec<_>>>()?;
        queued
            .into_par_iter()
            .map(|rows| match rows.wait()? {
                Some(batch) => {
                    partial::build_at(&batch, &Positions::SELECTED, specs, self.store.countries())
                }
                None => Ok(vec![RollupRows::default(); specs.len()]),
            })
            .collect()
    }
}

/// Where the rollup `spec` is in layout `from`, if it can be kept as it is (same zone).
fn kept_at(from: &Layout, spec: &RollupSpec, same_zone: bool) -> Option<usize> {
    same_zone
        .then(|| from.specs.iter().position(|s| s == spec))
        .flatten()
}

/// Files in steps of about `ROWS_PER_STEP` table rows (one file at least).
fn steps(files: &[FileRecord]) -> Vec<&[FileRecord]> {
    let mut out = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, r) in files.iter().enumerate() {
        rows += r.rows;
        if rows >= ROWS_PER_STEP || i + 1 == files.len() {
            out.push(&files[start..=i]);
            (start, rows) = (i + 1, 0);
        }
    }
    out
}

/// Clears the layout change's progress when it ends, however it ends.
struct ProgressGuard<'a>(&'a Engine);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        *self.0.layout_progress.lock().expect("progress lock") = None;
    }
}
