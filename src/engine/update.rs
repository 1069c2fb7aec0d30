//! An update: the folder compared with the store, what changed folded in batches (files
//! in parallel, a chunk at a time), each batch committed to DuckDB and the store as one
//! generation and merged into the rollups.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use rayon::prelude::*;

use arrow::array::RecordBatch;

use crate::error::{Error, Result};
use crate::ingest::changes::{detect, fingerprint, Change, Seen};
use crate::ingest::fold::{parse_text, Folded, Text};
use crate::ingest::lines::{Chunk, Lines};
use crate::ingest::regular::{open_as_seen, still_as_seen};
use crate::ingest::watch::{line_held_until, scan};
use crate::rollup::codec;
use crate::rollup::{Countries, Layered, RollupRows};
use crate::storage::store::{Commit, FileRecord, MAX_PARTS};
use crate::storage::table::TableFile;

use super::gather::{Batch, Gather, Queued};
use super::{Committed, Engine, FileFailure, Next, UpdateReport};

impl Engine {
    /// Compares the folder with the store and folds what changed.
    pub fn update(&self, watch: &Path) -> Result<UpdateReport> {
        // Absolute paths, so `build --watch data` and `--watch /abs/data` agree.
        let watch = watch.canonicalize().map_err(|e| Error::io(watch, e))?;
        let listing = scan(&watch, self.opts.recursive)?;
        for (path, skip) in &listing.skipped {
            tracing::warn!("{}: {skip}", path.display());
        }
        self.update_from(listing.files, &HashSet::new())
    }

