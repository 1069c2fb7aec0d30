//! The engine: a state folder's store, rollups and DuckDB table, kept up to date with a
//! folder of CSVs, and the published snapshot that queries run against.
//!
//! Data flows one way: files → fold → store → snapshot → queries. An update compares the
//! folder with the store's registry and acts on differences only. Each update commits in
//! this order: DuckDB (one transaction per file), the store (one sled transaction), the
//! rollup partitions and manifest (by rename). `open` repairs whatever a crash between
//! those steps left behind, without re-parsing files whose content did not change.

pub mod failpoint;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::RecordBatch;
use rayon::prelude::*;

use crate::daemon::limits::QueryBudget;
use crate::engine::failpoint::Failpoints;
use crate::error::{Error, Result};
use crate::ingest::changes::{detect, fingerprint, Change, Seen};
use crate::ingest::fold::{fold_text, Folded, Text};
use crate::ingest::lines::{Chunk, Lines};
use crate::ingest::regular::{open_as_seen, still_as_seen};
use crate::ingest::watch::{line_held_until, scan};
use crate::model::schema::Zone;
use crate::query::exec::execute;
use crate::query::{plan, CatalogEntry, Query, ResultSet, Route};
use crate::rollup::codec;
use crate::rollup::{default_specs, Key, RollupRows, RollupSpec};
use crate::storage::lock::StateLock;
use crate::storage::manifest::{read_rollup, write_rollup, Manifest, MANIFEST_VERSION};
use crate::storage::store::{Commit, FileRecord, Store, MAX_PARTS};
use crate::storage::table::{Pending, Table, TableChange, TableFile, TableOptions, View};

/// How the engine folds and stores.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Time zone of the derived time columns.
    pub zone: Zone,
    /// Whether CSVs in subfolders of the watched folder count too.
    pub recursive: bool,
    /// The rollups to keep.
    pub specs: Vec<RollupSpec>,
    /// Fold threads (0 = one per core).
    pub threads: usize,
    /// CSV bytes folded per commit; bounds the memory an update holds.
    pub batch_bytes: u64,
    /// CSV bytes read and parsed at a time: a larger file folds a chunk at a time, its
    /// rows sent to DuckDB as each chunk is parsed.
    pub chunk_bytes: usize,
    /// Bad rows a file may have (skipped, counted and reported) before it fails.
    pub max_bad_rows: u64,
    /// DuckDB connections per published view: how many DuckDB-routed queries of one
    /// generation run at once.
    pub readers: usize,
    pub table: TableOptions,
    /// How long an unterminated last line is held back after the file's last change (the
    /// writer may still finish it); zero folds it at once. Past that, it is folded as it
    /// is (or the file fails, if it does not parse).
    pub line_hold: Duration,
    /// Steps of the commit path armed to fail, for tests (none by default).
    pub failpoints: Failpoints,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            zone: Zone::Utc,
            recursive: false,
            specs: default_specs(),
            threads: 0,
            batch_bytes: 256 << 20,
            chunk_bytes: 64 << 20,
            max_bad_rows: 0,
            readers: 2,
            table: TableOptions::default(),
            line_hold: Duration::ZERO,
            failpoints: Failpoints::default(),
        }
    }
}

/// A file's fold.
struct Fold {
    folded: Folded,
    /// The file's prefix folded: through its last complete line, or all of it.
    len: u64,
    /// xxh3 of that prefix.
    fingerprint: u64,
    /// The encoded partials (whole files only).
    encoded: Vec<Vec<u8>>,
}

/// A file an update could not fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFailure {
    pub path: PathBuf,
    pub reason: String,
    /// Whether trying again unchanged may succeed (an I/O error), unlike content that
    /// does not parse.
    pub transient: bool,
}

impl FileFailure {
    fn new(path: &Path, e: &Error) -> FileFailure {
        FileFailure {
            path: path.to_path_buf(),
            reason: e.to_string(),
            transient: e.is_transient(),
        }
    }
}

/// One immutable published state: the rollups of one generation and a DuckDB view of the
/// table as of the same generation.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub catalog: Vec<CatalogEntry>,
    pub rollups: Vec<Arc<RollupRows>>,
    /// `None` only before the first publish.
    pub view: Option<Arc<View>>,
}

