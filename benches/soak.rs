//! Soak run: the real daemon, for `--minutes N`, on a folder that random file operations
//! keep changing (add, append with a pause mid-line, rewrite in place, rename, delete,
//! FIFO, garbage, a huge line) while clients query it without pause.
//!
//! Every `--check-secs` the operations pause for a check: `sync`, then every answer to the
//! reference queries and `--queries` random ones must equal DuckDB over the regular files
//! that are data, the rollups on disk must equal a fresh build's, and `files` must list
//! the garbage files as failed. The daemon's RSS and open file descriptors are sampled
//! every second. At the end it is stopped with SIGTERM.
//!
//! `cargo bench --bench soak -- [--minutes 20] [--check-secs 60] [--queries 20] [--seed 1]
//! [--max-rows 3000]`. Prints markdown for docs/BENCHMARKS.md; exits non-zero on any wrong
//! answer or failed request. Figures are printed, never asserted.

#[allow(dead_code)]
mod common;
#[path = "../tests/oracle.rs"]
mod oracle;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use rollupd::app::gen::sample_file;
use rollupd::daemon::client::Client;
use rollupd::storage::manifest::{read_rollup, Manifest};
use rollupd::{Engine, EngineOptions};

use common::arg;
use oracle::{assert_same, oracle, query_context, random_query, QueryContext};

/// The figures of a run.
#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    queries: AtomicU64,
    errors: AtomicU64,
    checks: AtomicU64,
    checked_answers: AtomicU64,
}

/// RSS (KiB) and open file descriptors, sampled every second.
#[derive(Default)]
struct Samples(Mutex<Vec<(u64, u64)>>);