    /// Folds what changed, given the folder's files as `watch::scan` lists them (absolute
    /// paths), leaving the files at the paths in `hold` (and their records) as they are:
    /// files still being written, or known not to fold.
    pub fn update_from(
        &self,
        mut seen: Vec<Seen>,
        hold: &HashSet<PathBuf>,
    ) -> Result<UpdateReport> {
        let _one = self.updating.lock().expect("update lock");
        let start = Instant::now();
        seen.retain(|s| !hold.contains(&s.path));
        let mut records = self.store.files()?;
        records.retain(|r| !hold.contains(&r.path));
        let detected = detect(&seen, &records, &mut |p, len| fingerprint(p, len));
        let mut changes = detected.changes;
        let repairs = std::mem::take(&mut *self.repairs.lock().expect("repairs lock"));
        for r in repairs {
            changes.retain(|c| change_id(c) != Some(r.id));
            match seen.iter().find(|s| s.path == r.path) {
                Some(s) => changes.push(Change::Replace(r, s.clone())),
                None => changes.push(Change::Remove(r)),
            }
        }
        // Each batch commits to the store and moves `committed` along; the rollups are
        // published once, at the end (a crash in between is repaired from the partials).
        // The update holds the committed rollups (no clone), so that a snapshot not sharing
        // them lets later batches merge into them in place; they go back below.
        let mut committed = std::mem::take(&mut *self.committed.lock().expect("committed lock"));
        let mut report = UpdateReport {
            generation: committed.generation,
            ..UpdateReport::default()
        };
        for (path, e) in &detected.failed {
            report.failed.push(FileFailure::new(path, e));
        }
        let parsed_before = self.stats.bytes_parsed.load(Ordering::Relaxed);
        let loading = (!changes.is_empty()).then(|| self.table.loading());
        let mut outcome = Ok(());
        for batch in batches(changes, self.opts.batch_bytes) {
            let applied = self.apply(batch, &mut report, &mut committed);
            if let Err(e) = applied {
                // The table may hold changes the store did not commit; put it back.
                if let Err(again) = self.reconcile_table() {
                    tracing::error!("repairing the table after a failed update: {again}");
                }
                outcome = Err(e);
                break;
            }
        }
        committed.shrink_to_fit();
        *self.committed.lock().expect("committed lock") = committed;
        drop(loading);
        // Batches committed before a failure are published all the same, and so is a
        // generation an earlier publish failed to get out. Removals publish before their
        // keys get their minima and maxima back, which queries needing them meanwhile
        // find in DuckDB; then the generation is published again with them.
        self.catch_up()?;
        outcome?;
        if self.restore_pending()? {
            self.catch_up()?;
        }
        report.bytes_parsed = self.stats.bytes_parsed.load(Ordering::Relaxed) - parsed_before;
        report.failed.sort_by(|a, b| a.path.cmp(&b.path));
        report.elapsed = start.elapsed();
        Ok(report)
    }
    /// Applies one batch of changes as one generation. Files are folded in parallel and
    /// their rows go to DuckDB as soon as they are parsed, a chunk at a time; each new
    /// file's partials file is written as soon as it is folded, and removed again if the
    /// batch fails before its store commit.
    pub(super) fn apply(
        &self,
        changes: Vec<Change>,
        report: &mut UpdateReport,
        committed: &mut Committed,
    ) -> Result<()> {
        let (ids, next_id) = self.file_ids(&changes)?;
        let t0 = Instant::now();
        let generation = self.store.generation()? + 1;
        let mut gather = Gather::new(self, &changes, &ids, report, generation);
        let folded = self.fold_all(&mut gather);
        let batch = gather.finish();
        let written = batch.commit.prewritten.clone();
        let t_fold = t0.elapsed();
        let ready = match folded.and_then(|()| self.prepare(batch, committed)) {
            Ok(Some(ready)) => ready,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.store.discard_partials(&written, generation);
                return Err(e);
            }
        };
        let Ready {
            commit,
            combined,
            added,
            removed_ids,
            pending,
        } = ready;
        let in_place = combined.is_none().then_some(added);
        let ([t_merge, t_table], stored) =
            self.land(&commit, in_place, pending, committed, next_id)?;
        committed.advance(commit.generation, combined);
        report.generation = commit.generation;
        let changed: HashSet<u32> = removed_ids
            .iter()
            .copied()
            .chain(commit.folded.iter().map(|(r, _)| r.id))
            .collect();
        self.unloaded
            .lock()
            .expect("unloaded lock")
            .retain(|id| !changed.contains(id));
        tracing::info!(
            generation = commit.generation,
            fold_ms = t_fold.as_millis() as u64,
            merge_ms = (t_merge - t0 - t_fold).as_millis() as u64,
            table_wait_ms = (t_table - t_merge).as_millis() as u64,
            store_ms = t_table.elapsed().as_millis() as u64,
            "generation committed to the store"
        );
        stored
    }

    /// Commits a prepared batch: the rollups take its partials in place first (`in_place`,
    /// when no snapshot shares them) while DuckDB finishes its appends, then the table's
    /// changes are waited for and the store commits. A commit that does not land takes
    /// the batch out of the rollups again, removes the partials files it wrote and fails.
    /// Otherwise returns when the merge and the table's wait ended, and the commit's
    /// outcome: an error for one that landed all the same (its flush failed).
    fn land(
        &self,
        commit: &Commit,
        in_place: Option<Vec<Vec<RollupRows>>>,
        pending: Queued,
        committed: &mut Committed,
        next_id: u32,
    ) -> Result<([Instant; 2], Result<()>)> {
        // From here the rollups run ahead of the store until its commit lands.
        if let Some(added) = &in_place {
            committed.merge_in_place(added);
        }
        let merged = Instant::now();
        // The table commits before the store.
        let waited = pending.into_iter().try_for_each(|(p, _)| p.wait());
        let table = Instant::now();
        let stored = waited.and_then(|()| self.commit_store(commit, next_id));
        // A commit that reports an error may still have landed (its flush failed): the
        // rollups in memory follow what the store holds either way.
        let landed = || {
            self.store
                .generation()
                .is_ok_and(|g| g == commit.generation)
        };
        match stored {
            Err(e) if !landed() => {
                self.store
                    .discard_partials(&commit.prewritten, commit.generation);
                if let Some(added) = in_place {
                    committed.take_out(added);
                }
                Err(e)
            }
            stored => Ok(([merged, table], stored)),
        }
    }

    /// What a folded batch needs before its store commit: the appended tails' partials
    /// and, unless the rollups take the batch in place, the new rollups. `None` when the
    /// batch changes nothing.
    fn prepare(&self, batch: Batch, committed: &mut Committed) -> Result<Option<Ready>> {
        let Batch {
            mut commit,
            added,
            removed_ids,
            appended,
            pending,
        } = batch;
        if commit.is_empty() {
            return Ok(None);
        }
        self.store_tails(&mut commit, appended)?;
        // New rollups: old + added − removed. Rollups no snapshot shares (within a
        // multi-batch update) take a batch of additions in place; others get the
        // additions laid over them, or are merged into new ones, while DuckDB may still
        // be appending.
        let (combined, added) = match committed.takes_in_place(added.len(), &removed_ids) {
            true => (None, added),
            false => {
                let sums: Vec<RollupRows> =
                    added.into_par_iter().map(RollupRows::merge_tree).collect();
                (
                    Some(self.combine(committed, &sums, &removed_ids)?),
                    Vec::new(),
                )
            }
        };
        Ok(Some(Ready {
            commit,
            combined,
            added,
            removed_ids,
            pending,
        }))
    }

    /// Each change's file id (new ones for files folded afresh), and the next unused id.
    fn file_ids(&self, changes: &[Change]) -> Result<(Vec<u32>, u32)> {
        let mut next_id = self.store.next_id()?;
        let ids = changes
            .iter()
            .map(|c| match c {
                Change::Add(_) | Change::Replace(..) => {
                    next_id += 1;
                    next_id - 1
                }
                Change::Append(r, _) | Change::Remove(r) | Change::Move(r, _) => r.id,
            })
            .collect();
        Ok((ids, next_id))
    }

    /// An appended tail's partial is stored as a part of its file's, until the file has
    /// `MAX_PARTS` of them: then the file's partial is stored whole again.
    fn store_tails(
        &self,
        commit: &mut Commit,
        appended: Vec<(u32, Vec<RollupRows>)>,
    ) -> Result<()> {
        for (id, tail) in appended {
            if self.store.parts(id)? < MAX_PARTS {
                commit
                    .tails
                    .push((id, encode_all(&tail, self.store.countries())));
                continue;
            }
            let whole: Vec<RollupRows> = tail
                .iter()
                .enumerate()
                .map(|(s, t)| Ok(self.store.partial(id, s)?.merge(t)))
                .collect::<Result<_>>()?;
            let slot = commit
                .folded
                .iter_mut()
                .find(|(r, _)| r.id == id)
                .expect("appended record");
            slot.1 = encode_all(&whole, self.store.countries());
        }
        Ok(())
    }

    /// Commits a batch to the store (in the store's layout: open records it, and only a
    /// layout change, under the same lock as updates, changes it).
    fn commit_store(&self, commit: &Commit, next_id: u32) -> Result<()> {
        self.opts.failpoints.hit("store.commit")?;
        self.store
            .commit(commit, next_id)
            .and_then(|()| self.opts.failpoints.hit("store.committed"))
    }

    /// The committed rollups + `added` − the stored partials of `removed`, per rollup:
    /// additions alone laid over the rollup's rows where the layer stays small, else new
    /// rows, with the keys whose extremes the removed partials may have held.
    fn combine(
        &self,
        committed: &Committed,
        added: &[RollupRows],
        removed: &[u32],
    ) -> Result<Vec<Next>> {
        added
            .par_iter()
            .enumerate()
            .map(|(s, add)| {
                let current = committed.rollups.get(s);
                let layers = removed.is_empty() && (add.is_empty() || committed.takes_layers());
                if let Some(next) = current.filter(|_| layers).and_then(|c| c.with_added(add)) {
                    return Ok(Next::Layered(next));
                }
                let parts = removed
                    .iter()
                    .map(|id| self.store.partial(*id, s))
                    .collect::<Result<Vec<_>>>()?;
                let old = current.map_or_else(Default::default, Layered::merged);
                let started = Instant::now();
                let sub = RollupRows::merge_tree(parts);
                let t_sub = started.elapsed();
                let (rows, affected) = old.combine(add, &sub);
                tracing::debug!(
                    rollup = s,
                    rows = old.len(),
                    add = add.len(),
                    sub = sub.len(),
                    read_us = t_sub.as_micros() as u64,
                    combine_us = (started.elapsed() - t_sub).as_micros() as u64,
                    "combined"
                );
                Ok(Next::Merged(Box::new(rows), affected))
            })
            .collect()
    }

    /// Folds the batch's files on the fold pool and hands what each produces to
    /// `gather` on this thread, as it comes: rows of a chunk, then the file's fold (or its
    /// failure); removals and moves at once.
    pub(super) fn fold_all(&self, gather: &mut Gather<'_>) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.threads)
            .start_handler(|_| yield_to_duckdb())
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let (changes, ids) = (gather.changes, gather.ids);
        // Threads a file gets: all when it folds alone, one each when several fold.
        let folding = changes.iter().filter(|c| change_seen(c).is_some()).count();
        let workers = (pool.current_num_threads() / folding.max(1)).max(1);
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Piece)>(2);
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(move || {
                pool.install(|| {
                    changes
                        .par_iter()
                        .enumerate()
                        .for_each_with(tx, |tx, (i, c)| {
                            let (s, from, part) = match c {
                                Change::Add(s) | Change::Replace(_, s) => (s, 0, 0),
                                Change::Append(r, s) => (s, r.size, r.parts as i32),
                                Change::Remove(_) | Change::Move(..) => {
                                    let _ = tx.send((i, Piece::Other));
                                    return;
                                }
                            };
                            let emit = |batch| {
                                let _ = tx.send((i, Piece::Rows(batch)));
                            };
                            let folded = self.fold(s, from, (ids[i] as i32, part), workers, &emit);
                            let _ = tx.send((i, Piece::Done(folded)));
                        })
                })
            });
            for (i, piece) in rx {
                match piece {
                    Piece::Rows(batch) => gather.rows(i, batch)?,
                    Piece::Done(Err(Error::Cancelled)) => return Err(Error::Cancelled),
                    Piece::Done(Err(e)) => gather.failed(i, &e)?,
                    Piece::Done(Ok(None)) => gather.held(i),
                    Piece::Done(Ok(Some(fold))) => gather.folded(i, fold)?,
                    Piece::Other => gather.other(i)?,
                }
            }
            Ok(())
        })
    }

    /// Reads and folds a file from byte `from` on, a chunk of whole lines at a time,
    /// through its last complete line (or all of it once the file has been quiet for
    /// `line_hold`). Up to `workers` chunks fold at once (this thread reads the next one
    /// meanwhile), so a file alone in its batch folds on every core. Each chunk's table
    /// rows go to `emit` as soon as they are parsed, for DuckDB to load while their
    /// partials are computed; the fold returned holds the whole partial and the
    /// fingerprint of everything up to the end of what was folded. `None` when there is no complete line past `from`
    /// yet. Fails with `Error::Changed` when the file changed while read or folded:
    /// nothing of it is committed, and it is folded again later.
    pub(super) fn fold(
        &self,
        s: &Seen,
        from: u64,
        ids: (i32, i32),
        workers: usize,
        emit: &(dyn Fn(RecordBatch) + Sync),
    ) -> Result<Option<Fold>> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        let Some(Opened {
            mut lines,
            header,
            quiet,
        }) = self.open_for_fold(s, from, workers)?
        else {
            return Ok(None);
        };
        let start = Instant::now();
        let fold_chunk = |chunk: Chunk| -> Result<Folded> {
            let text = Text {
                path: &s.path,
                header: &header,
                body: &chunk.bytes,
                first_line: chunk.first_line,
                ids,
                zone: self.layout().zone,
                countries: self.store.countries(),
            };
            let parsed = parse_text(&text, self.opts.max_bad_rows)?;
            self.stats.chunk_folded(chunk.bytes.len());
            // The text is not needed past the parse: its memory goes before the partials'.
            drop(chunk);
            // The rows go to DuckDB at once, to load while their partials are computed.
            if parsed.rows().num_rows() > 0 {
                emit(parsed.rows().clone());
            }
            let folded = parsed.fold(&self.layout().specs, self.store.countries())?;
            Ok(folded.without_rows())
        };
        let mut rest = quiet;
        let next = || -> Result<Option<Chunk>> {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            match lines.next_lines()? {
                Some(chunk) => Ok(Some(chunk)),
                None if std::mem::take(&mut rest) => {
                    let chunk = lines.rest()?;
                    Ok((!chunk.bytes.is_empty()).then_some(chunk))
                }
                None => Ok(None),
            }
        };
        let mut whole = Whole {
            fold: None,
            path: &s.path,
            max_bad_rows: self.opts.max_bad_rows,
        };
        whole.fold_chunks(next, workers, &fold_chunk)?;
        if from > 0 && lines.taken() <= from {
            return Ok(None);
        }
        let mut f = match whole.fold {
            Some(f) => f,
            None => fold_chunk(Chunk {
                bytes: Vec::new(),
                first_line: 2,
            })?,
        };
        if from == 0 {
            f.bytes += header.len() as u64;
        }
        still_as_seen(s)?;
        self.stats.parsed(&s.path, f.bytes, f.rows);
        tracing::debug!(
            path = %s.path.display(),
            ms = start.elapsed().as_millis() as u64,
            partial_kb = f.partial.iter().map(RollupRows::heap_bytes).sum::<usize>() >> 10,
            "folded"
        );
        let encoded = if from == 0 {
            encode_all(&f.partial, self.store.countries())
        } else {
            Vec::new()
        };
        Ok(Some(Fold {
            len: lines.taken(),
            fingerprint: lines.fingerprint(),
            folded: f,
            encoded,
        }))
    }

    /// A file opened to fold from byte `from` on (in chunks for `workers` threads);
    /// `None` while not even its header line is whole.
    fn open_for_fold(&self, s: &Seen, from: u64, workers: usize) -> Result<Option<Opened>> {
        let file = open_as_seen(s)?;
        self.opts.failpoints.hit("fold.read")?;
        let quiet = SystemTime::now() >= line_held_until(s.mtime_ns, self.opts.line_hold);
        let chunk = chunk_len(self.opts.chunk_bytes, s.size.saturating_sub(from), workers);
        let mut lines = Lines::new(&s.path, file.take(s.size), chunk);
        let header = match lines.header()? {
            Some(header) => header,
            None if !quiet => return Ok(None),
            None => lines.rest()?.bytes,
        };
        if header.is_empty() {
            return Err(Error::BadFile {
                path: s.path.clone(),
                reason: "empty file (no header line)".into(),
            });
        }
        lines.skip_to(from)?;
        Ok(Some(Opened {
            lines,
            header,
            quiet,
        }))
    }
}

