//! The DuckDB `events` table: raw rows of every folded file, appended and deleted per
//! file, queried for what no rollup covers.
//!
//! DuckDB's connection and appender are not `Send`-friendly, so the database lives on a
//! thread of its own; `Table` is a cheap-to-clone handle that sends it jobs. Queries and
//! views use the `duckdb` crate's connections; file changes run on a connection of their
//! own (`duck::Writer`) that appends table batches as DuckDB vectors.
//!
//! Failure semantics: each file change runs in one DuckDB transaction (delete the file's
//! old rows, append the new ones, record the file), so after an error or a crash the
//! table holds either the old or the new rows of a file, never a mix.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Int32Array, StringArray};
use arrow::datatypes::{DataType, Decimal128Type, Field, Int32Type, Schema};
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{bounded, unbounded, Sender};
use duckdb::types::{ToSqlOutput, Value as DValue};
use duckdb::{params, Connection};

use crate::daemon::limits::QueryBudget;
use crate::engine::failpoint::Failpoints;
use crate::error::{Error, Result};
use crate::model::schema::{enum_sql, is_two_letter_code, Column, Kind, TableCol, TimeCol, Zone};
use crate::query::output::{concat, empty, from_arrow, OutType, Rows};
use crate::query::plan::Param;
use crate::rollup::partial::Positions;
use crate::rollup::{Countries, Extremes, Key, RollupSpec, NULL_TIME};
use crate::storage::duck::{self, Database, Writer};

/// Work for the DuckDB thread, given its connection and its connection for writes.
type Job = Box<dyn FnOnce(&mut Connection, &Writer) + Send>;

/// How the bundled DuckDB was compiled: `release`, or `debug` when a profile with debug
/// info made libduckdb-sys turn on DuckDB's asserts and verification passes (see
/// `build.rs`); aggregates then run 5–100× slower.
pub const DUCKDB_BUILD: &str = env!("ROLLUPD_DUCKDB_BUILD");

/// The bundled DuckDB's version, e.g. `v1.2.0`.
pub fn duckdb_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(duckdb::ffi::duckdb_library_version()) };
    version.to_string_lossy().into_owned()
}

/// The result of a job queued on the DuckDB thread.
pub struct Pending<R>(crossbeam_channel::Receiver<Result<R>>);

impl<R> Pending<R> {
    /// Waits for the job to finish.
    pub fn wait(self) -> Result<R> {
        self.0
            .recv()
            .map_err(|_| Error::Internal("duckdb thread died".into()))?
    }
}

/// A file as the table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    pub id: i32,
    pub path: String,
    /// Bytes of the file folded into the table.
    pub size: u64,
    /// Parts appended (the initial fold and each appended tail); rows carry their part.
    pub parts: i32,
    pub rows: u64,
}

/// One file's change to the table, applied in one transaction.
#[derive(Debug)]
pub enum TableChange {
    /// New rows for a file (a new file, or a rewrite replacing file `old`).
    Put {
        old: Option<i32>,
        batch: RecordBatch,
        file: TableFile,
    },
    /// An appended tail: rows of the next part.
    Append { batch: RecordBatch, file: TableFile },
    /// More rows of a file being folded a chunk at a time (its record comes with the
    /// last chunk).
    Rows { batch: RecordBatch },
    /// The last chunk of a file folded a chunk at a time (a new file, or a rewrite
    /// replacing file `old`): its rows, then the old file's rows go, then its record.
    Finish {
        old: Option<i32>,
        batch: RecordBatch,
        file: TableFile,
    },
    /// A file gone: its rows and record.
    Remove { id: i32 },
    /// Only the file's record changes (renamed, touched).
    Record { file: TableFile },
    /// Drops the file's parts from `file.parts` on (undoing an uncommitted append).
    Truncate { file: TableFile },
}

impl TableChange {
    /// What the change does in its transaction: the rows it deletes (a file's parts from
    /// a number on; a file that loses every part, and whose record is not written again,
    /// loses its record too), the rows it appends, and the file record it writes.
    fn parts(self) -> (Vec<(i32, i32)>, Option<RecordBatch>, Option<TableFile>) {
        let whole = |old: Option<i32>| old.into_iter().map(|id| (id, 0));
        match self {
            TableChange::Put { old, batch, file } => (
                whole(old).chain([(file.id, 0)]).collect(),
                Some(batch),
                Some(file),
            ),
            TableChange::Append { batch, file } => (Vec::new(), Some(batch), Some(file)),
            TableChange::Rows { batch } => (Vec::new(), Some(batch), None),
            TableChange::Finish { old, batch, file } => {
                (whole(old).collect(), Some(batch), Some(file))
            }
            TableChange::Remove { id } => (vec![(id, 0)], None, None),
            TableChange::Record { file } => (Vec::new(), None, Some(file)),
            TableChange::Truncate { file } => (vec![(file.id, file.parts)], None, Some(file)),
        }
    }

    /// The memory its rows hold.
    pub fn row_bytes(&self) -> usize {
        match self {
            TableChange::Put { batch, .. }
            | TableChange::Append { batch, .. }
            | TableChange::Rows { batch }
            | TableChange::Finish { batch, .. } => batch.get_array_memory_size(),
            TableChange::Remove { .. }
            | TableChange::Record { .. }
            | TableChange::Truncate { .. } => 0,
        }
    }
}

