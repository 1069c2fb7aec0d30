//! Cold-build benchmark at bench scale: fold MB/s per core, `rollupd build`
//! time and peak RSS against DuckDB's `CREATE TABLE AS SELECT * FROM read_csv(...)` of the
//! same files in the same run, rollup sizes and state size against the CSV bytes.
//!
//! `cargo bench --bench build -- [--files 49] [--rows 500000] [--data DIR] [--rounds 3]
//! [--fold-only] [--layout-only]`: the cold build and stock DuckDB's load alternate for
//! `--rounds` rounds (medians reported); `--layout-only` builds the state and times layout
//! changes alone.
//! Prints markdown for docs/BENCHMARKS.md. Timings are printed, never asserted.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rollupd::engine::Layout;
use rollupd::model::schema::Zone;
use rollupd::rollup::{default_specs, RollupSpec};
use rollupd::storage::manifest::Manifest;
use rollupd::{Engine, EngineOptions};

/// The daemon's allocator, so that the fold measured here allocates as it does there.
#[global_allocator]
static ALLOCATOR: rollupd::daemon::mapped::Allocator = rollupd::daemon::mapped::Allocator;

struct Args {
    files: usize,
    rows: usize,
    data: PathBuf,
    /// How many times the cold build and stock DuckDB's CTAS run, alternating.
    rounds: usize,
}

fn args() -> Args {
    Args {
        files: common::arg("--files", 49),
        rows: common::arg("--rows", 500_000),
        data: common::data_root(),
        rounds: common::arg("--rounds", 3).max(1),
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Runs a command, returning wall seconds, the child's peak RSS in MB and what it printed.
/// The child is reaped with `wait4` (for its resource usage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (f64, f64, String) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .unwrap();
    (secs, usage.ru_maxrss as f64 / 1024.0, out)
}

/// `read_csv` of `files` (a path or glob) with the column types rollupd gives them (UUID,
/// DECIMAL(18,9)).
fn read_csv(files: &str) -> String {
    format!(
        "read_csv('{files}', header = true, columns = {{'ts': 'BIGINT', 'type': 'VARCHAR', \
         'auction_id': 'UUID', 'advertiser_id': 'INTEGER', 'publisher_id': 'INTEGER', \
         'bid_price': 'DECIMAL(18,9)', 'user_id': 'BIGINT', 'total_price': 'DECIMAL(18,9)', \
         'country': 'VARCHAR'}})"
    )
}

/// The reference load: the bench files into a DuckDB table, then a checkpoint.
fn reference_load_sql(data: &Path) -> String {
    format!(
        "CREATE TABLE events AS SELECT * FROM {}; CHECKPOINT;",
        read_csv(&format!("{}/*.csv", data.display()))
    )
}

/// The reference for one new file: DuckDB loading it into the table of the whole folder.
fn reference_insert_sql(file: &Path) -> String {
    format!(
        "INSERT INTO events SELECT * FROM {}",
        read_csv(&file.display().to_string())
    )
}

/// A heavy aggregate (1.3 M groups at bench scale) whose time exposes a DuckDB compiled
/// with asserts: its verification passes walk the whole hash table on every chunk.
const CHECK_SQL: &str = "SELECT count(*), sum(n) FROM (SELECT advertiser_id, publisher_id, \
     SUM(bid_price) AS s, COUNT(*) AS n FROM events GROUP BY ALL)";

/// The reference run in stock DuckDB (the Python package), as a child process.
const STOCK_SCRIPT: &str = r#"
import sys, time, duckdb
db, load, check, insert = sys.argv[1:5]
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
con.execute(load)
def timed(sql):
    t = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - t
print(duckdb.__version__, min(timed(check) for _ in range(3)), timed(insert))
"#;

/// The same run in the DuckDB embedded in rollupd (a child process of the benchmark).
fn reference() {
    let load = std::env::var("ROLLUPD_BENCH_SQL").expect("sql");
    let insert = std::env::var("ROLLUPD_BENCH_INSERT").expect("insert sql");
    let db = std::env::var("ROLLUPD_BENCH_DB").expect("db");
    let conn = duckdb::Connection::open(&db).expect("open");
    conn.execute_batch(&load).expect("reference sql");
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            conn.query_row(CHECK_SQL, [], |r| r.get::<_, i64>(0))
                .expect("check query");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    let t = Instant::now();
    conn.execute_batch(&insert).expect("insert");
    let inserted = t.elapsed().as_secs_f64();
    let version: String = conn
        .query_row("SELECT library_version FROM pragma_version()", [], |r| {
            r.get(0)
        })
        .expect("version");
    println!("{version} {best} {inserted}");
}

/// A DuckDB reference run: load seconds, peak RSS in MB, version, check-query seconds
/// and the seconds to load one more file into the table.
struct Reference {
    load_secs: f64,
    rss_mb: f64,
    version: String,
    check_secs: f64,
    insert_secs: f64,
}

/// Runs a reference child and reads what it printed: its DuckDB version, the best of
/// three check-query times and the one-file insert (both taken out of the load time).
fn measure_reference(cmd: &mut Command) -> Reference {
    let (secs, rss_mb, out) = run_measured(cmd);
    let mut words = out.lines().last().unwrap_or_default().split_whitespace();
    let version = words.next().expect("version").to_string();
    let mut number = || -> f64 { words.next().and_then(|w| w.parse().ok()).expect("seconds") };
    let (check_secs, insert_secs) = (number(), number());
    Reference {
        load_secs: secs - 3.0 * check_secs - insert_secs,
        rss_mb,
        version,
        check_secs,
        insert_secs,
    }
}

/// One 500,000-row file like the bench data (`rows` rows), written into `dir`.
fn new_file(dir: &Path, name: &str, rows: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, rollupd::app::gen::sample_file(rows, seed)).unwrap();
    p
}

