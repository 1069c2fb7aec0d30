//! The engine: a state folder's store, rollups and DuckDB table, kept up to date with a
//! folder of CSVs, and the published snapshot that queries run against.
//!
//! Data flows one way: files → fold → store → snapshot → queries. An update compares the
//! folder with the store's registry and acts on differences only. Each update commits in
//! this order: DuckDB (one transaction per file), the store (one sled transaction), the
//! rollup partitions and manifest (by rename). `open` repairs whatever a crash between
//! those steps left behind, without re-parsing files whose content did not change.

pub mod failpoint;
mod gather;
pub mod layout;
mod publish;
mod recover;
mod update;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::daemon::limits::QueryBudget;
use crate::engine::failpoint::Failpoints;
use crate::error::{Error, Result};
use crate::model::schema::Zone;
use crate::query::exec::execute;
use crate::query::{plan_in, CatalogEntry, Query, ResultSet, Route};
use crate::rollup::{default_specs, Key, Layered, RollupRows, RollupSpec};
use crate::storage::lock::StateLock;
use crate::storage::manifest::Manifest;
use crate::storage::store::{FileRecord, Store};
use crate::storage::table::{Table, TableOptions, View};

pub use layout::{Layout, LayoutChange, LayoutProgress, LayoutReport};

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

impl EngineOptions {
    /// The layout to open with.
    pub fn layout(&self) -> Layout {
        Layout {
            zone: self.zone,
            specs: self.specs.clone(),
        }
    }
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
    /// The time zone its rollups and the table's time columns are in.
    pub zone: Zone,
    pub catalog: Vec<CatalogEntry>,
    /// Per rollup of the catalog, its rows (with the last additions laid over them until
    /// they are merged).
    pub rollups: Vec<Layered>,
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

    fn new(generation: u64, layout: &Layout, rollups: Vec<Layered>, view: Arc<View>) -> Snapshot {
        let catalog = layout
            .specs
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
            zone: layout.zone,
            catalog,
            rollups,
            view: Some(view),
        }
    }
}

/// The manifest on disk and the rollups its partitions hold.
type Written = (Manifest, Vec<Arc<RollupRows>>);

/// What a batch makes of one committed rollup.
enum Next {
    /// Rows merged anew, with the keys whose minimum or maximum a removal may have taken.
    Merged(Box<RollupRows>, Vec<Key>),
    /// The batch's additions laid over the rollup's shared rows.
    Layered(Layered),
}

/// The rollups of the store's last committed generation.
#[derive(Debug, Clone, Default)]
struct Committed {
    generation: u64,
    rollups: Vec<Layered>,
    /// Per rollup, the keys (sorted) whose minimum or maximum a removal may have taken and
    /// that have not had them back from the remaining rows yet (`Engine::restore_pending`).
    /// Their extremes are unknown meanwhile: the snapshot says so (queries needing them go
    /// to DuckDB), and the partitions are not written.
    pending: Vec<Vec<Key>>,
}

impl Committed {
    fn new(generation: u64, rollups: Vec<Layered>) -> Committed {
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
            pending.retain(|k| rows.contains(k));
        }
    }

    /// Whether a batch without removals can merge into the rollups in place: no snapshot
    /// shares them (within a multi-batch update) and no layer lies over them.
    fn takes_in_place(&mut self, rollups: usize, removed: &[u32]) -> bool {
        removed.is_empty()
            && self.rollups.len() == rollups
            && self.rollups.iter_mut().all(|r| r.get_mut().is_some())
    }

    /// Gives back the room that merging in place grew the rollups by (those no snapshot
    /// shares).
    fn shrink_to_fit(&mut self) {
        for rows in self.rollups.iter_mut().filter_map(Layered::get_mut) {
            rows.shrink_to_fit();
        }
    }

    /// Whether additions may be laid over the rollups: no key waits for its extremes.
    fn takes_layers(&self) -> bool {
        self.pending.iter().all(Vec::is_empty)
    }

    /// Merges each rollup's added partials into it in place (see `takes_in_place`).
    fn merge_in_place(&mut self, added: &[Vec<RollupRows>]) {
        self.rollups
            .par_iter_mut()
            .zip(added)
            .for_each(|(rows, parts)| {
                let parts: Vec<&RollupRows> = parts.iter().collect();
                rows.get_mut()
                    .expect("unshared")
                    .merge_many_in_place(&parts);
            });
    }

    /// Takes a batch merged in place out again (its store commit did not land): counts
    /// and sums exactly; the keys whose minimum or maximum it may have held wait for them
    /// (`pending`), as after a removal.
    fn take_out(&mut self, added: Vec<Vec<RollupRows>>) {
        let (rows, affected): (Vec<_>, Vec<_>) = self
            .rollups
            .par_iter()
            .zip(added)
            .map(|(rows, parts)| {
                let sub = RollupRows::merge_tree(parts);
                let (rows, affected) = rows.merged().combine(&RollupRows::default(), &sub);
                (Layered::from(rows), affected)
            })
            .unzip();
        self.rollups = rows;
        self.pend(affected);
    }

    /// Moves to a committed generation: the rollups made anew (`combined`), or as they
    /// are (merged in place).
    fn advance(&mut self, generation: u64, combined: Option<Vec<Next>>) {
        if let Some(combined) = combined {
            let (rows, affected): (Vec<_>, Vec<_>) = combined
                .into_iter()
                .map(|next| match next {
                    Next::Merged(rows, affected) => (Layered::from(*rows), affected),
                    Next::Layered(rows) => (rows, Vec::new()),
                })
                .unzip();
            self.rollups = rows;
            self.pend(affected);
        }
        self.generation = generation;
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

    /// Counts a chunk of `bytes` parsed.
    fn chunk_folded(&self, bytes: usize) {
        self.chunks_folded.fetch_add(1, Ordering::Relaxed);
        self.largest_chunk
            .fetch_max(bytes as u64, Ordering::Relaxed);
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
    /// The layout of the committed rollups (`EngineOptions::layout` until a change).
    layout: RwLock<Arc<Layout>>,
    /// The running layout change, if any.
    layout_progress: Mutex<Option<LayoutProgress>>,
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
            layout: RwLock::new(Arc::new(opts.layout())),
            layout_progress: Mutex::new(None),
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
        let (query, plan, _) = plan_in(query, &snap.catalog, snap.zone);
        let (rollup, source) = match &plan.route {
            Route::Rollup(i) => (
                Some((&snap.rollups[*i], self.store.countries())),
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
