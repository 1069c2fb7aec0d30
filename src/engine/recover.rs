//! Opening a state folder: what an interrupted update or damaged files left behind is
//! repaired from what remains, without re-parsing files whose content did not change.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::schema::Zone;
use crate::rollup::{Layered, RollupRows};
use crate::storage::manifest::{read_rollup, Manifest};
use crate::storage::store::{Commit, FileRecord};
use crate::storage::table::TableChange;

use super::layout::{Lacking, Layout};
use super::publish::specs_of;
use super::update::table_file;
use super::{Committed, Engine};

impl Engine {
    /// Brings table and rollups in line with the store after an interrupted update, and
    /// starts over when the state was built with another time zone or rollup set. What
    /// is missing or damaged is rebuilt from what remains: files whose partials are lost
    /// are folded again, and the rollups are merged again from the stored partials.
    pub(super) fn recover(&mut self) -> Result<()> {
        let (manifest, unreadable) = match Manifest::load(&self.state) {
            Ok(None) if self.store.generation()? > 0 => (
                None,
                Some(
                    "the manifest was missing; the rollups were merged again from the stored \
                     partials"
                        .to_string(),
                ),
            ),
            Ok(m) => (m, None),
            Err(e) => (
                None,
                Some(format!(
                    "the manifest could not be read ({e}); the rollups were merged again \
                     from the stored partials"
                )),
            ),
        };
        self.keep_generations_growing(manifest.as_ref())?;
        let layout = self.check_layout()?;
        let lost = self.drop_lost_partials()?;
        let table = self.table.rebuilt().map(str::to_string);
        self.rebuilt
            .extend([layout, table, lost, unreadable].into_iter().flatten());
        self.reconcile_table()?;
        let partition = self.recover_rollups(manifest)?;
        self.rebuilt.extend(partition);
        for why in &self.rebuilt {
            tracing::warn!("rebuilt on open: {why}");
        }
        Ok(())
    }

    /// A store started over (moved aside as corrupt) would count generations from 0
    /// again: it starts after the manifest's instead, so generations only grow.
    pub(super) fn keep_generations_growing(&self, manifest: Option<&Manifest>) -> Result<()> {
        let published = manifest.map_or(0, |m| m.generation);
        if self.store.generation()? >= published {
            return Ok(());
        }
        let commit = Commit {
            generation: published + 1,
            ..Commit::default()
        };
        self.store.commit(&commit, self.store.next_id()?)
    }

    /// Forgets files whose partials file is missing or damaged (one store commit): the
    /// table drops their rows, and the next update folds them again from the CSVs.
    pub(super) fn drop_lost_partials(&self) -> Result<Option<String>> {
        let lost = self.store.damaged_partials(self.layout().specs.len())?;
        let Some((_, first)) = lost.first() else {
            return Ok(None);
        };
        let commit = Commit {
            generation: self.store.generation()? + 1,
            removed: lost.iter().map(|(id, _)| *id).collect(),
            ..Commit::default()
        };
        self.store.commit(&commit, self.store.next_id()?)?;
        Ok(Some(format!(
            "the partials of {} file(s) were missing or damaged ({first}); those files are \
             folded again",
            lost.len()
        )))
    }

    /// Moves a state computed in another layout (time zone or rollup set) to the
    /// configured one, from the table (`derive_layout`: no CSV is read; files whose rows
    /// the table lacks are folded again). Only when that fails is the state emptied (one
    /// store commit; the table and rollups follow) for the next update to fold every file
    /// again. Returns what changed.
    pub(super) fn check_layout(&self) -> Result<Option<String>> {
        let to = self.layout();
        let stored = match self.store.layout()? {
            None => {
                self.store.set_layout(&to.zone.name(), &to.specs)?;
                return Ok(None);
            }
            Some((zone, specs)) => Zone::parse(&zone).map(|zone| Layout { zone, specs }),
        };
        let derived = match &stored {
            Ok(from) if *from == *to => {
                // Only the table may be in another zone, after a change that did not land.
                return self.table_to_zone(to.zone).map(|()| None);
            }
            Ok(from) => self
                .derive_layout(from, &to, Lacking::Refold)
                .map(|_| from.change_to(&to)),
            Err(e) => Err(Error::Internal(e.to_string())),
        };
        match derived {
            Ok(change) => {
                let reason = format!(
                    "{change}; the rollups were computed from the table (no file was read again)"
                );
                tracing::warn!("the state was built in another layout: {reason}");
                Ok(Some(reason))
            }
            Err(e) => {
                tracing::warn!("computing the new layout from the table: {e}");
                self.refold_all(&to)
            }
        }
    }