/// DuckDB settings.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Worker threads DuckDB may use (0 = DuckDB's default: one per core).
    pub threads: usize,
    /// DuckDB's memory limit, e.g. "1GB" (empty = DuckDB's default, 80% of RAM).
    pub memory_limit: String,
    /// DuckDB's memory limit while an update loads rows (empty: `memory_limit`). DuckDB
    /// keeps the blocks it writes cached up to its limit, so a large load would otherwise
    /// hold that much more memory, and keep holding it once idle. A load also runs DuckDB
    /// on one thread (see `Table::loading`).
    pub ingest_memory_limit: String,
    /// WAL bytes past which a quiet publish checkpoints (a checkpoint costs a few hundred
    /// milliseconds at bench scale however little it writes, so small changes share one).
    pub checkpoint_wal_bytes: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            threads: 0,
            memory_limit: "1GB".into(),
            ingest_memory_limit: "128MB".into(),
            checkpoint_wal_bytes: 16 << 20,
        }
    }
}

/// A handle to the DuckDB thread.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Mutex<Option<Sender<Job>>>,
    /// Views not yet dropped (each holds open read transactions).
    views: Arc<AtomicUsize>,
    /// Counts the write transactions begun: a view's connection can be replaced by one
    /// pinned later only while this has not moved.
    writes: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    /// DuckDB's settings for queries.
    queries: Settings,
    /// DuckDB's settings while an update loads rows (see `TableOptions`).
    loading: Settings,
    checkpoint_wal_bytes: u64,
    failpoints: Failpoints,
    /// Why the tables were dropped and created again on open, if they were.
    rebuilt: Option<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.lock().expect("table lock").take();
        if let Some(t) = self.thread.lock().expect("table lock").take() {
            let _ = t.join();
        }
    }
}

/// The tables besides `events` (whose DDL comes from `TableCol`, `events_ddl`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY,
    path VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    parts INTEGER NOT NULL,
    rows BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);";

/// The DDL of the `events` table, from its columns; its `country` of the `ENUM` type
/// `country` (the type a new table starts with: `Kind::Country.sql()`).
fn events_ddl(country: &str) -> String {
    let columns: Vec<String> = TableCol::ALL
        .iter()
        .map(|c| {
            let ty = match c {
                TableCol::Country => country.to_string(),
                c => c.kind().sql(),
            };
            let null = if c.nullable() { "" } else { " NOT NULL" };
            let compression = (c.kind().compression())
                .map(|m| format!(" USING COMPRESSION {m}"))
                .unwrap_or_default();
            format!("{} {ty}{null}{compression}", c.sql_name())
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS events ({});",
        columns.join(", ")
    )
}

/// The table of the schema version (and other numbers).
const META: &str =
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL)";

/// The version of the tables' layout (`SCHEMA`, `TableCol`), kept in `meta`; bump it when
/// they change (a table added with `IF NOT EXISTS`, like `settings`, needs no bump).
/// Version 2: `type` and `country` are `ENUM`s. Version 3: prices bit-packed, row groups
/// of `duck::ROW_GROUP_ROWS` rows.
const SCHEMA_VERSION: i64 = 3;

/// The schema version whose tables are copied into the current layout on open
/// (`open_current`); other older ones are dropped and every file is folded again.
const REWRITTEN_FROM: i64 = 2;

/// The schema version `meta` records, if any.
fn schema_version(conn: &Connection) -> Result<Option<i64>> {
    conn.execute_batch(META)?;
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    )
    .map(Some)
    .or_else(|e| match e {
        duckdb::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e.into()),
    })
}