fn main() {
    common::require_release_duckdb();
    let minutes: f64 = arg("--minutes", 1.0);
    let check_every = Duration::from_secs(arg("--check-secs", 60));
    let random_queries: usize = arg("--queries", 20);
    let seed: u64 = arg("--seed", 1);
    let max_rows: usize = arg("--max-rows", 3000);

    let tmp = tempfile::tempdir().expect("temp dir");
    let bin = tmp.path().join("rollupd");
    // A copy, so a rebuild during the run does not replace the binary under it.
    std::fs::copy(env!("CARGO_BIN_EXE_rollupd"), &bin).expect("copy the binary");
    let mut folder = Folder::new(tmp.path().join("watch"), seed, max_rows);
    for _ in 0..6 {
        folder.add();
    }
    let state = tmp.path().join("state");
    let mut daemon = start(&bin, tmp.path(), &folder.dir, &state);
    let socket = state.join("rollupd.sock");
    wait_ready(&socket, &mut daemon);

    let counts = Arc::new(Counts::default());
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(query_context(&folder.data()));
    let mut threads = Vec::new();
    for c in 0..2 {
        let (counts, stop, ctx, socket) =
            (counts.clone(), stop.clone(), ctx.clone(), socket.clone());
        threads.push(std::thread::spawn(move || {
            query_loop(&socket, &ctx, seed + c, &counts, &stop)
        }));
    }
    let (pid, sampled, stopping) = (daemon.id(), samples.clone(), stop.clone());
    threads.push(std::thread::spawn(move || {
        sample_loop(pid, &sampled, &stopping)
    }));

    let start_at = Instant::now();
    let end = start_at + Duration::from_secs_f64(minutes * 60.0);
    let mut next_check = Instant::now() + check_every;
    loop {
        let done = Instant::now() >= end;
        if done || Instant::now() >= next_check {
            let fresh = tmp.path().join("fresh");
            check(&socket, &state, &folder, &counts, random_queries, &fresh);
            next_check = Instant::now() + check_every;
        }
        if done {
            break;
        }
        folder.random_op();
        counts.ops.fetch_add(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a soak thread panicked");
    }
    let stopped = terminate(&mut daemon);
    report(
        &counts,
        &samples,
        start_at.elapsed(),
        stopped,
        &folder,
        minutes,
    );
    if counts.errors.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}

fn start(bin: &Path, dir: &Path, watch: &Path, state: &Path) -> Child {
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log file");
    Command::new(bin)
        .current_dir(dir)
        .args(["run", "--watch"])
        .arg(watch)
        .arg("--state")
        .arg(state)
        .args(["--settle-ms", "200"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rollupd run")
}

fn wait_ready(socket: &Path, daemon: &mut Child) {
    let start = Instant::now();
    while Client::connect(socket)
        .and_then(|mut c| c.request(&json!({"op": "ping"})))
        .is_err()
    {
        if let Some(status) = daemon.try_wait().expect("wait") {
            panic!("rollupd run exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then how long the daemon took to exit and its status.
fn terminate(daemon: &mut Child) -> (Duration, std::process::ExitStatus) {
    let start = Instant::now();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().expect("wait");
    (start.elapsed(), status)
}

/// Random queries one after another until `stop`; a failed request is an error.
fn query_loop(socket: &Path, ctx: &QueryContext, seed: u64, counts: &Counts, stop: &AtomicBool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut client = Client::connect(socket).expect("connect");
    while !stop.load(Ordering::SeqCst) {
        let q = random_query(&mut rng, ctx);
        counts.queries.fetch_add(1, Ordering::Relaxed);
        match client.request(&json!({"op": "query", "query": q})) {
            Ok(reply) if reply.error().is_none() => {}
            Ok(reply) => fail(counts, &format!("{q} → {}", reply.line)),
            Err(e) => {
                fail(counts, &format!("{q} → {e}"));
                client = Client::connect(socket).expect("connect");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fail(counts: &Counts, what: &str) {
    counts.errors.fetch_add(1, Ordering::Relaxed);
    eprintln!("ERROR: {what}");
}

fn sample_loop(pid: u32, samples: &Samples, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            });
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64);
        if let (Some(rss), Ok(fds)) = (rss, fds) {
            samples.0.lock().expect("samples").push((rss, fds));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One check with the operations paused: sync, answers against DuckDB, rollups against a
/// fresh build, and the garbage files listed as failed.
fn check(
    socket: &Path,
    state: &Path,
    folder: &Folder,
    counts: &Counts,
    random: usize,
    fresh: &Path,
) {
    counts.checks.fetch_add(1, Ordering::Relaxed);
    let mut client = Client::connect(socket).expect("connect");
    let reply = client.request(&json!({"op": "sync"})).expect("sync");
    if reply.error().is_some() {
        return fail(counts, &format!("sync → {}", reply.line));
    }
    let data = folder.data();
    let ctx = query_context(&data);
    let mut rng = ChaCha8Rng::seed_from_u64(counts.checks.load(Ordering::Relaxed));
    let mut queries: Vec<Value> =
        serde_json::from_str(include_str!("../docs/reference-queries.json")).expect("queries");
    queries.extend((0..random).map(|_| random_query(&mut rng, &ctx)));
    for q in queries {
        let reply = client
            .request(&json!({"op": "query", "query": q}))
            .expect("query");
        counts.checked_answers.fetch_add(1, Ordering::Relaxed);
        let parsed = (|| -> Result<(), String> {
            let columns: Vec<String> = serde_json::from_value(reply.line["columns"].clone())
                .map_err(|_| format!("not an answer: {}", reply.line))?;
            let rows: Vec<Vec<Value>> = serde_json::from_value(reply.line["rows"].clone())
                .map_err(|_| format!("not an answer: {}", reply.line))?;
            assert_same(&q, &columns, &rows, &oracle(&data, &q)?)
        })();
        if let Err(e) = parsed {
            fail(counts, &format!("check: {e}"));
        }
    }
    oracle::clear_oracle_cache();
    if let Err(e) = same_rollups(state, &folder.dir, fresh) {
        fail(counts, &format!("check: {e}"));
    }
    let files = client.request(&json!({"op": "files"})).expect("files");
    for f in files.line["files"].as_array().into_iter().flatten() {
        let path = PathBuf::from(f["path"].as_str().unwrap_or_default());
        let garbage = folder.garbage.contains(&path);
        if garbage != (f["state"] == "failed") {
            fail(counts, &format!("check: {f} (garbage: {garbage})"));
        }
    }
}

/// The daemon's rollups on disk against those of a fresh build of the folder.
fn same_rollups(state: &Path, watch: &Path, fresh: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(fresh);
    let built = Engine::open(fresh, EngineOptions::default()).map_err(|e| e.to_string())?;
    built.update(watch).map_err(|e| e.to_string())?;
    let manifest = Manifest::load(state)
        .map_err(|e| e.to_string())?
        .ok_or("the daemon's state has no manifest")?;
    let want = built.snapshot();
    for (entry, rows) in manifest.rollups.iter().zip(&want.rollups) {
        // Read under the fresh build's dictionary, to compare with its rows.
        let countries = built.store().countries();
        let got = read_rollup(state, entry, countries).map_err(|e| e.to_string())?;
        if got != *rows.merged() {
            return Err(format!("rollup {} differs from a fresh build", entry.name));
        }
    }
    if manifest.rollups.len() != want.rollups.len() {
        return Err("the daemon keeps another set of rollups".into());
    }
    Ok(())
}

fn report(
    counts: &Counts,
    samples: &Samples,
    elapsed: Duration,
    (stop_time, status): (Duration, std::process::ExitStatus),
    folder: &Folder,
    minutes: f64,
) {
    let samples = samples.0.lock().expect("samples");
    let rss = samples.iter().map(|s| s.0);
    let fds = samples.iter().map(|s| s.1);
    let (rss_min, rss_max) = (rss.clone().min().unwrap_or(0), rss.max().unwrap_or(0));
    let (fds_min, fds_max) = (fds.clone().min().unwrap_or(0), fds.max().unwrap_or(0));
    // Flat: the last quarter of the run peaks no higher than the first quarter's peak
    // plus some slack.
    let quarter = samples.len() / 4;
    let peak = |s: &[(u64, u64)]| s.iter().map(|x| x.0).max().unwrap_or(0);
    let (first, last) = (
        peak(&samples[..quarter]),
        peak(&samples[samples.len() - quarter..]),
    );
    let flat = last <= first + first / 4 + 16 * 1024;
    println!("## Soak run ({minutes} minutes)\n");
    println!("| figure | value |\n|---|---|");
    println!("| duration | {:.1} min |", elapsed.as_secs_f64() / 60.0);
    println!(
        "| file operations | {} ({}) |",
        counts.ops.load(Ordering::Relaxed),
        folder.summary()
    );
    println!(
        "| queries while changing | {} |",
        counts.queries.load(Ordering::Relaxed)
    );
    println!(
        "| checks (answers compared with DuckDB, rollups with a fresh build) | {} ({} answers) |",
        counts.checks.load(Ordering::Relaxed),
        counts.checked_answers.load(Ordering::Relaxed)
    );
    println!(
        "| errors and wrong answers | {} |",
        counts.errors.load(Ordering::Relaxed)
    );
    println!(
        "| RSS min / max | {} / {} MB |",
        rss_min >> 10,
        rss_max >> 10
    );
    println!(
        "| RSS peak, first / last quarter | {} / {} MB ({}) |",
        first >> 10,
        last >> 10,
        if flat { "flat" } else { "GROWING" }
    );
    println!("| open fds min / max | {fds_min} / {fds_max} |");
    println!(
        "| SIGTERM to exit | {} ms ({status}) |",
        stop_time.as_millis()
    );
}

/// The folder the operations change, and what the soak knows of it.
struct Folder {
    dir: PathBuf,
    rng: ChaCha8Rng,
    max_rows: usize,
    /// Regular files that are data.
    good: BTreeSet<PathBuf>,
    /// Files that do not parse (garbage, a huge line): listed as failed, never data.
    garbage: BTreeSet<PathBuf>,
    fifos: BTreeSet<PathBuf>,
    next: u64,
    done: std::collections::BTreeMap<&'static str, u64>,
}

impl Folder {
    fn new(dir: PathBuf, seed: u64, max_rows: usize) -> Folder {
        std::fs::create_dir_all(&dir).expect("watch folder");
        Folder {
            dir,
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_rows,
            good: BTreeSet::new(),
            garbage: BTreeSet::new(),
            fifos: BTreeSet::new(),
            next: 0,
            done: Default::default(),
        }
    }

    /// The files a query must agree with.
    fn data(&self) -> Vec<PathBuf> {
        self.good.iter().cloned().collect()
    }

    fn summary(&self) -> String {
        let ops: Vec<String> = self.done.iter().map(|(k, n)| format!("{k} {n}")).collect();
        ops.join(", ")
    }

    fn name(&mut self, stem: &str) -> PathBuf {
        self.next += 1;
        self.dir.join(format!("{stem}{}.csv", self.next))
    }

    fn pick(&mut self) -> Option<PathBuf> {
        let n = self.good.len();
        (n > 0).then(|| self.good.iter().nth(self.rng.gen_range(0..n)).cloned())?
    }

    fn sample(&mut self) -> Vec<u8> {
        let rows = self.rng.gen_range(50..self.max_rows);
        sample_file(rows, self.rng.gen())
    }

    /// One random operation, then a short pause.
    fn random_op(&mut self) {
        let few = self.good.len() < 3;
        let many = self.good.len() > 12;
        let op = match self.rng.gen_range(0..100) {
            _ if few => "add",
            _ if many => "delete",
            0..=19 => "add",
            20..=39 => "append mid-line",
            40..=49 => "rewrite",
            50..=59 => "rename",
            60..=74 => "delete",
            75..=81 => "fifo",
            82..=90 => "garbage",
            _ => "huge line",
        };
        match op {
            "add" => self.add(),
            "append mid-line" => self.append(),
            "rewrite" => self.rewrite(),
            "rename" => self.rename(),
            "delete" => self.delete(),
            "fifo" => self.fifo(),
            "garbage" => self.garbage(),
            _ => self.huge_line(),
        }
        *self.done.entry(op).or_default() += 1;
        let pause = self.rng.gen_range(50..400);
        std::thread::sleep(Duration::from_millis(pause));
    }

    fn add(&mut self) {
        let (path, text) = (self.name("f"), self.sample());
        let part = path.with_extension("csv.part");
        std::fs::write(&part, text).expect("write");
        std::fs::rename(&part, &path).expect("rename");
        self.good.insert(path);
    }

    /// Appends rows in two writes, the first ending mid-line, a moment apart.
    fn append(&mut self) {
        let Some(path) = self.pick() else { return };
        let text = self.sample();
        let body = &text[text.iter().position(|b| *b == b'\n').expect("header") + 1..];
        let cut = self.rng.gen_range(1..body.len());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(&body[..cut]).expect("append");
        std::thread::sleep(Duration::from_millis(self.rng.gen_range(0..600)));
        f.write_all(&body[cut..]).expect("append");
    }

    /// Rewrites a file in place (truncate, write).
    fn rewrite(&mut self) {
        let Some(path) = self.pick() else { return };
        let text = self.sample();
        std::fs::write(&path, text).expect("rewrite");
    }

    fn rename(&mut self) {
        let Some(path) = self.pick() else { return };
        let to = self.name("r");
        std::fs::rename(&path, &to).expect("rename");
        self.good.remove(&path);
        self.good.insert(to);
    }

    /// Deletes a file that is data, or now and then a garbage file or a FIFO.
    fn delete(&mut self) {
        let other = self.garbage.iter().chain(&self.fifos).next().cloned();
        let path = match other {
            Some(p) if self.rng.gen_bool(0.3) => p,
            _ => match self.pick() {
                Some(p) => p,
                None => return,
            },
        };
        std::fs::remove_file(&path).expect("delete");
        self.good.remove(&path);
        self.garbage.remove(&path);
        self.fifos.remove(&path);
    }

    fn fifo(&mut self) {
        let path = self.name("pipe");
        let c = std::ffi::CString::new(path.to_str().expect("utf-8 path")).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        self.fifos.insert(path);
    }

    /// A file of random bytes after a valid header: it fails, and is never data.
    fn garbage(&mut self) {
        let path = self.name("bad");
        let mut text = sample_file(1, 0);
        text.truncate(text.iter().position(|b| *b == b'\n').expect("header") + 1);
        let len = self.rng.gen_range(10..20_000);
        text.extend((0..len).map(|_| self.rng.gen::<u8>()));
        text.push(b'\n');
        std::fs::write(&path, text).expect("write");
        self.garbage.insert(path);
    }

    /// A file whose second row is one line of a few MB.
    fn huge_line(&mut self) {
        let path = self.name("huge");
        let mut text = self.sample();
        let at = text.iter().position(|b| *b == b'\n').expect("header") + 1;
        let line = vec![b'7'; self.rng.gen_range(1 << 20..4 << 20)];
        text.splice(at..at, line.into_iter().chain([b'\n']));
        std::fs::write(&path, text).expect("write");
        self.garbage.insert(path);
    }
}
