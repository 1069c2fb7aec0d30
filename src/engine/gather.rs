//! What one batch of an update gathers while its files fold: the table changes queued on
//! DuckDB's thread as each file's rows come in, the partials merged, and the store
//! commit built up.

use std::collections::{HashSet, VecDeque};

use arrow::array::RecordBatch;

use crate::error::{Error, Result};
use crate::ingest::changes::{Change, Seen};
use crate::rollup::RollupRows;
use crate::storage::store::{Commit, FileRecord};
use crate::storage::table::{Pending, TableChange, TableFile};

use super::update::{
    add_partial, change_id, change_path, change_seen, record, skipped, table_file, Fold,
};
use super::{Engine, FileFailure, UpdateReport};

/// What one batch gathers while its files fold: the store commit, the partials to merge,
/// and the table changes queued on DuckDB's thread (rows of at most `batch_bytes` wait
/// there, or two changes, which bounds the rows held in memory while letting DuckDB load
/// without a pause as the fold threads go on).
pub(super) struct Gather<'a> {
    engine: &'a Engine,
    pub(super) changes: &'a [Change],
    /// Each change's file id (new ones for files folded afresh).
    pub(super) ids: &'a [u32],
    report: &'a mut UpdateReport,
    batch: Batch,
    /// Changes whose first chunk of rows is in the table already.
    started: HashSet<usize>,
}

/// Table changes queued on DuckDB's thread, with the bytes of rows each holds.
pub(super) type Queued = VecDeque<(Pending<()>, usize)>;

/// What a batch gathered, once its files are folded.
pub(super) struct Batch {
    pub(super) commit: Commit,
    /// Per rollup, the partials folded.
    pub(super) added: Vec<Vec<RollupRows>>,
    pub(super) removed_ids: Vec<u32>,
    /// Appended files and their tails' partials.
    pub(super) appended: Vec<(u32, Vec<RollupRows>)>,
    /// Table changes DuckDB may still be applying, with the bytes of rows each holds.
    pub(super) pending: Queued,
}

impl<'a> Gather<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        changes: &'a [Change],
        ids: &'a [u32],
        report: &'a mut UpdateReport,
        generation: u64,
    ) -> Gather<'a> {
        Gather {
            engine,
            changes,
            ids,
            report,
            batch: Batch {
                commit: Commit {
                    generation,
                    ..Commit::default()
                },
                added: vec![Vec::new(); engine.layout().specs.len()],
                removed_ids: Vec::new(),
                appended: Vec::new(),
                pending: VecDeque::new(),
            },
            started: HashSet::new(),
        }
    }

    pub(super) fn finish(self) -> Batch {
        self.batch
    }
}