/// Creates the tables that are missing, `events`' `country` of type `country`.
fn create_tables(conn: &Connection, country: &str) -> Result<()> {
    conn.execute_batch(META)?;
    conn.execute_batch(&events_ddl(country))?;
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Creates the tables if needed. A database of another schema version (but
/// `REWRITTEN_FROM`, which answers the same until `open_current` manages to copy it) has
/// its tables dropped and created again (the rows are folded again from the CSV files),
/// and the reason is returned. A database from before versions were kept has this layout.
fn ensure_schema(conn: &Connection) -> Result<Option<String>> {
    let found = schema_version(conn)?;
    let rebuilt = match found {
        None | Some(SCHEMA_VERSION) | Some(REWRITTEN_FROM) => None,
        Some(v) => {
            conn.execute_batch(
                "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS files; \
                 DROP TABLE IF EXISTS settings;",
            )?;
            let why = format!(
                "DuckDB table schema version {v} → {SCHEMA_VERSION}; every file is folded again"
            );
            tracing::warn!("{why}");
            Some(why)
        }
    };
    create_tables(conn, &Kind::Country.sql())?;
    if found != Some(REWRITTEN_FROM) {
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
            params![SCHEMA_VERSION],
        )?;
    }
    Ok(rebuilt)
}

/// Opens the database file at `path`. One of schema version `REWRITTEN_FROM` is first
/// copied into a new file in the current layout (`rewrite_file`: no CSV is read, ~0.2 s
/// per million rows, room for a second copy of the table), which then replaces it. If
/// the copy fails, the old file stays as it was (its answers are the same, only slower)
/// and the next open tries again.
fn open_current(
    path: &Path,
    settings: &[(&str, String)],
    failpoints: &Failpoints,
) -> Result<(Database, Connection)> {
    let db = Database::open(path, settings)?;
    let conn = db.connection()?;
    if schema_version(&conn)? != Some(REWRITTEN_FROM) {
        return Ok((db, conn));
    }
    let started = std::time::Instant::now();
    let copy = path.with_extension("duckdb.rewrite");
    tracing::warn!(
        "the DuckDB table is copied into schema version {SCHEMA_VERSION} ({})",
        copy.display()
    );
    let copied = rewrite_file(&conn, &copy).and_then(|()| failpoints.hit("table.rewrite"));
    drop((conn, db));
    let wal = path.with_extension("duckdb.wal");
    let replaced = copied.and_then(|()| match wal.exists() {
        // Closed after a checkpoint, the database leaves no log; one that is left would
        // be replayed into the copy.
        true => Err(Error::Internal(format!("{} is left", wal.display()))),
        false => std::fs::rename(&copy, path).map_err(|e| Error::io(path, e)),
    });
    match replaced {
        Ok(()) => {
            // The copy is in place either way; only a crash could yet bring the old back.
            if let Some(Err(e)) = path.parent().map(crate::storage::manifest::sync_dir) {
                tracing::warn!("syncing the folder of {}: {e}", path.display());
            }
            tracing::warn!(
                ms = started.elapsed().as_millis() as u64,
                "the DuckDB table was copied into schema version {SCHEMA_VERSION}"
            );
        }
        Err(e) => {
            tracing::error!(
                "the DuckDB table stays in schema version {REWRITTEN_FROM} (the same \
                 answers, slower) until the next start: copying it failed: {e}"
            );
            remove_copy(&copy);
        }
    }
    let db = Database::open(path, settings)?;
    let conn = db.connection()?;
    Ok((db, conn))
}

/// Copies every table of `conn`'s database into a new database file at `to`, created in
/// the current schema (`events`' rows in their order, its `country` of the type it has
/// now), and checkpoints both databases, so that neither leaves a log.
fn rewrite_file(conn: &Connection, to: &Path) -> Result<()> {
    remove_copy(to);
    let country = column_type(conn, TableCol::Country)?;
    conn.execute_batch(&duck::attach_sql(to, "rewritten"))?;
    let from = duck::ATTACHED;
    let copied = conn
        .execute_batch("USE rewritten")
        .map_err(Error::from)
        .and_then(|()| create_tables(conn, &country))
        .and_then(|()| {
            Ok(conn.execute_batch(&format!(
                "INSERT INTO events SELECT * FROM {from}.events; \
                 INSERT INTO files SELECT * FROM {from}.files; \
                 INSERT INTO settings SELECT * FROM {from}.settings; \
                 INSERT INTO meta SELECT * FROM {from}.meta; \
                 INSERT OR REPLACE INTO meta VALUES ('schema_version', {SCHEMA_VERSION}); \
                 CHECKPOINT rewritten"
            ))?)
        });
    let detached = conn.execute_batch(&format!("USE {from}; DETACH rewritten; CHECKPOINT"));
    copied?;
    Ok(detached?)
}

/// Removes a copy `rewrite_file` made (and its log), if there is one.
fn remove_copy(copy: &Path) {
    for f in [copy.to_path_buf(), copy.with_extension("rewrite.wal")] {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("removing {}: {e}", f.display());
            }
            _ => {}
        }
    }
}