/// One in-process update, timed.
struct Timed {
    /// The whole update, seconds.
    secs: f64,
    /// Until its generation was published (queries see it), seconds; `None` when it
    /// published none.
    queryable: Option<f64>,
    mb: f64,
}

impl Timed {
    fn row(&self, label: &str, insert: f64) {
        let q = self.queryable.map_or("—".into(), |q| format!("{q:.2} s"));
        println!(
            "| {label} | {:.2} s | {q} | {:.1} MB | {:.2}x |",
            self.secs,
            self.mb,
            self.secs / insert
        );
    }
}

/// Times one in-process update, and when its generation came out (a thread watching the
/// engine's published generation, every millisecond).
fn timed_update(engine: &Engine, watch: &Path) -> Timed {
    let mut published = engine.subscribe();
    published.borrow_and_update();
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let (r, queryable) = std::thread::scope(|s| {
        let watcher = s.spawn(|| loop {
            if published.has_changed().unwrap_or(false) {
                return Some(start.elapsed().as_secs_f64());
            }
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        let r = engine.update(watch).unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (r, watcher.join().unwrap())
    });
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    Timed {
        secs: start.elapsed().as_secs_f64(),
        queryable,
        mb: r.bytes_parsed as f64 / 1e6,
    }
}

/// Incremental changes on a folded state: the daemon's cost (engine already open).
fn incremental(files: &[PathBuf], work: &Path, state49: &Path, rows: usize, insert: f64) {
    println!(
        "\n| change (engine open, in-process) | whole update | queryable after | parsed | \
         update vs stock DuckDB loading the same {rows}-row file into the folder's table \
         ({insert:.2} s) |"
    );
    println!("|---|---|---|---|---|");
    let watch49 = work.join("watch");
    let e49 = Engine::open(state49, EngineOptions::default()).unwrap();
    let ten = &files[..files.len().min(10)];
    let state10 = work.join("state10");
    let watch10 = common::linked(ten, &work.join("watch10"));
    let e10 = Engine::open(&state10, EngineOptions::default()).unwrap();
    e10.update(&watch10).unwrap();
    for (label, engine, watch) in [(ten.len(), &e10, &watch10), (files.len(), &e49, &watch49)] {
        new_file(watch, "new-0.csv", rows, 777);
        let label = format!("add one {rows}-row file, {label} files folded");
        timed_update(engine, watch).row(&label, insert);
    }
    let new = watch49.join("new-0.csv");
    let tail = new_file(work, "tail.csv", 10_000, 778);
    let tail_text = std::fs::read(&tail).unwrap();
    let body = &tail_text[tail_text.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let mut f = std::fs::OpenOptions::new().append(true).open(&new).unwrap();
    std::io::Write::write_all(&mut f, body).unwrap();
    drop(f);
    timed_update(&e49, &watch49).row("append 10,000 rows to a tracked file", insert);
    let touched = &watch49.join(files[0].file_name().unwrap());
    std::fs::File::options()
        .write(true)
        .open(touched)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    timed_update(&e49, &watch49).row("touch a tracked file", insert);
    std::fs::remove_file(&new).unwrap();
    timed_update(&e49, &watch49).row("delete a tracked file", insert);
    timed_update(&e49, &watch49).row("nothing changed", insert);
}

/// Layout changes on the open engine (as `reload` makes them): the time until the new
/// layout is published, against the cold build the same change cost before (every file
/// parsed again).
fn layout_changes(state: &Path, cold_build: f64) {
    let engine = Engine::open(state, EngineOptions::default()).unwrap();
    let rows = engine.table().row_count().unwrap();
    println!(
        "\n| layout change (engine open, {rows} rows in the table) | until published | \
         vs the cold build ({cold_build:.1} s) | rollups computed from the table |"
    );
    println!("|---|---|---|---|");
    let utc = EngineOptions::default().layout();
    let added = Layout {
        specs: [
            utc.specs.clone(),
            vec![RollupSpec::from_name("hour_publisher").unwrap()],
        ]
        .concat(),
        ..utc.clone()
    };
    let new_york = Layout {
        zone: Zone::parse("America/New_York").unwrap(),
        ..utc.clone()
    };
    for (label, to) in [
        ("add a rollup (hour_publisher)", &added),
        ("remove it", &utc),
        ("another time zone (America/New_York)", &new_york),
    ] {
        let r = engine.relayout(to.clone()).unwrap();
        let secs = r.elapsed.as_secs_f64();
        let computed =
            r.change.added.len() + r.change.time_zone.as_ref().map_or(0, |_| to.specs.len());
        println!(
            "| {label} | {secs:.2} s | {:.2}x | {computed} |",
            secs / cold_build
        );
    }
}

/// `rollupd build` from an empty state in a child process, on a folder of hard links to
/// the data: the state folder, wall seconds and peak RSS (MB).
fn cold_build(files: &[PathBuf], work: &Path) -> (PathBuf, f64, f64) {
    let state = work.join("state");
    for old in [&state, &work.join("watch")] {
        let _ = std::fs::remove_dir_all(old);
    }
    let watch = common::linked(files, &work.join("watch"));
    let (secs, rss, _) = run_measured(
        Command::new(env!("CARGO_BIN_EXE_rollupd"))
            .args(["build", "--watch"])
            .arg(&watch)
            .arg("--state")
            .arg(&state),
    );
    (state, secs, rss)
}

fn main() {
    // The allocator as the binary sets it (see `fold_kept` for the daemon's later one).
    rollupd::daemon::memory::at_start();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if std::env::args().any(|a| a == "--reference") {
        return reference();
    }
    common::require_release_duckdb();
    let a = args();
    let files = common::bench_data(&a.data, a.files, a.rows);
    let csv_bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let work = common::work_dir(&a.data, "work");

    let sample = &files[..files.len().min(3)];
    let fold_mbps = fold_alone(sample);
    if std::env::args().any(|a| a == "--fold-only") {
        println!("fold alone, 1 core: {fold_mbps:.0} MB/s");
        println!(
            "fold alone, 1 core, the allocator keeping freed memory: {:.0} MB/s",
            fold_kept(sample)
        );
        return;
    }
    if std::env::args().any(|a| a == "--layout-only") {
        let (state, secs, _) = cold_build(&files, &work);
        return layout_changes(&state, secs);
    }

    // DuckDB references, in child processes so they get the machine as we do: stock
    // DuckDB (the Python package) and the DuckDB embedded in rollupd, on the same SQL.
    let data = files[0].parent().expect("data folder");
    let load = reference_load_sql(data);
    let one = new_file(&work, "one-more.csv", a.rows, 777);
    let insert = reference_insert_sql(&one);
    let stock_db = work.join("stock.duckdb");
    let run_stock = || {
        let stock = measure_reference(
            Command::new("python3")
                .args(["-c", STOCK_SCRIPT])
                .arg(&stock_db)
                .arg(&load)
                .arg(CHECK_SQL)
                .arg(&insert),
        );
        let _ = std::fs::remove_file(&stock_db);
        stock
    };
    let stock = run_stock();
    let exe = std::env::current_exe().unwrap();
    let embedded_db = work.join("embedded.duckdb");
    let embedded = measure_reference(
        Command::new(&exe)
            .env("ROLLUPD_BENCH_SQL", &load)
            .env("ROLLUPD_BENCH_INSERT", &insert)
            .env("ROLLUPD_BENCH_DB", &embedded_db)
            .arg("--reference"),
    );
    let _ = std::fs::remove_file(&embedded_db);
    let engine_ratio = embedded.check_secs / stock.check_secs;

    // The cold build and stock DuckDB's CTAS alternate (the first CTAS is the one above):
    // the machine is shared, and one pair can land on a busy moment. The ratio is the
    // median of the rounds'; the peak, the highest.
    let mut rounds: Vec<(f64, f64)> = Vec::new();
    let mut our_rss: f64 = 0.0;
    let mut state = PathBuf::new();
    for round in 0..a.rounds {
        let ctas = match round {
            0 => stock.load_secs,
            _ => run_stock().load_secs,
        };
        let (s, secs, rss) = cold_build(&files, &work);
        (state, our_rss) = (s, our_rss.max(rss));
        rounds.push((secs, ctas));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let our_secs = median(rounds.iter().map(|r| r.0).collect());
    let ctas_secs = median(rounds.iter().map(|r| r.1).collect());
    let build_ratio = median(rounds.iter().map(|r| r.0 / r.1).collect());

    let manifest = Manifest::load(&state).unwrap().expect("manifest");
    let state_bytes = dir_bytes(&state);
    let db_bytes = dir_bytes(&state.join("events.duckdb"));
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().unwrap(),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap()
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    println!(
        "data: {} files x {} rows, {:.2} GB of CSV\n",
        files.len(),
        a.rows,
        csv_bytes as f64 / 1e9
    );
    println!(
        "DuckDB engine check (a 1.3 M-group aggregate): embedded {} {:.3} s, stock {} {:.3} s: {engine_ratio:.2}x",
        embedded.version, embedded.check_secs, stock.version, stock.check_secs
    );
    if engine_ratio > 1.5 {
        println!(
            "WARNING: the embedded DuckDB is {engine_ratio:.1}x slower than stock DuckDB on the \
             same query; was it compiled with asserts?"
        );
    }
    println!("\n| measure | rollupd | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| cold build (rollups + table), median of {} rounds | {our_secs:.1} s | stock DuckDB CTAS {ctas_secs:.1} s (embedded {:.1} s) | {build_ratio:.2}x |",
        rounds.len(),
        embedded.load_secs,
    );
    println!(
        "| peak RSS, highest of the rounds | {our_rss:.0} MB | stock DuckDB CTAS {:.0} MB (embedded {:.0} MB) | {:.2}x |",
        stock.rss_mb,
        embedded.rss_mb,
        our_rss / stock.rss_mb
    );
    println!(
        "| fold alone, 1 core | {fold_mbps:.0} MB/s | goal 200 MB/s | {:.2}x |",
        fold_mbps / 200.0
    );
    println!(
        "| state on disk | {:.0} MB (DuckDB {:.0} MB, rollups {:.0} MB) | CSV {:.0} MB | {:.2}x |",
        state_bytes as f64 / 1e6,
        db_bytes as f64 / 1e6,
        manifest.bytes() as f64 / 1e6,
        csv_bytes as f64 / 1e6,
        state_bytes as f64 / csv_bytes as f64
    );
    let (sled, partials) = (
        dir_bytes(&state.join("store")),
        dir_bytes(&state.join("partials")),
    );
    println!(
        "| store (sled registry + partials files) | {:.0} MB (sled {:.0} MB, partials {:.0} MB) | CSV {:.0} MB | {:.2}x |",
        (sled + partials) as f64 / 1e6,
        sled as f64 / 1e6,
        partials as f64 / 1e6,
        csv_bytes as f64 / 1e6,
        (sled + partials) as f64 / csv_bytes as f64
    );
    let each: Vec<String> = (rounds.iter())
        .map(|(ours, ctas)| format!("{ours:.1} / {ctas:.1} s ({:.2}x)", ours / ctas))
        .collect();
    println!(
        "\nCold build rounds, rollupd / stock DuckDB CTAS: {}",
        each.join(", ")
    );
    println!("\n| rollup | rows | bytes |");
    println!("|---|---|---|");
    for r in &manifest.rollups {
        println!(
            "| {} | {} | {:.1} MB |",
            r.name,
            r.rows,
            r.bytes as f64 / 1e6
        );
    }
    incremental(&files, &work, &state, a.rows, stock.insert_secs);
    layout_changes(&state, our_secs);
    println!(
        "\nfold alone, 1 core, the allocator keeping freed memory: {:.0} MB/s",
        fold_kept(sample)
    );
}

/// The fold alone on one core, in MB/s: parse, derive, sort and build the partials of
/// `files`, one after another, in this process.
fn fold_alone(files: &[PathBuf]) -> f64 {
    let specs = default_specs();
    let start = Instant::now();
    let mut folded = 0;
    for (i, f) in files.iter().enumerate() {
        let with = rollupd::ingest::fold::FoldWith {
            zone: Zone::Utc,
            specs: &specs,
            countries: &rollupd::rollup::Countries::default(),
        };
        folded += rollupd::ingest::fold::fold_file(f, i as i32, with)
            .unwrap()
            .bytes;
    }
    folded as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// `fold_alone` with the allocator as a daemon sets it once its first update is done
/// (freed memory kept for reuse rather than given back): the fold's own cost, without
/// the kernel providing fresh pages for each file's buffers. Measured last, since the
/// setting stays for the rest of the process.
fn fold_kept(files: &[PathBuf]) -> f64 {
    rollupd::daemon::memory::after_update();
    fold_alone(files)
}
