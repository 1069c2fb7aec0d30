//! Cold-build benchmark at bench scale (CONTRACT §6): fold MB/s per core, `rollupd build`
//! time and peak RSS against DuckDB's `CREATE TABLE AS SELECT * FROM read_csv(...)` of the
//! same files in the same run, rollup sizes and state size against the CSV bytes.
//!
//! `cargo bench --bench build -- [--files 49] [--rows 500000] [--data DIR]`
//! Prints markdown for docs/BENCHMARKS.md. Timings are printed, never asserted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rollupd::manifest::Manifest;
use rollupd::rollup::default_specs;
use rollupd::schema::Zone;
use rollupd::{Engine, EngineOptions};

struct Args {
    files: usize,
    rows: usize,
    data: PathBuf,
}

fn args() -> Args {
    Args {
        files: common::arg("--files", 49),
        rows: common::arg("--rows", 500_000),
        data: common::data_root(),
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

/// Runs a command, returning wall seconds and the child's peak RSS in MB. The child is
/// reaped with `wait4` (for its resource usage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (f64, f64) {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
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
    (secs, usage.ru_maxrss as f64 / 1024.0)
}

/// The reference run (a child process of the benchmark): DuckDB alone.
fn reference() {
    let sql = std::env::var("ROLLUPD_BENCH_SQL").expect("sql");
    let db = std::env::var("ROLLUPD_BENCH_DB").expect("db");
    let conn = duckdb::Connection::open(&db).expect("open");
    conn.execute_batch(&sql).expect("reference sql");
    conn.execute_batch("CHECKPOINT").expect("checkpoint");
}

/// One 500,000-row file like the bench data (`rows` rows), written into `dir`.
fn new_file(dir: &Path, name: &str, rows: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, rollupd::gen::sample_file(rows, seed)).unwrap();
    p
}

/// Times one in-process update; returns (seconds, MB parsed).
fn timed_update(engine: &Engine, watch: &Path) -> (f64, f64) {
    let start = Instant::now();
    let r = engine.update(watch).unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    (start.elapsed().as_secs_f64(), r.bytes_parsed as f64 / 1e6)
}

/// Incremental changes on a folded state: the daemon's cost (engine already open).
fn incremental(files: &[PathBuf], work: &Path, state49: &Path, rows: usize) {
    println!("\n| change (engine open, in-process) | time | parsed |");
    println!("|---|---|---|");
    let watch49 = work.join("watch");
    let e49 = Engine::open(state49, EngineOptions::default()).unwrap();
    let ten = &files[..files.len().min(10)];
    let state10 = work.join("state10");
    let watch10 = common::linked(ten, &work.join("watch10"));
    let e10 = Engine::open(&state10, EngineOptions::default()).unwrap();
    e10.update(&watch10).unwrap();
    for (label, engine, watch) in [(ten.len(), &e10, &watch10), (files.len(), &e49, &watch49)] {
        new_file(watch, "new-0.csv", rows, 777);
        let (t, mb) = timed_update(engine, watch);
        println!("| add one {rows}-row file, {label} files folded | {t:.2} s | {mb:.1} MB |");
    }
    let new = watch49.join("new-0.csv");
    let tail = new_file(work, "tail.csv", 10_000, 778);
    let tail_text = std::fs::read(&tail).unwrap();
    let body = &tail_text[tail_text.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let mut f = std::fs::OpenOptions::new().append(true).open(&new).unwrap();
    std::io::Write::write_all(&mut f, body).unwrap();
    drop(f);
    let (t, mb) = timed_update(&e49, &watch49);
    println!("| append 10,000 rows to a tracked file | {t:.2} s | {mb:.1} MB |");
    let touched = &watch49.join(files[0].file_name().unwrap());
    std::fs::File::options()
        .write(true)
        .open(touched)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let (t, mb) = timed_update(&e49, &watch49);
    println!("| touch a tracked file | {t:.2} s | {mb:.1} MB |");
    std::fs::remove_file(&new).unwrap();
    let (t, mb) = timed_update(&e49, &watch49);
    println!("| delete a tracked file | {t:.2} s | {mb:.1} MB |");
    let (t, mb) = timed_update(&e49, &watch49);
    println!("| nothing changed | {t:.2} s | {mb:.1} MB |");
}

fn main() {
    if std::env::args().any(|a| a == "--reference") {
        return reference();
    }
    let a = args();
    let files = common::bench_data(&a.data, a.files, a.rows);
    let csv_bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let work = common::work_dir(&a.data, "work");

    // Fold alone, one core: parse, derive, sort and build the partials of three files.
    let specs = default_specs();
    let sample = &files[..files.len().min(3)];
    let start = Instant::now();
    let mut folded = 0;
    for (i, f) in sample.iter().enumerate() {
        folded += rollupd::fold::fold_file(f, i as i32, Zone::Utc, &specs)
            .unwrap()
            .bytes;
    }
    let fold_mbps = folded as f64 / 1e6 / start.elapsed().as_secs_f64();

    // DuckDB reference, in a child process so it gets the machine as we do.
    let db = work.join("reference.duckdb");
    let sql = format!(
        "CREATE TABLE events AS SELECT * FROM read_csv('{}/*.csv');",
        files[0].parent().expect("data folder").display()
    );
    let exe = std::env::current_exe().unwrap();
    let (ref_secs, ref_rss) = run_measured(
        Command::new(&exe)
            .env("ROLLUPD_BENCH_SQL", &sql)
            .env("ROLLUPD_BENCH_DB", &db)
            .arg("--reference"),
    );

    // rollupd's cold build, on a folder of hard links to the data.
    let state = work.join("state");
    let watch = common::linked(&files, &work.join("watch"));
    let (our_secs, our_rss) = run_measured(
        Command::new(env!("CARGO_BIN_EXE_rollupd"))
            .args(["build", "--watch"])
            .arg(&watch)
            .arg("--state")
            .arg(&state),
    );

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
    println!("| measure | rollupd | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| cold build (rollups + table) | {our_secs:.1} s | DuckDB CTAS read_csv {ref_secs:.1} s | {:.2}x |",
        our_secs / ref_secs
    );
    println!(
        "| peak RSS | {our_rss:.0} MB | DuckDB CTAS {ref_rss:.0} MB | {:.2}x |",
        our_rss / ref_rss
    );
    println!(
        "| fold alone, 1 core | {fold_mbps:.0} MB/s | goal 400 MB/s | {:.2}x |",
        fold_mbps / 400.0
    );
    println!(
        "| state on disk | {:.0} MB (DuckDB {:.0} MB, rollups {:.0} MB) | CSV {:.0} MB | {:.2}x |",
        state_bytes as f64 / 1e6,
        db_bytes as f64 / 1e6,
        manifest.bytes() as f64 / 1e6,
        csv_bytes as f64 / 1e6,
        state_bytes as f64 / csv_bytes as f64
    );
    println!(
        "| sled store | {:.0} MB | CSV {:.0} MB | {:.2}x |",
        dir_bytes(&state.join("store")) as f64 / 1e6,
        csv_bytes as f64 / 1e6,
        dir_bytes(&state.join("store")) as f64 / csv_bytes as f64
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
    incremental(&files, &work, &state, a.rows);
}