impl Table {
    /// Opens (creating if needed) the database file at `path` on a new thread.
    /// `failpoints` may fail a file's transaction just before it commits (`table.commit`).
    pub fn open(path: &Path, opts: &TableOptions, failpoints: Failpoints) -> Result<Table> {
        if DUCKDB_BUILD == "debug" {
            tracing::warn!(
                "this binary embeds a debug build of DuckDB (a profile with debug info); \
                 DuckDB-answered queries and loads run many times slower"
            );
        }
        let mut settings = Vec::new();
        if opts.threads > 0 {
            settings.push(("threads", opts.threads.to_string()));
        }
        if !opts.memory_limit.is_empty() {
            settings.push(("max_memory", opts.memory_limit.clone()));
        }
        let (db, mut conn) = open_current(path, &settings, &failpoints)?;
        let writer = db.writer()?;
        let rebuilt = ensure_schema(&conn)?;
        // Checkpoints happen only when no view is reading (see `View::quiesce`): DuckDB
        // 2.0's checkpoints alongside open read transactions were seen to leave the table
        // answering ORDER BY … LIMIT wrongly after deletes. So none automatically.
        conn.execute_batch("SET checkpoint_threshold = '1TB'")?;
        let (tx, rx) = unbounded::<Job>();
        let thread = std::thread::Builder::new()
            .name("duckdb".into())
            .spawn(move || {
                for job in rx {
                    job(&mut conn, &writer);
                }
                // The connections go before the database handle (the order matters
                // to no one else: views keep the database open while theirs are).
                drop((writer, conn));
                drop(db);
            })
            .map_err(|e| Error::io(path, e))?;
        Ok(Table {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                views: Arc::new(AtomicUsize::new(0)),
                writes: Arc::new(AtomicU64::new(0)),
                thread: Mutex::new(Some(thread)),
                path: path.to_path_buf(),
                queries: Settings {
                    memory_limit: opts.memory_limit.clone(),
                    threads: opts.threads,
                },
                loading: Settings {
                    memory_limit: match opts.ingest_memory_limit.as_str() {
                        "" => opts.memory_limit.clone(),
                        l => l.to_string(),
                    },
                    threads: 1,
                },
                checkpoint_wal_bytes: opts.checkpoint_wal_bytes,
                failpoints,
                rebuilt,
            }),
        })
    }

    /// Opens the database like [`Table::open`]; one DuckDB cannot open (corrupt) is moved
    /// aside to `<path>.corrupt` (with its WAL) and a new one is created: the engine then
    /// folds every file again. Returns why, if it was.
    pub fn open_or_rebuild(
        path: &Path,
        opts: &TableOptions,
        failpoints: Failpoints,
    ) -> Result<(Table, Option<String>)> {
        let e = match Table::open(path, opts, failpoints.clone()) {
            Ok(table) => return Ok((table, None)),
            Err(e) => e,
        };
        let aside = path.with_extension("duckdb.corrupt");
        tracing::error!(
            "the DuckDB database cannot be opened ({e}); moving it to {}",
            aside.display()
        );
        std::fs::rename(path, &aside).map_err(|e| Error::io(path, e))?;
        let wal = path.with_extension("duckdb.wal");
        if wal.exists() {
            let wal_aside = path.with_extension("duckdb.corrupt.wal");
            std::fs::rename(&wal, &wal_aside).map_err(|e| Error::io(&wal, e))?;
        }
        let table = Table::open(path, opts, failpoints)?;
        let reason = format!(
            "the DuckDB database could not be opened ({e}); it was moved to {} and every \
             file's rows are loaded again",
            aside.display()
        );
        Ok((table, Some(reason)))
    }

    /// Why the tables were created again on open (a database of another schema version),
    /// if they were; the engine then folds every file again.
    pub fn rebuilt(&self) -> Option<&str> {
        self.inner.rebuilt.as_deref()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the DuckDB thread and waits for its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(f)?.wait()
    }

    /// Queues `f` on the DuckDB thread (jobs run in order) without waiting for it.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<Pending<R>> {
        self.queue(move |conn, _| f(conn))
    }

    /// Queues `f` on the DuckDB thread with the connection for writes too.
    fn queue<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Writer) -> Result<R> + Send + 'static,
    ) -> Result<Pending<R>> {
        let (reply_tx, reply_rx) = bounded(1);
        let job: Job = Box::new(move |conn, writer| {
            let _ = reply_tx.send(f(conn, writer));
        });
        self.inner
            .tx
            .lock()
            .expect("table lock")
            .as_ref()
            .ok_or_else(|| Error::Internal("duckdb thread stopped".into()))?
            .send(job)
            .map_err(|_| Error::Internal("duckdb thread stopped".into()))?;
        Ok(Pending(reply_rx))
    }

    /// Applies one file's change in one transaction.
    pub fn apply(&self, change: TableChange) -> Result<()> {
        self.apply_queued(change)?.wait()
    }

    /// Queues one file's change (one transaction) without waiting for it.
    pub fn apply_queued(&self, change: TableChange) -> Result<Pending<()>> {
        let failpoints = self.inner.failpoints.clone();
        let writes = self.inner.writes.clone();
        self.queue(move |conn, writer| {
            writes.fetch_add(1, Ordering::SeqCst);
            let (removed, batch, file) = change.parts();
            if let Some(batch) = &batch {
                widen_countries(conn, batch)?;
            }
            writer.transaction(|w| {
                for (id, from_part) in removed {
                    w.execute(&format!(
                        "DELETE FROM events WHERE file_id = {id} AND part >= {from_part}"
                    ))?;
                    if from_part == 0 && file.as_ref().is_none_or(|f| f.id != id) {
                        w.execute(&format!("DELETE FROM files WHERE file_id = {id}"))?;
                    }
                }
                if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
                    w.append("events", &batch)?;
                }
                if let Some(f) = file {
                    w.execute(&format!(
                        "INSERT OR REPLACE INTO files (file_id, path, size, parts, rows) \
                         VALUES ({}, '{}', {}, {}, {})",
                        f.id,
                        f.path.replace('\'', "''"),
                        f.size as i64,
                        f.parts,
                        f.rows as i64
                    ))?;
                }
                failpoints.hit("table.commit")
            })
        })
    }

    /// The files the table holds rows of, by id.
    pub fn files(&self) -> Result<HashMap<i32, TableFile>> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT file_id, path, size, parts, rows FROM files")?;
            let rows = stmt.query_map([], |r| {
                Ok(TableFile {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    parts: r.get(3)?,
                    rows: r.get::<_, i64>(4)? as u64,
                })
            })?;
            let files = rows.collect::<duckdb::Result<Vec<TableFile>>>()?;
            Ok(files.into_iter().map(|f| (f.id, f)).collect())
        })
    }

    /// Writes DuckDB's WAL into the database file.
    fn checkpoint(&self) -> Result<()> {
        self.call(|conn| Ok(conn.execute_batch("CHECKPOINT")?))
    }

    /// A view of the table as it is now, for queries that must not see later changes:
    /// `readers` connections, each inside a read-only transaction begun now. Queue it right
    /// after the changes it must include and before any it must not.
    pub fn view(&self, readers: usize) -> Result<View> {
        let views = self.inner.views.clone();
        let writes = self.inner.writes.clone();
        let table = Arc::downgrade(&self.inner);
        self.call(move |conn| {
            let conns = (0..readers.max(1))
                .map(|_| {
                    let reader = duck::another(conn)?;
                    pin(&reader)?;
                    Ok(reader)
                })
                .collect::<Result<Vec<_>>>()?;
            views.fetch_add(1, Ordering::SeqCst);
            Ok(View {
                pool: Arc::new(Pool {
                    conns: Mutex::new(Conns {
                        size: conns.len(),
                        target: conns.len(),
                        idle: conns,
                    }),
                    returned: Condvar::new(),
                }),
                views,
                table,
                pinned_at: writes.load(Ordering::SeqCst),
            })
        })
    }

    /// Writes DuckDB's WAL into the database file once it holds more than
    /// `checkpoint_wal_bytes`, if `current` is the only view alive, pausing its queries
    /// meanwhile; otherwise leaves it for a later call. Returns whether it checkpointed.
    pub fn checkpoint_quiet(&self, current: &View) -> Result<bool> {
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push(".wal");
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if wal_bytes <= self.inner.checkpoint_wal_bytes
            || self.inner.views.load(Ordering::SeqCst) != 1
        {
            return Ok(false);
        }
        current.quiesce(|| self.checkpoint())?;
        Ok(true)
    }

    /// Puts DuckDB in its settings for loading until the guard is dropped: the memory
    /// limit for loading (DuckDB evicts cached blocks to fit) and one thread. Rows come
    /// in through an appender on DuckDB's own thread, and every core is folding; DuckDB's
    /// other workers only took turns at its task queue (a cold build at bench scale took
    /// ~20% less time without them). `None` when DuckDB refused (the load then runs
    /// under the query settings, with a warning).
    pub fn loading(&self) -> Option<Loading<'_>> {
        let loading = &self.inner.loading;
        match self.apply_settings(loading) {
            Ok(()) => Some(Loading { table: self }),
            Err(e) => {
                tracing::warn!("setting DuckDB up for loading ({loading:?}): {e}");
                None
            }
        }
    }

    /// Sets DuckDB's memory limit and threads.
    fn apply_settings(&self, settings: &Settings) -> Result<()> {
        let sql = settings.sql();
        self.call(move |conn| Ok(conn.execute_batch(&sql)?))
    }

    /// The number of rows in `events`.
    pub fn row_count(&self) -> Result<u64> {
        self.call(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
            Ok(n as u64)
        })
    }
}