impl Gather<'_> {
    pub(super) fn table(&mut self, change: TableChange) -> Result<()> {
        let bytes = change.row_bytes();
        let limit = self.engine.opts.batch_bytes as usize;
        let pending = &mut self.batch.pending;
        while pending.len() >= 2 && pending.iter().map(|(_, b)| b).sum::<usize>() + bytes > limit {
            pending.pop_front().expect("pending").0.wait()?;
        }
        pending.push_back((self.engine.table.apply_queued(change)?, bytes));
        Ok(())
    }

    /// Rows of a chunk: the first chunk of a file also writes a provisional record (a
    /// crash before the store commits is undone on open like any uncommitted change).
    pub(super) fn rows(&mut self, i: usize, batch: RecordBatch) -> Result<()> {
        let change = if !self.started.insert(i) {
            TableChange::Rows { batch }
        } else {
            match &self.changes[i] {
                Change::Add(s) | Change::Replace(_, s) => TableChange::Put {
                    old: None,
                    batch,
                    file: TableFile {
                        id: self.ids[i] as i32,
                        path: s.path.display().to_string(),
                        size: 0,
                        parts: 1,
                        rows: 0,
                    },
                },
                Change::Append(old, _) => TableChange::Append {
                    batch,
                    file: TableFile {
                        parts: old.parts as i32 + 1,
                        ..table_file(old)
                    },
                },
                c => unreachable!("change {c:?} has no rows"),
            }
        };
        self.table(change)
    }

    /// A file that failed alone: rows of it already in the table are taken out again.
    pub(super) fn failed(&mut self, i: usize, e: &Error) -> Result<()> {
        let change = &self.changes[i];
        if self.started.remove(&i) {
            self.table(match change {
                Change::Append(old, _) => TableChange::Truncate {
                    file: table_file(old),
                },
                _ => TableChange::Remove {
                    id: self.ids[i] as i32,
                },
            })?;
        }
        self.report
            .failed
            .push(FileFailure::new(change_path(change), e));
        Ok(())
    }

    /// A file with nothing whole to fold yet: its last line is held.
    pub(super) fn held(&mut self, i: usize) {
        let path = change_path(&self.changes[i]).to_path_buf();
        self.report.held.push(path);
    }

    /// A file folded (all of it, or through its last complete line).
    pub(super) fn folded(&mut self, i: usize, fold: Fold) -> Result<()> {
        let change = self.changes[i].clone();
        let started = self.started.remove(&i);
        let seen = change_seen(&change).expect("a folded change");
        if fold.len != seen.size {
            self.report.held.push(seen.path.clone());
        }
        let s = Seen {
            size: fold.len,
            ..seen.clone()
        };
        let f = fold.folded;
        skipped(self.report, &s, &f);
        self.report.rows += f.rows;
        match change {
            Change::Add(_) | Change::Replace(..) => {
                let old = change_id(&change);
                let mut r = record(self.ids[i], &s, fold.fingerprint, f.rows, 1);
                r.bad_rows = f.bad_rows.len() as u64;
                let (old_id, batch, file) = (old.map(|id| id as i32), f.table, table_file(&r));
                self.table(match started {
                    false => TableChange::Put {
                        old: old_id,
                        batch,
                        file,
                    },
                    true => TableChange::Finish {
                        old: old_id,
                        batch,
                        file,
                    },
                })?;
                add_partial(&mut self.batch.added, f.partial);
                // Its partials file is written now, while the other files fold, and named
                // by the batch's commit.
                if !fold.encoded.is_empty() {
                    let generation = self.batch.commit.generation;
                    (self.engine.store).write_partials(r.id, generation, &fold.encoded)?;
                    self.batch.commit.prewritten.push(r.id);
                }
                self.batch.commit.folded.push((r, Vec::new()));
                match old {
                    Some(id) => {
                        self.report.replaced += 1;
                        self.batch.removed_ids.push(id);
                        self.batch.commit.removed.push(id);
                    }
                    None => self.report.added += 1,
                }
            }
            Change::Append(old, _) => {
                let mut r = record(
                    old.id,
                    &s,
                    fold.fingerprint,
                    old.rows + f.rows,
                    old.parts + 1,
                );
                r.bad_rows = old.bad_rows + f.bad_rows.len() as u64;
                self.table(TableChange::Append {
                    batch: f.table,
                    file: table_file(&r),
                })?;
                self.report.appended += 1;
                add_partial(&mut self.batch.added, f.partial.clone());
                self.batch.appended.push((r.id, f.partial));
                self.batch.commit.folded.push((r, Vec::new()));
            }
            c => unreachable!("change {c:?} folds nothing"),
        }
        Ok(())
    }

    /// A removal or a move.
    pub(super) fn other(&mut self, i: usize) -> Result<()> {
        match self.changes[i].clone() {
            Change::Remove(old) => {
                self.engine
                    .table
                    .apply(TableChange::Remove { id: old.id as i32 })?;
                self.report.removed += 1;
                self.batch.removed_ids.push(old.id);
                self.batch.commit.removed.push(old.id);
            }
            Change::Move(old, s) => {
                let r = FileRecord {
                    path: s.path.clone(),
                    mtime_ns: s.mtime_ns,
                    inode: s.inode,
                    ..old
                };
                self.table(TableChange::Record {
                    file: table_file(&r),
                })?;
                self.report.moved += 1;
                self.batch.commit.moved.push(r);
            }
            c => unreachable!("change {c:?} needs a fold"),
        }
        Ok(())
    }
}