/// How much nicer than the rest of the process a fold thread runs (on Linux, where a
/// thread has a priority of its own). DuckDB's appends are an update's longest chain and
/// a fold that runs ahead of them only queues rows, so where the two want the same core,
/// DuckDB's thread gets it: a cold build at bench scale took ~17 s instead of ~19 s, and
/// held ~70 MB less.
const FOLD_NICENESS: i32 = 10;

/// Lowers the calling fold thread's priority by `FOLD_NICENESS`.
fn yield_to_duckdb() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread (`who` 0 is the caller on Linux);
    // a failure leaves the priority as it was.
    unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (now + FOLD_NICENESS).min(19));
    }
}

/// A file opened for a fold.
struct Opened {
    /// Its lines, from where the fold starts.
    lines: Lines<std::io::Take<File>>,
    header: Vec<u8>,
    /// Whether it has been quiet for `line_hold` (its last line then counts even without
    /// a newline).
    quiet: bool,
}

/// The smallest chunk a file is cut into so that several threads fold it.
const MIN_SHARED_CHUNK: u64 = 4 << 20;

/// How many bytes a chunk of a fold of `len` bytes by `workers` threads holds: the
/// configured chunk, or less, so that every worker gets one.
fn chunk_len(chunk_bytes: usize, len: u64, workers: usize) -> usize {
    match workers {
        0 | 1 => chunk_bytes,
        w => (len.div_ceil(w as u64).max(MIN_SHARED_CHUNK) as usize).min(chunk_bytes),
    }
}