/// DuckDB's settings for loading, in force while this lives (see `Table::loading`).
pub struct Loading<'a> {
    table: &'a Table,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        let queries = &self.table.inner.queries;
        if let Err(e) = self.table.apply_settings(queries) {
            tracing::warn!("setting DuckDB back to its query settings ({queries:?}): {e}");
        }
    }
}

/// DuckDB settings that change between queries and loads.
#[derive(Debug, Clone)]
struct Settings {
    /// Empty: DuckDB's default.
    memory_limit: String,
    /// 0: DuckDB's default (one per core).
    threads: usize,
}

impl Settings {
    /// The statements that put DuckDB in these settings.
    fn sql(&self) -> String {
        let memory = match self.memory_limit.as_str() {
            "" => "RESET memory_limit".to_string(),
            l => format!("SET memory_limit = '{}'", l.replace('\'', "''")),
        };
        let threads = match self.threads {
            0 => "RESET threads".to_string(),
            n => format!("SET threads = {n}"),
        };
        format!("{memory}; {threads}")
    }
}

/// A consistent, read-only view of the table as of one moment: a small pool of DuckDB
/// connections pinned to the same snapshot. Queries on it never wait for ingest (only
/// for a free connection of the pool); dropping the view ends its transactions.
///
/// A statement that fails or is interrupted aborts its connection's transaction, so that
/// connection is dropped; the next query that finds no idle connection opens a new one if
/// the table has not been written since the view was pinned (it then sees the same rows),
/// else the pool stays smaller until the next generation's view replaces this one.
pub struct View {
    pool: Arc<Pool>,
    views: Arc<AtomicUsize>,
    table: Weak<Inner>,
    /// `Inner::writes` when the view was pinned.
    pinned_at: u64,
}

struct Pool {
    conns: Mutex<Conns>,
    returned: Condvar,
}

struct Conns {
    idle: Vec<Connection>,
    /// Connections of the pool: idle, running a query, or being opened.
    size: usize,
    /// Connections the pool should have.
    target: usize,
}

