//! Publishing a committed generation: the snapshot queries see (first without, then
//! with the extremes a removal took; first with additions laid over the rollups, then
//! merged into them), then the rollup partitions and the manifest.

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::Result;
use crate::rollup::{Key, Layered, RollupRows, RollupSpec};
use crate::storage::manifest::{write_rollup, Manifest, MANIFEST_VERSION};
use crate::storage::table::View;

use super::{Committed, Engine, Snapshot};

impl Engine {
    /// Gives the keys whose minimum or maximum a removal may have taken
    /// (`Committed::pending`) their extremes back, from the rows that remain: one DuckDB
    /// statement over the table, which holds exactly those rows, plus the stored partials
    /// of files whose rows the table lacks until a repair folds them again (`unloaded`;
    /// none outside crash repair). No other partial is read. Returns whether any key was
    /// pending; on failure they stay pending (queries needing them keep going to DuckDB)
    /// and the next update tries again.
    pub(super) fn restore_pending(&self) -> Result<bool> {
        let Committed {
            generation,
            rollups,
            pending,
        } = self.committed.lock().expect("committed lock").clone();
        if pending.iter().all(Vec::is_empty) {
            return Ok(false);
        }
        self.opts.failpoints.hit("extremes")?;
        let unloaded: Vec<u32> = self
            .unloaded
            .lock()
            .expect("unloaded lock")
            .iter()
            .copied()
            .collect();
        let started = Instant::now();
        let layout = self.layout();
        let wanted: Vec<(&RollupSpec, &[Key])> = layout
            .specs
            .iter()
            .zip(&pending)
            .map(|(spec, keys)| (spec, keys.as_slice()))
            .collect();
        let extremes = self.table.extremes(&wanted, self.store.countries())?;
        tracing::debug!(
            keys = pending.iter().map(Vec::len).sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "extremes restored from the table"
        );
        let restored = rollups
            .into_iter()
            .zip(&pending)
            .zip(extremes)
            .enumerate()
            .map(|(s, ((mut rows, affected), extremes))| {
                if !affected.is_empty() {
                    let rows = rows.make_mut();
                    rows.merge_extremes(affected, &extremes);
                    let parts = unloaded
                        .iter()
                        .map(|id| self.store.partial(*id, s))
                        .collect::<Result<Vec<_>>>()?;
                    rows.recompute_extremes(affected, &parts);
                    rows.check_extremes(affected)?;
                }
                Ok(rows)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut committed = self.committed.lock().expect("committed lock");
        if committed.generation == generation {
            *committed = Committed::new(generation, restored);
        }
        Ok(true)
    }

    /// Publishes the committed rollups where the snapshot trails them (a new generation
    /// with a new view of the table, or the same one with its extremes restored); returns
    /// the view they are published with.
    fn publish_committed(
        &self,
        published: &Snapshot,
        generation: u64,
        rollups: &[Layered],
        pending: &[bool],
    ) -> Result<Arc<View>> {
        let layout = self.layout();
        let view = match &published.view {
            Some(view) if published.generation() == generation => {
                if published.pending_flags() != pending {
                    let snapshot =
                        Snapshot::new(generation, &layout, rollups.to_vec(), view.clone());
                    self.publish(snapshot.with_pending(pending));
                }
                view.clone()
            }
            _ => {
                if published.view.is_some() {
                    self.opts.failpoints.hit("publish")?;
                }
                let view = Arc::new(self.view()?);
                let snapshot = Snapshot::new(generation, &layout, rollups.to_vec(), view.clone());
                tracing::debug!(
                    generation,
                    rollup_mb = snapshot.rollup_bytes() >> 20,
                    "publishing"
                );
                self.publish(snapshot.with_pending(pending));
                view
            }
        };
        Ok(view)
    }

    /// Merges the additions laid over committed rollups into them and publishes the
    /// merged rows (the same generation: answers do not change); returns the committed
    /// rollups, merged. On failure the layers stay (queries read them as they are) and
    /// the next update merges them.
    fn merge_layers(
        &self,
        committed: Committed,
        view: &Arc<View>,
        pending: &[bool],
    ) -> Result<Vec<Arc<RollupRows>>> {
        let Committed {
            generation,
            rollups,
            ..
        } = committed;
        if rollups.iter().all(Layered::is_merged) {
            return Ok(rollups.iter().map(Layered::merged).collect());
        }
        self.opts.failpoints.hit("merge")?;
        let started = Instant::now();
        let merged: Vec<Arc<RollupRows>> = rollups.par_iter().map(Layered::merged).collect();
        let layered: Vec<Layered> = merged.iter().cloned().map(Layered::from).collect();
        let mut committed = self.committed.lock().expect("committed lock");
        if committed.generation == generation {
            committed.rollups = layered.clone();
        }
        drop(committed);
        let snapshot = Snapshot::new(generation, &self.layout(), layered, view.clone());
        self.publish(snapshot.with_pending(pending));
        tracing::debug!(
            generation,
            ms = started.elapsed().as_millis() as u64,
            "added rows merged into the rollups"
        );
        Ok(merged)
    }

    /// Publishes the committed generation where the snapshot or the manifest trails it:
    /// first the snapshot (queries see it from memory at once), then the rollups with
    /// the additions laid over them merged, then the rollup partitions that changed and
    /// the manifest. A crash before the manifest is replaced is repaired on open by
    /// merging the stored partials again; an error is retried by the next update.
    pub(super) fn catch_up(&self) -> Result<()> {
        let layout = self.layout();
        let (specs, zone) = (&layout.specs, layout.zone.name());
        let committed = self.committed.lock().expect("committed lock").clone();
        let (generation, pending) = (committed.generation, committed.pending_flags());
        let published = self.snapshot();
        let view = self.publish_committed(&published, generation, &committed.rollups, &pending)?;
        // The replaced snapshot's view must not count as a reader at the checkpoint below.
        drop(published);
        let rollups = self.merge_layers(committed, &view, &pending)?;
        let (manifest, written) = self.written.lock().expect("written lock").clone();
        // Rollups with extremes pending are not written; the manifest waits for them.
        if pending.contains(&true)
            || manifest.generation == generation
                && specs_of(&manifest) == *specs
                && manifest.zone == zone
        {
            return Ok(());
        }
        self.opts.failpoints.hit("partition.write")?;
        let started = Instant::now();
        let entries = specs
            .par_iter()
            .zip(&rollups)
            .map(|(spec, rows)| {
                // What the partitions of the same rollup hold, in the same zone.
                let before = manifest
                    .rollups
                    .iter()
                    .position(|e| &e.spec == spec && manifest.zone == zone)
                    .and_then(|i| Some((&manifest.rollups[i], written.get(i)?.as_ref())));
                let countries = self.store.countries();
                write_rollup(&self.state, (spec, rows), generation, before, countries)
            })
            .collect::<Result<Vec<_>>>()?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            generation,
            zone,
            rollups: entries,
        };
        tracing::debug!(
            generation,
            ms = started.elapsed().as_millis() as u64,
            "rollup partitions written"
        );
        self.opts.failpoints.hit("manifest.publish")?;
        manifest.publish(&self.state)?;
        *self.written.lock().expect("written lock") = (manifest, rollups);
        // Once no query reads an older generation; otherwise at a later publish.
        let started = Instant::now();
        match self.table.checkpoint_quiet(&view)? {
            true => tracing::debug!(ms = started.elapsed().as_millis() as u64, "checkpointed"),
            false => tracing::trace!("no checkpoint: a small WAL, or a query reads an older view"),
        }
        Ok(())
    }
}

pub(super) fn specs_of(m: &Manifest) -> Vec<RollupSpec> {
    m.rollups.iter().map(|r| r.spec.clone()).collect()
}