/// A file's fold, built from its chunks' folds as they come, in any order.
struct Whole<'a> {
    fold: Option<Folded>,
    path: &'a Path,
    max_bad_rows: u64,
}

impl Whole<'_> {
    /// Folds the chunks `next` reads with `fold_chunk`, up to `workers` at once on the
    /// pool (this thread folds the others, and reads), adding each as it is done.
    fn fold_chunks(
        &mut self,
        mut next: impl FnMut() -> Result<Option<Chunk>>,
        workers: usize,
        fold_chunk: &(dyn Fn(Chunk) -> Result<Folded> + Sync),
    ) -> Result<()> {
        rayon::in_place_scope(|scope| {
            let (tx, rx) = crossbeam_channel::unbounded();
            // Chunks folding on other threads.
            let mut away = 0;
            while let Some(chunk) = next()? {
                if away + 1 < workers {
                    away += 1;
                    let tx = tx.clone();
                    scope.spawn(move |_| {
                        let _ = tx.send(fold_chunk(chunk));
                    });
                } else {
                    self.add(fold_chunk(chunk)?)?;
                }
                for piece in rx.try_iter() {
                    away -= 1;
                    self.add(piece?)?;
                }
            }
            while away > 0 {
                let piece = match rx.try_recv() {
                    Ok(piece) => piece,
                    // Fold it here if no other thread has taken it yet.
                    Err(_) => match rayon::yield_local() {
                        Some(rayon::Yield::Executed) => continue,
                        _ => rx.recv().expect("a chunk sends its fold"),
                    },
                };
                away -= 1;
                self.add(piece?)?;
            }
            Ok(())
        })
    }

    /// Adds a chunk's fold. Fails once the chunks hold more than `max_bad_rows` bad
    /// rows.
    fn add(&mut self, piece: Folded) -> Result<()> {
        let whole = match &mut self.fold {
            None => self.fold.insert(piece),
            Some(w) => {
                w.then(piece);
                w
            }
        };
        whole.check_bad_rows(self.path, self.max_bad_rows)
    }
}