impl Drop for View {
    fn drop(&mut self) {
        self.views.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Begins a read-only transaction and fixes its snapshot of the database (the first read
/// does).
fn pin(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")?;
    conn.query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("View")
    }
}

impl View {
    /// Runs a query with bound parameters on the calling thread; its columns come back
    /// typed as `types` say (`times`: the columns that are local minutes of a time
    /// column). Waits while every connection of the view is busy (until the budget's
    /// cancel). Fails with `too_large` past the budget's row cap, and with the cancel's
    /// error once cancelled (the statement is interrupted).
    pub fn query(
        &self,
        sql: &str,
        params: &[Param],
        types: &[OutType],
        times: &[Option<TimeCol>],
        budget: &QueryBudget,
    ) -> Result<Rows> {
        let conn = self.take(budget)?;
        let result = budget.cancel.interruptible(conn.interrupt_handle(), || {
            run_query(&conn, sql, params, types, times, budget)
        });
        // An interrupt may have landed after the statement ended and would hit the next.
        let spoiled = budget.cancel.stopped().is_some() || matches!(result, Err(Error::DuckDb(_)));
        let mut conns = self.pool.conns.lock().expect("view lock");
        if spoiled {
            drop(conn);
            conns.size -= 1;
        } else {
            conns.idle.push(conn);
        }
        self.pool.returned.notify_all();
        result
    }

    /// An idle connection, or a new one in place of one dropped; waits while all are busy
    /// (until the budget's cancel).
    fn take(&self, budget: &QueryBudget) -> Result<Connection> {
        let mut conns = self.pool.conns.lock().expect("view lock");
        loop {
            if let Some(c) = conns.idle.pop() {
                return Ok(c);
            }
            if conns.size < conns.target {
                conns.size += 1;
                drop(conns);
                let reopened = self.reopen();
                conns = self.pool.conns.lock().expect("view lock");
                match reopened {
                    Ok(Some(c)) => return Ok(c),
                    Ok(None) => conns.target -= 1,
                    Err(e) => {
                        conns.size -= 1;
                        return Err(e);
                    }
                }
                conns.size -= 1;
                continue;
            }
            if conns.target == 0 {
                return Err(Error::Internal(
                    "this generation's DuckDB connections were lost to failed queries; \
                     the next generation brings new ones"
                        .into(),
                ));
            }
            budget.cancel.check()?;
            conns = self
                .pool
                .returned
                .wait_timeout(conns, Duration::from_millis(50))
                .expect("view lock")
                .0;
        }
    }

    /// A new connection pinned to this view's rows, made on the DuckDB thread; `None` if
    /// the table has been written since the view was pinned (or is gone).
    fn reopen(&self) -> Result<Option<Connection>> {
        let Some(inner) = self.table.upgrade() else {
            return Ok(None);
        };
        let (pinned_at, writes) = (self.pinned_at, inner.writes.clone());
        Table { inner }.call(move |conn| {
            if writes.load(Ordering::SeqCst) != pinned_at {
                return Ok(None);
            }
            let reader = duck::another(conn)?;
            pin(&reader)?;
            Ok(Some(reader))
        })
    }

    /// Runs `f` with no transaction of this view open: waits for running queries, ends the
    /// transactions, runs `f`, and pins them again; queries wait meanwhile. Only for `f`
    /// that change nothing a query can see (a checkpoint).
    fn quiesce<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let mut conns = self.pool.conns.lock().expect("view lock");
        while conns.idle.len() < conns.size {
            conns = self.pool.returned.wait(conns).expect("view lock");
        }
        for conn in conns.idle.iter() {
            conn.execute_batch("COMMIT")?;
        }
        let result = f();
        for conn in conns.idle.iter() {
            pin(conn)?;
        }
        result
    }
}

/// Query parameters as DuckDB values.
pub fn bind(params: &[Param]) -> Vec<DValue> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(i) => DValue::BigInt(*i),
            Param::Float(f) => DValue::Double(*f),
            Param::Text(s) => DValue::Text(s.clone()),
        })
        .collect()
}

/// Runs `sql` and reads its answer as Arrow batches, typed per column; the row cap and
/// the cancel are checked between batches.
fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Param],
    types: &[OutType],
    times: &[Option<TimeCol>],
    budget: &QueryBudget,
) -> Result<Rows> {
    // Kept prepared on the connection: a query shape asked again (its values are bound
    // parameters) skips DuckDB's parse, bind and plan. A statement whose answer was not
    // read to its end (an error, the row cap) is not kept.
    let mut stmt = conn.prepare_cached(sql)?;
    let read = read_answer(&mut stmt, params, types, times, budget);
    if read.is_err() {
        stmt.discard();
    }
    read
}

/// Runs the prepared `stmt` and reads its whole answer (see `run_query`).
fn read_answer(
    stmt: &mut duckdb::Statement<'_>,
    params: &[Param],
    types: &[OutType],
    times: &[Option<TimeCol>],
    budget: &QueryBudget,
) -> Result<Rows> {
    let bound = bind(params);
    let batches = stmt.stream_arrow(duckdb::params_from_iter(
        bound.iter().map(ToSqlOutput::from),
    ))?;
    let mut parts = Vec::new();
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        budget.cancel.check()?;
        rows += batch.num_rows() as u64;
        if rows > budget.limits.max_answer_rows {
            return Err(budget.limits.too_many_rows());
        }
        let columns = batch
            .columns()
            .iter()
            .zip(types.iter().zip(times))
            .map(|(a, (ty, time))| from_arrow(a, *ty, *time))
            .collect::<Result<Vec<_>>>()?;
        parts.push(columns);
    }
    if parts.is_empty() {
        parts.push(
            types
                .iter()
                .zip(times)
                .map(|(t, time)| empty(*t, *time))
                .collect(),
        );
    }
    Ok(Rows::new(concat(parts)))
}

/// The DuckDB type `events`' column `col` has now.
fn column_type(conn: &Connection, col: TableCol) -> Result<String> {
    Ok(conn.query_row(
        "SELECT data_type FROM duckdb_columns() \
         WHERE database_name = current_database() AND schema_name = 'main' \
         AND table_name = 'events' AND column_name = ?",
        params![col.name()],
        |r| r.get(0),
    )?)
}