impl Snapshot {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Marks the rollups whose extremes are pending (see `Committed::pending`).
    fn with_pending(mut self, pending: &[bool]) -> Snapshot {
        for (entry, p) in self.catalog.iter_mut().zip(pending) {
            entry.extremes_pending = *p;
        }
        self
    }

    /// Whether each rollup has keys whose extremes are pending.
    pub fn pending_flags(&self) -> Vec<bool> {
        self.catalog.iter().map(|e| e.extremes_pending).collect()
    }

    /// Bytes of memory the snapshot's rollups take.
    pub fn rollup_bytes(&self) -> usize {
        self.rollups.iter().map(|r| r.heap_bytes()).sum()
    }

    fn new(
        generation: u64,
        specs: &[RollupSpec],
        rollups: Vec<Arc<RollupRows>>,
        view: Arc<View>,
    ) -> Snapshot {
        let catalog = specs
            .iter()
            .zip(&rollups)
            .map(|(spec, rows)| CatalogEntry {
                spec: spec.clone(),
                rows: rows.len() as u64,
                extremes_pending: false,
            })
            .collect();
        Snapshot {
            generation,
            catalog,
            rollups,
            view: Some(view),
        }
    }
}

/// The manifest on disk and the rollups its partitions hold.
type Written = (Manifest, Vec<Arc<RollupRows>>);

/// The rollups of the store's last committed generation.
#[derive(Debug, Clone, Default)]
struct Committed {
    generation: u64,
    rollups: Vec<Arc<RollupRows>>,
    /// Per rollup, the keys (sorted) whose minimum or maximum a removal may have taken and
    /// that have not had them back from the remaining rows yet (`Engine::restore_pending`).
    /// Their extremes are unknown meanwhile: the snapshot says so (queries needing them go
    /// to DuckDB), and the partitions are not written.
    pending: Vec<Vec<Key>>,
}

impl Committed {
    fn new(generation: u64, rollups: Vec<Arc<RollupRows>>) -> Committed {
        Committed {
            generation,
            pending: vec![Vec::new(); rollups.len()],
            rollups,
        }
    }

    /// Adds the keys whose extremes a removal may have taken to those pending, keeping
    /// only keys the rollups still hold.
    fn pend(&mut self, affected: Vec<Vec<Key>>) {
        self.pending.resize(self.rollups.len(), Vec::new());
        for ((pending, new), rows) in self.pending.iter_mut().zip(affected).zip(&self.rollups) {
            pending.extend(new);
            pending.sort_unstable();
            pending.dedup();
            pending.retain(|k| rows.find(k).is_some());
        }
    }

    /// Whether each rollup has keys whose extremes are pending.
    fn pending_flags(&self) -> Vec<bool> {
        self.pending.iter().map(|p| !p.is_empty()).collect()
    }
}

/// A query's answer with where it came from.
#[derive(Debug, Clone)]
pub struct Answer {
    pub result: ResultSet,
    /// `rollup:<name>` or `duckdb`.
    pub source: String,
    pub generation: u64,
    pub elapsed: Duration,
}

/// What an update did.
#[derive(Debug, Default)]
pub struct UpdateReport {
    pub generation: u64,
    pub added: usize,
    pub replaced: usize,
    pub appended: usize,
    pub moved: usize,
    pub removed: usize,
    /// Rows folded by this update.
    pub rows: u64,
    /// CSV bytes parsed by this update.
    pub bytes_parsed: u64,
    /// Files that could not be folded, with the reason; the store keeps their earlier
    /// contribution, if any.
    pub failed: Vec<FileFailure>,
    /// Files whose unterminated last line was held back (`EngineOptions::line_hold`); what
    /// came before it, if anything, was folded.
    pub held: Vec<PathBuf>,
    /// Rows skipped as bad (within `max_bad_rows`), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    pub elapsed: Duration,
}

impl UpdateReport {
    pub fn changed(&self) -> usize {
        self.added + self.replaced + self.appended + self.moved + self.removed
    }
}

/// Counters of work done since the engine opened.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_parsed: AtomicU64,
    /// Rows folded (including appended tails and files folded again).
    pub rows_folded: AtomicU64,
    /// Chunks of whole lines parsed (a file folds in one or more).
    pub chunks_folded: AtomicU64,
    /// Bytes of the largest chunk parsed: what the fold held of a file at once.
    pub largest_chunk: AtomicU64,
    per_file: Mutex<HashMap<PathBuf, u64>>,
}