    /// Empties the store (one commit, with layout `to`): the next update folds every file
    /// again.
    fn refold_all(&self, to: &Layout) -> Result<Option<String>> {
        let commit = Commit {
            generation: self.store.generation()? + 1,
            removed: self.store.files()?.iter().map(|r| r.id).collect(),
            layout: Some((to.zone.name(), to.specs.clone())),
            ..Commit::default()
        };
        self.store.commit(&commit, self.store.next_id()?)?;
        // The table's rows go next (`reconcile_table`); those folded again are in `to`.
        self.table.record_zone(to.zone)?;
        let reason = "the state was built in another layout that could not be computed from \
                      the table; every file is folded again";
        tracing::warn!("{reason}");
        Ok(Some(reason.to_string()))
    }

    /// What this engine rebuilt on open, and why (a changed time zone or rollup set, or
    /// state found missing or damaged), if anything.
    pub fn rebuilt(&self) -> Option<String> {
        (!self.rebuilt.is_empty()).then(|| self.rebuilt.join("; "))
    }

    /// The manifest on disk (it trails the published generation while its partitions
    /// are written).
    pub fn manifest(&self) -> Manifest {
        self.written.lock().expect("written lock").0.clone()
    }

    /// Makes the table agree with the store: drops rows the store does not know, cuts off
    /// uncommitted appends, and queues files whose rows are missing for folding.
    pub(super) fn reconcile_table(&self) -> Result<()> {
        let records: HashMap<i32, FileRecord> = self
            .store
            .files()?
            .into_iter()
            .map(|r| (r.id as i32, r))
            .collect();
        let mut repairs = Vec::new();
        let in_table = self.table.files()?;
        for (id, f) in &in_table {
            match records.get(id) {
                None => self.table.apply(TableChange::Remove { id: *id })?,
                Some(r) if f.size > r.size || f.parts > r.parts as i32 => {
                    self.table.apply(TableChange::Truncate {
                        file: table_file(r),
                    })?
                }
                Some(r) if f.size < r.size || f.parts < r.parts as i32 => repairs.push(r.clone()),
                Some(_) => {}
            }
        }
        repairs.extend(
            records
                .values()
                .filter(|r| !in_table.contains_key(&(r.id as i32)))
                .cloned(),
        );
        if !repairs.is_empty() {
            let paths: Vec<String> = repairs
                .iter()
                .map(|r| r.path.display().to_string())
                .collect();
            // After an update interrupted between the table's commit and the store's.
            tracing::info!(
                "the table lacks rows of {} file(s) the store holds; they are folded again \
                 (or dropped, if gone): {}",
                repairs.len(),
                paths.join(", ")
            );
        }
        *self.unloaded.lock().expect("unloaded lock") = repairs.iter().map(|r| r.id).collect();
        *self.repairs.lock().expect("repairs lock") = repairs;
        Ok(())
    }

    /// Loads the published rollups, or merges them again from the stored partials when
    /// the manifest lags the store or one of its partitions cannot be read (then says
    /// why). Publishes them; a failure to write them out is left to the next update.
    pub(super) fn recover_rollups(&self, manifest: Option<Manifest>) -> Result<Option<String>> {
        let generation = self.store.generation()?;
        let layout = self.layout();
        let current = manifest.filter(|m| {
            m.generation == generation
                && specs_of(m) == layout.specs
                && m.zone == layout.zone.name()
        });
        let mut why = None;
        if let Some(m) = current {
            let read = m
                .rollups
                .par_iter()
                .map(|r| read_rollup(&self.state, r, self.store.countries()).map(Arc::new))
                .collect::<Result<Vec<_>>>();
            match read {
                Ok(rollups) => {
                    *self.written.lock().expect("written lock") = (m, rollups.clone());
                    let rollups = rollups.into_iter().map(Layered::from).collect();
                    *self.committed.lock().expect("committed lock") =
                        Committed::new(generation, rollups);
                    return self.publish_recovered().map(|()| None);
                }
                Err(e) => {
                    why = Some(format!(
                        "a rollup partition could not be read ({e}); the rollups were merged \
                         again from the stored partials"
                    ))
                }
            }
        }
        // The rollups lag the store (or are missing): merge them from the stored partials,
        // no CSV is read.
        let ids: Vec<u32> = self.store.files()?.iter().map(|r| r.id).collect();
        let rollups = (0..layout.specs.len())
            .into_par_iter()
            .map(|s| {
                let parts = ids
                    .iter()
                    .map(|id| self.store.partial(*id, s))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Layered::from(RollupRows::merge_tree(parts)))
            })
            .collect::<Result<Vec<_>>>()?;
        *self.committed.lock().expect("committed lock") = Committed::new(generation, rollups);
        self.publish_recovered().map(|()| why)
    }

    /// Publishes what recovery found. Once the snapshot is out, a failure to write the
    /// partitions or the manifest (a full disk) does not stop the engine from opening:
    /// the next update writes them.
    pub(super) fn publish_recovered(&self) -> Result<()> {
        match self.catch_up() {
            Err(e) if self.snapshot().view.is_some() => {
                tracing::error!("writing the rollups on open: {e}; the next update tries again");
                Ok(())
            }
            other => other,
        }
    }
}