/// Widens the `country` `ENUM` so that it holds every country text of `batch` (the
/// writer appends their codes). The type starts with every code of two capital letters;
/// any other text (`"usa"`, `"jp"`) is added in order, which rewrites the column once, in
/// a transaction of its own before the change's (a wider type is harmless if the change
/// then fails).
fn widen_countries(conn: &Connection, batch: &RecordBatch) -> Result<()> {
    let texts = batch.column(TableCol::Country.at()).as_string::<i32>();
    let others: BTreeSet<&str> = (texts.iter().flatten())
        .filter(|t| !is_two_letter_code(t))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let ty = column_type(conn, TableCol::Country)?;
    let mut stmt = conn.prepare(&format!("SELECT unnest(enum_range(NULL::{ty}))"))?;
    let held = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<duckdb::Result<BTreeSet<String>>>()?;
    if others.iter().all(|t| held.contains(*t)) {
        return Ok(());
    }
    let wider: BTreeSet<&str> = held.iter().map(String::as_str).chain(others).collect();
    tracing::info!(
        countries = wider.len(),
        "the table's country type is widened"
    );
    conn.execute_batch(&format!(
        "ALTER TABLE events ALTER country SET DATA TYPE {}",
        enum_sql(wider)
    ))?;
    Ok(())
}

/// Creates the scratch table `Table::extremes` joins with (its text columns of the types
/// `events` has); it lives in one transaction only.
fn create_affected(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE affected_keys (spec INTEGER NOT NULL, idx INTEGER NOT NULL, \
         t INTEGER, \"type\" {}, country {}, advertiser_id INTEGER, publisher_id INTEGER)",
        column_type(conn, TableCol::Type)?,
        column_type(conn, TableCol::Country)?,
    ))?;
    Ok(())
}

impl Table {
    /// The extremes of the price columns over the table's rows of some keys of some
    /// rollups, as the table is now: for each `(spec, keys)`, one `Extremes` per key in
    /// `keys` order. One statement: the rows that hold a price are read once (a
    /// materialized CTE) and joined with each rollup's keys, which are appended to a
    /// temporary table inside a transaction that is rolled back, so nothing is written.
    /// This is how a removed file's minima and maxima are taken out of the rollups
    /// without reading any other file's partial.
    pub fn extremes(
        &self,
        wanted: &[(&RollupSpec, &[Key])],
        countries: &Countries,
    ) -> Result<Vec<Vec<Extremes>>> {
        let mut out: Vec<Vec<Extremes>> = wanted
            .iter()
            .map(|(_, keys)| vec![Extremes::default(); keys.len()])
            .collect();
        let branches: Vec<String> = wanted
            .iter()
            .enumerate()
            .filter(|(_, (_, keys))| !keys.is_empty())
            .map(|(i, (spec, _))| extremes_branch(i, spec))
            .collect();
        if branches.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "WITH priced AS MATERIALIZED (SELECT local_minute, \"type\", country, \
             advertiser_id, publisher_id, bid_price, total_price FROM events \
             WHERE bid_price IS NOT NULL OR total_price IS NOT NULL) {}",
            branches.join(" UNION ALL ")
        );
        let batch = key_batch(wanted, countries)?;
        self.call(move |conn| {
            let tx = conn.transaction()?;
            create_affected(&tx)?;
            {
                let mut app = tx.appender_to_catalog_and_db("affected_keys", "temp", "main")?;
                app.append_record_batch(batch)?;
                app.flush()?;
            }
            let mut stmt = tx.prepare(&sql)?;
            for b in stmt.query_arrow([])? {
                let spec = b.column(0).as_primitive::<Int32Type>();
                let idx = b.column(1).as_primitive::<Int32Type>();
                let col = |i: usize| b.column(i).as_primitive::<Decimal128Type>();
                let pair = |lo: &Decimal128Array, hi: &Decimal128Array, r: usize| {
                    lo.is_valid(r)
                        .then(|| (lo.value(r) as i64, hi.value(r) as i64))
                };
                for r in 0..b.num_rows() {
                    out[spec.value(r) as usize][idx.value(r) as usize] = Extremes {
                        bid: pair(col(2), col(3), r),
                        total: pair(col(4), col(5), r),
                    };
                }
            }
            drop(stmt);
            tx.rollback()?;
            Ok(out)
        })
    }
}