impl Stats {
    fn parsed(&self, path: &Path, bytes: u64, rows: u64) {
        self.bytes_parsed.fetch_add(bytes, Ordering::Relaxed);
        self.rows_folded.fetch_add(rows, Ordering::Relaxed);
        *self
            .per_file
            .lock()
            .expect("stats lock")
            .entry(path.to_path_buf())
            .or_default() += bytes;
    }

    /// Bytes parsed from `path` since start.
    pub fn bytes_parsed_of(&self, path: &Path) -> u64 {
        self.per_file
            .lock()
            .expect("stats lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// The engine over one state folder.
pub struct Engine {
    state: PathBuf,
    opts: EngineOptions,
    table: Table,
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    stats: Stats,
    /// Changes forced by crash repair, done by the next update.
    repairs: Mutex<Vec<FileRecord>>,
    /// The rollups of the store's last committed generation: updates start from these,
    /// and publishing catches up with them (the snapshot and the manifest may trail them
    /// after a failed publish).
    committed: Mutex<Committed>,
    /// Files the store holds whose rows the table lacks (in part) until their repair.
    unloaded: Mutex<HashSet<u32>>,
    /// One update at a time.
    updating: Mutex<()>,
    _lock: StateLock,
    /// What was rebuilt on open, and why: a changed layout, or state found missing or
    /// damaged and rebuilt from what remained.
    rebuilt: Vec<String>,
    /// What the partitions on disk hold, to tell which ones a change touched.
    written: Mutex<Written>,
    /// Set to stop an update early (at the next file); see [`Engine::cancel`].
    cancelled: AtomicBool,
    /// The published generation, for waiters.
    generation: tokio::sync::watch::Sender<u64>,
}

const DB_FILE: &str = "events.duckdb";
const STORE_DIR: &str = "store";
const PARTIALS_DIR: &str = "partials";

impl Engine {
    /// Opens the state folder (creating it if needed), repairs what an interrupted update
    /// left behind, and loads the published snapshot.
    pub fn open(state: &Path, opts: EngineOptions) -> Result<Engine> {
        std::fs::create_dir_all(state).map_err(|e| Error::io(state, e))?;
        let lock = StateLock::acquire(state)?;
        let (store, store_rebuilt) =
            Store::open_or_rebuild(&state.join(STORE_DIR), &state.join(PARTIALS_DIR))?;
        let (table, table_rebuilt) =
            Table::open_or_rebuild(&state.join(DB_FILE), &opts.table, opts.failpoints.clone())?;
        let mut engine = Engine {
            state: state.to_path_buf(),
            opts,
            table,
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            stats: Stats::default(),
            repairs: Mutex::new(Vec::new()),
            committed: Mutex::new(Committed::default()),
            unloaded: Mutex::new(HashSet::new()),
            updating: Mutex::new(()),
            _lock: lock,
            rebuilt: store_rebuilt.into_iter().chain(table_rebuilt).collect(),
            written: Mutex::new(Written::default()),
            cancelled: AtomicBool::new(false),
            generation: tokio::sync::watch::Sender::new(0),
        };
        engine.recover()?;
        Ok(engine)
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The current published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// The published generation, changing as generations are published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The files the store tracks.
    pub fn files(&self) -> Result<Vec<FileRecord>> {
        self.store.files()
    }

    /// Stops the running update (if any) and every later one before its next file. Files
    /// folded and committed so far are published; the rest stay as they were.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Makes `snapshot` the one queries see; waiters hear of a new generation only (a
    /// generation published again, its extremes restored, answers as it did).
    fn publish(&self, snapshot: Snapshot) {
        let generation = snapshot.generation();
        *self.snapshot.write().expect("snapshot lock") = Arc::new(snapshot);
        self.generation
            .send_if_modified(|g| std::mem::replace(g, generation) != generation);
    }

    /// A view of the table as of now, for the snapshot about to be published.
    fn view(&self) -> Result<View> {
        self.table.view(self.opts.readers)
    }

    /// Brings table and rollups in line with the store after an interrupted update, and
    /// starts over when the state was built with another time zone or rollup set. What
    /// is missing or damaged is rebuilt from what remains: files whose partials are lost
    /// are folded again, and the rollups are merged again from the stored partials.
    fn recover(&mut self) -> Result<()> {
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
    fn keep_generations_growing(&self, manifest: Option<&Manifest>) -> Result<()> {
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
    fn drop_lost_partials(&self) -> Result<Option<String>> {
        let lost = self.store.damaged_partials(self.opts.specs.len())?;
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

    /// A state folded with another time zone or rollup set is emptied (one store commit;
    /// the table and rollups follow), so the next update folds every file again with the
    /// configured one. The CSV files are the data; nothing else is lost.
    fn check_layout(&self) -> Result<Option<String>> {
        let Some((zone, specs)) = self.store.layout()? else {
            return Ok(None);
        };
        let mut changes = Vec::new();
        if zone != self.opts.zone.name() {
            changes.push(format!("time zone {zone} → {}", self.opts.zone.name()));
        }
        if specs != self.opts.specs {
            let names = |s: &[RollupSpec]| s.iter().map(RollupSpec::name).collect::<Vec<_>>();
            changes.push(format!(
                "rollups {:?} → {:?}",
                names(&specs),
                names(&self.opts.specs)
            ));
        }
        if changes.is_empty() {
            return Ok(None);
        }
        let reason = format!("{}; every file is folded again", changes.join(", "));
        tracing::warn!("the state was built with another layout: {reason}");
        let files = self.store.files()?;
        let commit = Commit {
            generation: self.store.generation()? + 1,
            removed: files.iter().map(|r| r.id).collect(),
            ..Commit::default()
        };
        self.store.commit(&commit, self.store.next_id()?)?;
        self.store
            .set_layout(&self.opts.zone.name(), &self.opts.specs)?;
        Ok(Some(reason))
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
    fn reconcile_table(&self) -> Result<()> {
        let records: HashMap<i32, FileRecord> = self
            .store
            .files()?
            .into_iter()
            .map(|r| (r.id as i32, r))
            .collect();
        let mut repairs = Vec::new();
        let in_table: HashMap<i32, TableFile> =
            self.table.files()?.into_iter().map(|f| (f.id, f)).collect();
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
        *self.unloaded.lock().expect("unloaded lock") = repairs.iter().map(|r| r.id).collect();
        *self.repairs.lock().expect("repairs lock") = repairs;
        Ok(())
    }

    /// Loads the published rollups, or merges them again from the stored partials when
    /// the manifest lags the store or one of its partitions cannot be read (then says
    /// why). Publishes them; a failure to write them out is left to the next update.
    fn recover_rollups(&self, manifest: Option<Manifest>) -> Result<Option<String>> {
        let generation = self.store.generation()?;
        let current = manifest.filter(|m| {
            m.generation == generation
                && specs_of(m) == self.opts.specs
                && m.zone == self.opts.zone.name()
        });
        let mut why = None;
        if let Some(m) = current {
            let read = m
                .rollups
                .par_iter()
                .map(|r| read_rollup(&self.state, r).map(Arc::new))
                .collect::<Result<Vec<_>>>();
            match read {
                Ok(rollups) => {
                    *self.written.lock().expect("written lock") = (m, rollups.clone());
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
        let rollups = (0..self.opts.specs.len())
            .into_par_iter()
            .map(|s| {
                let parts = ids
                    .iter()
                    .map(|id| self.store.partial(*id, s))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(RollupRows::merge_tree(parts)))
            })
            .collect::<Result<Vec<_>>>()?;
        *self.committed.lock().expect("committed lock") = Committed::new(generation, rollups);
        self.publish_recovered().map(|()| why)
    }

    /// Publishes what recovery found. Once the snapshot is out, a failure to write the
    /// partitions or the manifest (a full disk) does not stop the engine from opening:
    /// the next update writes them.
    fn publish_recovered(&self) -> Result<()> {
        match self.catch_up() {
            Err(e) if self.snapshot().view.is_some() => {
                tracing::error!("writing the rollups on open: {e}; the next update tries again");
                Ok(())
            }
            other => other,
        }
    }

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
    /// their rows go to DuckDB as soon as they are folded, a chunk at a time.
    fn apply(
        &self,
        changes: Vec<Change>,
        report: &mut UpdateReport,
        committed: &mut Committed,
    ) -> Result<()> {
        let current = &mut committed.rollups;
        let mut next_id = self.store.next_id()?;
        let ids: Vec<u32> = changes
            .iter()
            .map(|c| match c {
                Change::Add(_) | Change::Replace(..) => {
                    next_id += 1;
                    next_id - 1
                }
                Change::Append(r, _) | Change::Remove(r) | Change::Move(r, _) => r.id,
            })
            .collect();
        let t0 = Instant::now();
        let mut gather = Gather {
            engine: self,
            changes: &changes,
            ids: &ids,
            report,
            commit: Commit {
                generation: self.store.generation()? + 1,
                ..Commit::default()
            },
            added: vec![Vec::new(); self.opts.specs.len()],
            removed_ids: Vec::new(),
            appended: Vec::new(),
            pending: VecDeque::new(),
            started: HashSet::new(),
        };
        self.fold_all(&mut gather)?;
        let Gather {
            report,
            mut commit,
            added,
            removed_ids,
            appended,
            pending,
            ..
        } = gather;
        if commit.folded.is_empty() && commit.moved.is_empty() && commit.removed.is_empty() {
            return Ok(());
        }

        let specs = &self.opts.specs;
        let t_fold = t0.elapsed();
        // An appended tail's partial is stored as a part of its file's, until the file
        // has `MAX_PARTS` of them: then the file's partial is stored whole again.
        for (id, tail) in appended {
            if self.store.parts(id)? < MAX_PARTS {
                commit.tails.push((id, encode_all(&tail)));
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
            slot.1 = encode_all(&whole);
        }

        // New rollups: old + added − removed. Rollups no snapshot shares (within a
        // multi-batch update) take a batch of additions in place once the store has
        // committed it; others are merged into new ones while DuckDB may still be
        // appending.
        let added: Vec<RollupRows> = added.into_par_iter().map(RollupRows::merge_tree).collect();
        let in_place = removed_ids.is_empty()
            && current.len() == added.len()
            && current.iter_mut().all(|r| Arc::get_mut(r).is_some());
        let combined = match in_place {
            true => None,
            false => Some(self.combine(current, &added, &removed_ids)?),
        };
        let t_merge = t0.elapsed();
        // The table commits before the store.
        for p in pending {
            p.wait()?;
        }
        let t_table = t0.elapsed();
        let changed: HashSet<u32> = removed_ids
            .iter()
            .copied()
            .chain(commit.folded.iter().map(|(r, _)| r.id))
            .collect();
        self.store.set_layout(&self.opts.zone.name(), specs)?;
        self.opts.failpoints.hit("store.commit")?;
        let stored = self
            .store
            .commit(&commit, next_id)
            .and_then(|()| self.opts.failpoints.hit("store.committed"));
        // A commit that reports an error may still have landed (its flush failed): the
        // rollups in memory follow what the store holds either way.
        if stored.is_err() && self.store.generation()? != commit.generation {
            return stored;
        }
        match combined {
            Some(combined) => {
                let (rows, affected): (Vec<_>, Vec<_>) = combined.into_iter().unzip();
                *current = rows.into_iter().map(Arc::new).collect();
                committed.pend(affected);
            }
            None => committed
                .rollups
                .par_iter_mut()
                .zip(&added)
                .for_each(|(rows, add)| Arc::get_mut(rows).expect("unshared").merge_in_place(add)),
        }
        committed.generation = commit.generation;
        report.generation = commit.generation;
        self.unloaded
            .lock()
            .expect("unloaded lock")
            .retain(|id| !changed.contains(id));
        tracing::info!(
            generation = commit.generation,
            fold_ms = t_fold.as_millis() as u64,
            merge_ms = (t_merge - t_fold).as_millis() as u64,
            table_wait_ms = (t_table - t_merge).as_millis() as u64,
            store_ms = (t0.elapsed() - t_table).as_millis() as u64,
            "generation committed to the store"
        );
        stored
    }

    /// `current` + `added` − the stored partials of `removed`, per rollup, as new rows,
    /// with the keys whose extremes the removed partials may have held.
    fn combine(
        &self,
        current: &[Arc<RollupRows>],
        added: &[RollupRows],
        removed: &[u32],
    ) -> Result<Vec<(RollupRows, Vec<Key>)>> {
        added
            .par_iter()
            .enumerate()
            .map(|(s, add)| {
                let parts = removed
                    .iter()
                    .map(|id| self.store.partial(*id, s))
                    .collect::<Result<Vec<_>>>()?;
                let empty = RollupRows::default();
                let old = current.get(s).map_or(&empty, |r| r.as_ref());
                let started = Instant::now();
                let sub = RollupRows::merge_tree(parts);
                let t_sub = started.elapsed();
                let out = old.combine(add, &sub);
                tracing::debug!(
                    rollup = s,
                    rows = old.len(),
                    add = add.len(),
                    sub = sub.len(),
                    read_us = t_sub.as_micros() as u64,
                    combine_us = (started.elapsed() - t_sub).as_micros() as u64,
                    "combined"
                );
                Ok(out)
            })
            .collect()
    }

    /// Folds the batch's files on the fold pool and hands what each produces to
    /// `gather` on this thread, as it comes: rows of a chunk, then the file's fold (or its
    /// failure); removals and moves at once.
    fn fold_all(&self, gather: &mut Gather<'_>) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.threads)
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let (changes, ids) = (gather.changes, gather.ids);
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
                            let mut emit = |batch| {
                                let _ = tx.send((i, Piece::Rows(batch)));
                            };
                            let folded = self.fold(s, from, (ids[i] as i32, part), &mut emit);
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

    /// Gives the keys whose minimum or maximum a removal may have taken
    /// (`Committed::pending`) their extremes back, from the rows that remain: one DuckDB
    /// statement over the table, which holds exactly those rows, plus the stored partials
    /// of files whose rows the table lacks until a repair folds them again (`unloaded`;
    /// none outside crash repair). No other partial is read. Returns whether any key was
    /// pending; on failure they stay pending (queries needing them keep going to DuckDB)
    /// and the next update tries again.
    fn restore_pending(&self) -> Result<bool> {
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
        let wanted: Vec<(&RollupSpec, &[Key])> = self
            .opts
            .specs
            .iter()
            .zip(&pending)
            .map(|(spec, keys)| (spec, keys.as_slice()))
            .collect();
        let extremes = self.table.extremes(&wanted)?;
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
                    let rows = Arc::make_mut(&mut rows);
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

    /// Reads and folds a file from byte `from` on, a chunk of whole lines at a time
    /// (`chunk_bytes`), through its last complete line (or all of it once the file has
    /// been quiet for `line_hold`). The table rows of every chunk but the last go to
    /// `emit` as they are folded; the fold returned holds the last chunk's rows, the whole
    /// partial and the fingerprint of everything up to the end of what was folded. `None`
    /// when there is no complete line past `from` yet. Fails with `Error::Changed` when
    /// the file changed while read or folded: nothing of it is committed, and it is folded
    /// again later.
    fn fold(
        &self,
        s: &Seen,
        from: u64,
        ids: (i32, i32),
        emit: &mut dyn FnMut(RecordBatch),
    ) -> Result<Option<Fold>> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        let file = open_as_seen(s)?;
        self.opts.failpoints.hit("fold.read")?;
        let quiet = SystemTime::now() >= line_held_until(s.mtime_ns, self.opts.line_hold);
        let mut lines = Lines::new(&s.path, file.take(s.size), self.opts.chunk_bytes);
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
        let start = Instant::now();
        let mut whole: Option<Folded> = None;
        let mut fold_chunk = |chunk: Chunk, whole: &mut Option<Folded>| -> Result<()> {
            let bad = whole.as_ref().map_or(0, |w| w.bad_rows.len() as u64);
            let text = Text {
                path: &s.path,
                header: &header,
                body: &chunk.bytes,
                first_line: chunk.first_line,
                ids,
                zone: self.opts.zone,
            };
            let piece = fold_text(&text, &self.opts.specs, self.opts.max_bad_rows - bad)?;
            let stats = &self.stats;
            stats.chunks_folded.fetch_add(1, Ordering::Relaxed);
            stats
                .largest_chunk
                .fetch_max(chunk.bytes.len() as u64, Ordering::Relaxed);
            match whole {
                None => *whole = Some(piece),
                Some(w) => emit(w.then(piece)),
            }
            Ok(())
        };
        while let Some(chunk) = lines.next_lines()? {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            fold_chunk(chunk, &mut whole)?;
        }
        if quiet {
            let rest = lines.rest()?;
            if !rest.bytes.is_empty() {
                fold_chunk(rest, &mut whole)?;
            }
        }
        if from > 0 && lines.taken() <= from {
            return Ok(None);
        }
        let mut f = match whole {
            Some(f) => f,
            None => {
                let chunk = Chunk {
                    bytes: Vec::new(),
                    first_line: 2,
                };
                fold_chunk(chunk, &mut whole)?;
                whole.expect("folded")
            }
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
            encode_all(&f.partial)
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

    /// Publishes the committed generation where the snapshot or the manifest trails it:
    /// first the snapshot (queries see it from memory at once), then the rollup partitions
    /// that changed and the manifest. A crash before the manifest is replaced is repaired
    /// on open by merging the stored partials again; an error is retried by the next update.
    fn catch_up(&self) -> Result<()> {
        let specs = &self.opts.specs;
        let committed = self.committed.lock().expect("committed lock").clone();
        let (generation, pending) = (committed.generation, committed.pending_flags());
        let rollups = committed.rollups;
        let published = self.snapshot();
        let view = match &published.view {
            // The same generation again: its extremes were restored.
            Some(view) if published.generation() == generation => {
                if published.pending_flags() != pending {
                    let snapshot = Snapshot::new(generation, specs, rollups.clone(), view.clone());
                    self.publish(snapshot.with_pending(&pending));
                }
                view.clone()
            }
            _ => {
                if published.view.is_some() {
                    self.opts.failpoints.hit("publish")?;
                }
                let view = Arc::new(self.view()?);
                let snapshot = Snapshot::new(generation, specs, rollups.clone(), view.clone());
                tracing::debug!(
                    generation,
                    rollup_mb = snapshot.rollup_bytes() >> 20,
                    "publishing"
                );
                self.publish(snapshot.with_pending(&pending));
                view
            }
        };
        // The replaced snapshot's view must not count as a reader at the checkpoint below.
        drop(published);
        let (manifest, written) = self.written.lock().expect("written lock").clone();
        // Rollups with extremes pending are not written; the manifest waits for them.
        if pending.contains(&true)
            || manifest.generation == generation
                && specs_of(&manifest) == *specs
                && manifest.zone == self.opts.zone.name()
        {
            return Ok(());
        }
        self.opts.failpoints.hit("partition.write")?;
        let started = Instant::now();
        let entries = specs
            .par_iter()
            .zip(&rollups)
            .enumerate()
            .map(|(i, (spec, rows))| {
                let before = manifest
                    .rollups
                    .get(i)
                    .filter(|e| &e.spec == spec)
                    .zip(written.get(i).map(|r| r.as_ref()));
                write_rollup(&self.state, spec, rows, generation, before)
            })
            .collect::<Result<Vec<_>>>()?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            generation,
            zone: self.opts.zone.name(),
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

    /// Answers a JSON query, within the default caps and with no time limit.
    pub fn query(&self, json: &serde_json::Value) -> Result<Answer> {
        self.query_within(json, &QueryBudget::default())
    }

    /// Answers a JSON query within `budget`: its caps (`too_large` naming the cap) and its
    /// cancel (the query stops with the cancel's error).
    pub fn query_within(&self, json: &serde_json::Value, budget: &QueryBudget) -> Result<Answer> {
        let start = Instant::now();
        budget.limits.check_request(json)?;
        let query = Query::parse(json)?;
        let snap = self.snapshot();
        let plan = plan(&query, &snap.catalog);
        let (rollup, source) = match &plan.route {
            Route::Rollup(i) => (
                Some(snap.rollups[*i].as_ref()),
                format!("rollup:{}", snap.catalog[*i].spec.name()),
            ),
            Route::DuckDb { .. } => (None, "duckdb".to_string()),
        };
        let view = snap
            .view
            .as_ref()
            .ok_or_else(|| Error::Internal("no published snapshot yet".into()))?;
        let result = execute(&query, &plan, rollup, view, budget)?;
        Ok(Answer {
            result,
            source,
            generation: snap.generation(),
            elapsed: start.elapsed(),
        })
    }
}

/// What a fold thread sends for change number `i` of a batch.
enum Piece {
    /// Table rows of a chunk of the file (more follow).
    Rows(RecordBatch),
    /// The file's fold, `None` when there was nothing whole to fold yet, or its failure.
    Done(Result<Option<Fold>>),
    /// A change that folds nothing (a removal or a move).
    Other,
}

/// What one batch gathers while its files fold: the store commit, the partials to merge,
/// and the table changes queued on DuckDB's thread (at most two wait there, which bounds
/// the rows held in memory).
struct Gather<'a> {
    engine: &'a Engine,
    changes: &'a [Change],
    /// Each change's file id (new ones for files folded afresh).
    ids: &'a [u32],
    report: &'a mut UpdateReport,
    commit: Commit,
    /// Every partial folded, per rollup, merged once the folds are done.
    added: Vec<Vec<RollupRows>>,
    removed_ids: Vec<u32>,
    /// Appended files and their tails' partials.
    appended: Vec<(u32, Vec<RollupRows>)>,
    pending: VecDeque<Pending<()>>,
    /// Changes whose first chunk of rows is in the table already.
    started: HashSet<usize>,
}

impl Gather<'_> {
    fn table(&mut self, change: TableChange) -> Result<()> {
        while self.pending.len() >= 2 {
            self.pending.pop_front().expect("pending").wait()?;
        }
        self.pending
            .push_back(self.engine.table.apply_queued(change)?);
        Ok(())
    }

    /// Rows of a chunk: the first chunk of a file also writes a provisional record (a
    /// crash before the store commits is undone on open like any uncommitted change).
    fn rows(&mut self, i: usize, batch: RecordBatch) -> Result<()> {
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
    fn failed(&mut self, i: usize, e: &Error) -> Result<()> {
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
    fn held(&mut self, i: usize) {
        let path = change_path(&self.changes[i]).to_path_buf();
        self.report.held.push(path);
    }

    /// A file folded (all of it, or through its last complete line).
    fn folded(&mut self, i: usize, fold: Fold) -> Result<()> {
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
                add_partial(&mut self.added, f.partial);
                self.commit.folded.push((r, fold.encoded));
                match old {
                    Some(id) => {
                        self.report.replaced += 1;
                        self.removed_ids.push(id);
                        self.commit.removed.push(id);
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
                add_partial(&mut self.added, f.partial.clone());
                self.appended.push((r.id, f.partial));
                self.commit.folded.push((r, Vec::new()));
            }
            c => unreachable!("change {c:?} folds nothing"),
        }
        Ok(())
    }

    /// A removal or a move.
    fn other(&mut self, i: usize) -> Result<()> {
        match self.changes[i].clone() {
            Change::Remove(old) => {
                self.engine
                    .table
                    .apply(TableChange::Remove { id: old.id as i32 })?;
                self.report.removed += 1;
                self.removed_ids.push(old.id);
                self.commit.removed.push(old.id);
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
                self.commit.moved.push(r);
            }
            c => unreachable!("change {c:?} needs a fold"),
        }
        Ok(())
    }
}

fn specs_of(m: &Manifest) -> Vec<RollupSpec> {
    m.rollups.iter().map(|r| r.spec.clone()).collect()
}

/// The path a change is about (the new one of a move).
fn change_path(c: &Change) -> &Path {
    match c {
        Change::Add(s) | Change::Replace(_, s) | Change::Append(_, s) | Change::Move(_, s) => {
            &s.path
        }
        Change::Remove(r) => &r.path,
    }
}

/// The file as seen, for the changes that fold it.
fn change_seen(c: &Change) -> Option<&Seen> {
    match c {
        Change::Add(s) | Change::Replace(_, s) | Change::Append(_, s) => Some(s),
        Change::Remove(_) | Change::Move(..) => None,
    }
}

fn change_id(c: &Change) -> Option<u32> {
    match c {
        Change::Add(_) => None,
        Change::Remove(r) | Change::Replace(r, _) | Change::Append(r, _) | Change::Move(r, _) => {
            Some(r.id)
        }
    }
}

fn record(id: u32, s: &Seen, fingerprint: u64, rows: u64, parts: u32) -> FileRecord {
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

fn table_file(r: &FileRecord) -> TableFile {
    TableFile {
        id: r.id as i32,
        path: r.path.display().to_string(),
        size: r.size,
        parts: r.parts as i32,
        rows: r.rows,
    }
}

fn skipped(report: &mut UpdateReport, s: &Seen, f: &Folded) {
    for (line, reason) in &f.bad_rows {
        report
            .skipped
            .push((s.path.clone(), format!("line {line} skipped: {reason}")));
    }
}

/// Queues a file's partial to be merged into the batch's additions (at the end, per
/// rollup, in parallel; a batch of one file merges nothing).
fn add_partial(added: &mut [Vec<RollupRows>], partial: Vec<RollupRows>) {
    for (parts, p) in added.iter_mut().zip(partial) {
        parts.push(p);
    }
}

fn encode_all(partial: &[RollupRows]) -> Vec<Vec<u8>> {
    partial.iter().map(codec::encode).collect()
}

/// Splits changes into batches of at most `limit` bytes to fold (at least one change each).
fn batches(changes: Vec<Change>, limit: u64) -> Vec<Vec<Change>> {
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