/// A file's fold.
pub(super) struct Fold {
    pub(super) folded: Folded,
    /// The file's prefix folded: through its last complete line, or all of it.
    pub(super) len: u64,
    /// xxh3 of that prefix.
    pub(super) fingerprint: u64,
    /// The encoded partials (whole files only).
    pub(super) encoded: Vec<Vec<u8>>,
}

/// A batch ready for its store commit (see `Engine::prepare`): the new rollups, or the
/// partials to merge into them in place, and the table changes DuckDB may still be
/// applying.
struct Ready {
    commit: Commit,
    combined: Option<Vec<Next>>,
    /// Per rollup, the partials folded (when `combined` is `None`).
    added: Vec<Vec<RollupRows>>,
    removed_ids: Vec<u32>,
    pending: Queued,
}

/// What a fold thread sends for change number `i` of a batch.
pub(super) enum Piece {
    /// Table rows of a chunk of the file (more follow).
    Rows(RecordBatch),
    /// The file's fold, `None` when there was nothing whole to fold yet, or its failure.
    Done(Result<Option<Fold>>),
    /// A change that folds nothing (a removal or a move).
    Other,
}

/// The path a change is about (the new one of a move).
pub(super) fn change_path(c: &Change) -> &Path {
    match c {
        Change::Add(s) | Change::Replace(_, s) | Change::Append(_, s) | Change::Move(_, s) => {
            &s.path
        }
        Change::Remove(r) => &r.path,
    }
}