impl Table {
    /// The rows of file `id` a partial is built from (`Positions::select`), sorted by
    /// day (NULL last) as `partial::build_at` wants them, queued on the DuckDB thread;
    /// `None` for a file without rows. A file's rows are stored together, so DuckDB
    /// reads only theirs.
    pub fn file_rows(&self, id: u32) -> Result<Pending<Option<RecordBatch>>> {
        let sql = format!(
            "SELECT {} FROM events WHERE file_id = ? ORDER BY day NULLS LAST",
            Positions::select()
        );
        self.submit(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let batches: Vec<RecordBatch> = stmt.query_arrow(params![id as i32])?.collect();
            let Some(first) = batches.first() else {
                return Ok(None);
            };
            Ok(Some(arrow::compute::concat_batches(
                &first.schema(),
                &batches,
            )?))
        })
    }

    /// The time zone the rows' derived time columns (`day`, `local_minute`) are in, as
    /// `set_zone` recorded it (`None`: never recorded).
    pub fn zone(&self) -> Result<Option<String>> {
        self.call(|conn| {
            let zone = conn
                .query_row("SELECT value FROM settings WHERE key = 'zone'", [], |r| {
                    r.get(0)
                })
                .map(Some)
                .or_else(|e| match e {
                    duckdb::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            Ok(zone)
        })
    }

    /// Computes every row's derived time columns again in `zone` and records it, in one
    /// transaction: views pinned before it keep seeing the old values, and a crash leaves
    /// the old ones. The zone's UTC offset is looked up here for each 15-minute slot the
    /// rows' instants fall in (DuckDB needs no time zone database) and applied as one
    /// expression over the offsets' runs.
    pub fn set_zone(&self, zone: Zone) -> Result<()> {
        let writes = self.inner.writes.clone();
        self.call(move |conn| {
            writes.fetch_add(1, Ordering::SeqCst);
            let tx = conn.transaction()?;
            let slots: Vec<i64> = {
                let mut stmt = tx.prepare(
                    "SELECT DISTINCT CAST(floor(ts / 900000) AS BIGINT) AS s FROM events \
                     WHERE ts IS NOT NULL ORDER BY s",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<duckdb::Result<_>>()?
            };
            let offset = offset_sql(zone, &slots)?;
            let minute = format!("(CAST(floor(ts / 60000) AS BIGINT) + {offset})");
            tx.execute_batch(&format!(
                "UPDATE events SET local_minute = CAST({minute} AS INTEGER), \
                 day = DATE '1970-01-01' + CAST(floor({minute} / 1440) AS INTEGER) \
                 WHERE ts IS NOT NULL"
            ))?;
            tx.execute(RECORD_ZONE, params![zone.name()])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Records `zone` as the time columns' zone without computing them again: for a
    /// table whose rows all go before any is read (the store forgot their files).
    pub fn record_zone(&self, zone: Zone) -> Result<()> {
        self.call(move |conn| {
            conn.execute(RECORD_ZONE, params![zone.name()])?;
            Ok(())
        })
    }
}

/// Records the zone of the time columns (`settings`).
const RECORD_ZONE: &str = "INSERT OR REPLACE INTO settings VALUES ('zone', ?)";

/// The UTC offset in minutes of `zone` at each of `slots` (sorted 15-minute slots of UTC
/// time, as `ts // 900000`), as a SQL expression of `ts`: a `CASE` over the runs of
/// slots sharing an offset (a few per year of data).
fn offset_sql(zone: Zone, slots: &[i64]) -> Result<String> {
    let mut clock = zone.clock();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &slot in slots {
        let local = clock
            .local_minute(slot * 900_000)
            .ok_or_else(|| Error::Internal(format!("ts slot {slot} out of range")))?;
        let offset = i64::from(local) - slot * 15;
        if runs.last().is_none_or(|r| r.1 != offset) {
            runs.push((slot, offset));
        }
    }
    let Some((&(_, first), rest)) = runs.split_first() else {
        return Ok("0".into());
    };
    if rest.is_empty() {
        return Ok(first.to_string());
    }
    let mut sql = format!("CASE WHEN ts < {} THEN {first}", rest[0].0 * 900_000);
    for (i, (_, offset)) in rest.iter().enumerate() {
        match rest.get(i + 1) {
            Some((next, _)) => sql += &format!(" WHEN ts < {} THEN {offset}", next * 900_000),
            None => sql += &format!(" ELSE {offset} END"),
        }
    }
    Ok(sql)
}

/// The part of the extremes statement for rollup number `i`: its keys joined with the
/// priced rows on the columns it keeps.
fn extremes_branch(i: usize, spec: &RollupSpec) -> String {
    let time = spec.grain.map(|g| {
        format!(
            "{} IS NOT DISTINCT FROM a.t",
            crate::query::plan::column_sql(Column::Time(g))
        )
    });
    let dims = spec.dims.iter().map(|d| {
        let c = d.column().name();
        format!("e.\"{c}\" IS NOT DISTINCT FROM a.\"{c}\"")
    });
    let on: Vec<String> = std::iter::once(format!("a.spec = {i}"))
        .chain(time)
        .chain(dims)
        .collect();
    format!(
        "SELECT a.spec, a.idx, min(e.bid_price), max(e.bid_price), min(e.total_price), \
         max(e.total_price) FROM priced e JOIN affected_keys a ON {} GROUP BY a.spec, a.idx",
        on.join(" AND ")
    )
}

/// Rollup keys as rows of `affected_keys`, tagged with their rollup's number and their
/// position; dimensions a key does not keep are NULL there and not joined on.
fn key_batch(wanted: &[(&RollupSpec, &[Key])], countries: &Countries) -> Result<RecordBatch> {
    let time = |k: &Key| (k.time != NULL_TIME).then_some(k.time);
    let countries = countries.names();
    let keys = || wanted.iter().flat_map(|(_, keys)| keys.iter());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            wanted
                .iter()
                .enumerate()
                .flat_map(|(s, (_, keys))| std::iter::repeat_n(s as i32, keys.len())),
        )),
        Arc::new(Int32Array::from_iter_values(
            wanted.iter().flat_map(|(_, keys)| 0..keys.len() as i32),
        )),
        Arc::new(Int32Array::from_iter(keys().map(time))),
        Arc::new(StringArray::from_iter(keys().map(|k| {
            (k.typ != 0).then(|| crate::model::schema::type_name(k.typ))
        }))),
        Arc::new(StringArray::from_iter(keys().map(|k| {
            (k.country != 0).then(|| countries[k.country as usize].as_str())
        }))),
        Arc::new(Int32Array::from_iter(keys().map(|k| k.id32(false)))),
        Arc::new(Int32Array::from_iter(keys().map(|k| k.id32(true)))),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("spec", DataType::Int32, false),
        Field::new("idx", DataType::Int32, false),
        Field::new("t", DataType::Int32, true),
        Field::new("type", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("advertiser_id", DataType::Int32, true),
        Field::new("publisher_id", DataType::Int32, true),
    ]));
    Ok(RecordBatch::try_new(schema, columns)?)
}