/// The file as seen, for the changes that fold it.
pub(super) fn change_seen(c: &Change) -> Option<&Seen> {
    match c {
        Change::Add(s) | Change::Replace(_, s) | Change::Append(_, s) => Some(s),
        Change::Remove(_) | Change::Move(..) => None,
    }
}

pub(super) fn change_id(c: &Change) -> Option<u32> {
    match c {
        Change::Add(_) => None,
        Change::Remove(r) | Change::Replace(r, _) | Change::Append(r, _) | Change::Move(r, _) => {
            Some(r.id)
        }
    }
}

pub(super) fn record(id: u32, s: &Seen, fingerprint: u64, rows: u64, parts: u32) -> FileRecord {
    FileRecord {
        id,
        path: s.path.clone(),
        size: s.size,
        mtime_ns: s.mtime_ns,
        inode: s.inode,
        fingerprint,
        rows,
        bad_rows: 0,
        parts,
    }
}

pub(super) fn table_file(r: &FileRecord) -> TableFile {
    TableFile {
        id: r.id as i32,
        path: r.path.display().to_string(),
        size: r.size,
        parts: r.parts as i32,
        rows: r.rows,
    }
}

pub(super) fn skipped(report: &mut UpdateReport, s: &Seen, f: &Folded) {
    for (line, reason) in &f.bad_rows {
        report
            .skipped
            .push((s.path.clone(), format!("line {line} skipped: {reason}")));
    }
}

/// Adds a file's partial to the batch's additions (merged at the batch's end, in one
/// pass per rollup).
pub(super) fn add_partial(added: &mut [Vec<RollupRows>], partial: Vec<RollupRows>) {
    for (parts, p) in added.iter_mut().zip(partial) {
        if !p.is_empty() {
            parts.push(p);
        }
    }
}

pub(super) fn encode_all(partial: &[RollupRows], countries: &Countries) -> Vec<Vec<u8>> {
    partial
        .par_iter()
        .map(|p| codec::encode(p, countries))
        .collect()
}

/// Splits changes into batches of at most `limit` bytes to fold (at least one change each).
pub(super) fn batches(changes: Vec<Change>, limit: u64) -> Vec<Vec<Change>> {
    let mut out: Vec<Vec<Change>> = Vec::new();
    let mut bytes = 0;
    for c in changes {
        let cost = match &c {
            Change::Add(s) | Change::Replace(_, s) => s.size,
            Change::Append(r, s) => s.size - r.size,
            Change::Remove(_) | Change::Move(..) => 0,
        };
        if out.is_empty() || (bytes + cost > limit && !out.last().expect("batch").is_empty()) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += cost;
        out.last_mut().expect("batch").push(c);
    }
    out
}
