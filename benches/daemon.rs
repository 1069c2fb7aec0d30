//! Daemon benchmark at bench scale, through the real binary and its socket:
//! `rollupd run` is spawned as a child and every number is measured at the client.
//!
//! 1. Socket round trip of the five reference queries (p50 and p99, goal ≤ 1 ms / ≤ 5 ms).
//! 2. Queries the planner sends to DuckDB: socket p50 against DuckDB itself (in-process, a
//!    fresh in-memory connection) running the same question over the raw CSVs with
//!    `read_csv` (goal ≥ 10x) and on a native table of the same rows (goal ≤ 1.5x); row
//!    counts and first columns are compared.
//! 4. A random mix of rollup-answered queries (p50/p99, goal ≤ 0.5 / 2 ms for answers up
//!    to 10k rows; never slower than DuckDB on the native table), with the answer cache
//!    off and, apart, on; and large answers as JSON and Arrow (goal ≥ 1 M and ≥ 10 M
//!    rows/s); see `serving.rs`. Every other figure is taken with the cache off.
//! 3. A 500k-row file renamed into the folder until a `min_generation` query counts it,
//!    with 10 and with all files folded (goal ≤ 1 s after settling, same ±20%); then
//!    10,000 rows appended to it and the file deleted, each until a query shows it (goals
//!    ≤ 0.3x and ≤ 1x the drop).
//!
//! Also the daemon's cold build (start until `sync` returns) and its peak RSS, as context.
//!
//! `cargo bench --bench daemon -- [--files 49] [--rows 500000] [--data DIR] [--iters 200]
//! [--drops 3] [--mix 200] [--queries-only]`: `--queries-only` measures the queries only,
//! on a state kept between runs. Prints markdown for docs/BENCHMARKS.md. Timings are printed, never asserted.

mod common;
mod serving;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rollupd::daemon::client::{Client, ClientOptions, Reply};
use serde_json::{json, Value as Json};

/// The settle interval the daemons run with.
const SETTLE_MS: u64 = 200;

struct Args {
    files: usize,
    rows: usize,
    data: PathBuf,
    iters: usize,
    drops: usize,
    /// Random rollup-answered queries in the mix.
    mix: usize,
    /// Only the query measurements, on a state kept between runs.
    queries_only: bool,
}

fn args() -> Args {
    Args {
        files: common::arg("--files", 49),
        rows: common::arg("--rows", 500_000),
        data: common::data_root(),
        iters: common::arg("--iters", 200),
        drops: common::arg("--drops", 3),
        mix: common::arg("--mix", 200),
        queries_only: std::env::args().any(|a| a == "--queries-only"),
    }
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// (user_id, auction_id) of the first data row of `file`, to filter on.
fn sample_ids(file: &Path) -> (i64, String) {
    let mut lines = BufReader::new(std::fs::File::open(file).unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    let row = lines.next().unwrap().unwrap();
    let cols: Vec<&str> = header.split(',').collect();
    let vals: Vec<&str> = row.split(',').collect();
    let at = |name: &str| vals[cols.iter().position(|c| *c == name).unwrap()];
    (at("user_id").parse().unwrap(), at("auction_id").to_string())
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// A `rollupd run` child process and its socket; its stderr (the log) is collected.
struct Daemon {
    child: Child,
    socket: PathBuf,
    started: Instant,
    /// Log lines with the time each was read.
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    fn start(watch: &Path, state: &Path) -> Daemon {
        let socket = state.join("rollupd.sock");
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollupd"))
            .arg("run")
            .arg("--watch")
            .arg(watch)
            .arg("--state")
            .arg(state)
            .arg("--socket")
            .arg(&socket)
            .arg("--settle-ms")
            .arg(SETTLE_MS.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollupd run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("rollupd: {line}");
                }
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Daemon {
            child,
            socket,
            started,
            log,
            exited: None,
        }
    }

    /// Waits until the socket answers a ping; returns the time since the start.
    fn wait_ready(&mut self) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.request(&json!({"op": "ping"})).is_ok() {
                    return self.started.elapsed();
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "rollupd run exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            assert!(Instant::now() < deadline, "rollupd run never answered");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A client that waits as long as the daemon takes (a cold build at the real size
    /// takes many minutes).
    fn client(&self) -> Client {
        let opts = ClientOptions {
            read_timeout: None,
            ..ClientOptions::default()
        };
        Client::connect_with(&self.socket, opts).expect("connect")
    }

    /// Peak resident set of the daemon so far (VmHWM), in MB.
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The first "published" log line from line `from` on that `pick`s, with the time it
    /// was read; waits for it up to `wait`.
    fn published_after(
        &self,
        from: usize,
        wait: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let log = self.log.lock().unwrap();
                let found = log[from.min(log.len())..]
                    .iter()
                    .find(|(_, l)| l.contains("published") && pick(l));
                if let Some(hit) = found {
                    return Some(hit.clone());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Log lines from line `from` on.
    fn lines_since(&self, from: usize) -> Vec<(Instant, String)> {
        let log = self.log.lock().unwrap();
        log[from.min(log.len())..].to_vec()
    }

    fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Log lines with WARN or ERROR.
    fn complaints(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(_, l)| l.contains("WARN") || l.contains("ERROR"))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the exit status and wait time.
    fn stop(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = start + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exited = Some(status);
                return (status, start.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                self.exited = Some(status);
                return (status, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.stop();
        }
    }
}

/// The value of `key=` in a log line.
fn log_field(line: &str, key: &str) -> Option<u64> {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(pat.as_str()))
        .and_then(|v| v.parse().ok())
}

/// Sends a request and panics on a transport error or an `ok: false` answer.
fn ask(client: &mut Client, request: &Json) -> Reply {
    let reply = client.request(request).expect("request");
    if let Some(e) = reply.error() {
        panic!("{request} failed: {}: {}", e.kind, e.message);
    }
    reply
}

/// A json query request that the answer cache neither answers nor keeps.
fn query_request(query: &Json) -> Json {
    json!({"op": "query", "query": query, "format": "json", "cache": false})
}

/// Sync, and return the generation.
fn sync(client: &mut Client) -> u64 {
    ask(client, &json!({"op": "sync", "timeout_ms": 86_400_000})).line["generation"]
        .as_u64()
        .unwrap()
}

fn count_all(client: &mut Client) -> i64 {
    let q = json!({"select": [{"COUNT": "*"}], "from": "events"});
    ask(client, &query_request(&q)).line["rows"][0][0]
        .as_i64()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// The first column of a reply's rows as text (numbers printed, NULL as None).
fn first_column(reply: &Json) -> Vec<Option<String>> {
    reply["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match &r[0] {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Reference queries through the socket
// ---------------------------------------------------------------------------------------

/// A bare connection to the socket that times a round trip up to the last byte of the
/// response line, before the client parses it (json format only: no payload follows).
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Ms the last answer took the client to parse its reply line once read (a `json`
    /// answer's rows are in that line), which its time leaves out.
    parse_ms: f64,
    /// The buffer payloads are read into, kept from one answer to the next as a client
    /// reading many answers would (a fresh one costs the client page faults each time:
    /// several ms at ten megabytes).
    payload: Vec<u8>,
}

impl Raw {
    fn connect(socket: &Path) -> Raw {
        let writer = UnixStream::connect(socket).expect("connect");
        Raw {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            parse_ms: 0.0,
            payload: Vec::new(),
        }
    }

    /// Sends a request line and reads the response line: when the request was sent, and
    /// the response.
    fn send(&mut self, request: &Json) -> (Instant, String) {
        let mut line = request.to_string();
        line.push('\n');
        let mut response = String::new();
        let start = Instant::now();
        self.writer.write_all(line.as_bytes()).unwrap();
        self.reader.read_line(&mut response).unwrap();
        (start, response)
    }

    /// One request: (ms until the response line was read, ms including parsing it, the
    /// response, its length in bytes).
    fn call(&mut self, request: &Json) -> (f64, f64, Json, usize) {
        let (start, response) = self.send(request);
        let read = ms(start.elapsed());
        let json: Json = serde_json::from_str(&response).expect("a JSON response line");
        let parsed = ms(start.elapsed());
        if json["ok"] != Json::Bool(true) {
            panic!("{request} failed: {json}");
        }
        (read, parsed, json, response.len())
    }
}

/// Samples of [`round_trips`], in ms, sorted.
struct Trips {
    /// The first call (untimed warm-up included nothing before it).
    first: f64,
    /// Until the response line was read.
    read: Vec<f64>,
    /// Including the client's parse of the line.
    parsed: Vec<f64>,
    /// The daemon's own `elapsed_us`.
    server: Vec<f64>,
    last: Json,
    bytes: usize,
}

/// Round trips of `request`: `warmup` untimed (the first one reported), then `iters`
/// timed, stopping early once past `budget`.
fn round_trips(
    conn: &mut Raw,
    request: &Json,
    warmup: usize,
    iters: usize,
    budget: Duration,
) -> Trips {
    let (first, _, mut last, mut bytes) = conn.call(request);
    for _ in 1..warmup {
        (_, _, last, bytes) = conn.call(request);
    }
    let mut read = Vec::with_capacity(iters);
    let mut parsed = Vec::with_capacity(iters);
    let mut server = Vec::with_capacity(iters);
    let begun = Instant::now();
    for _ in 0..iters {
        let (r, p, json, b) = conn.call(request);
        read.push(r);
        parsed.push(p);
        if let Some(us) = json["elapsed_us"].as_u64() {
            server.push(us as f64 / 1e3);
        }
        (last, bytes) = (json, b);
        if begun.elapsed() > budget && read.len() >= 5 {
            break;
        }
    }
    Trips {
        first,
        read: sorted(read),
        parsed: sorted(parsed),
        server: sorted(server),
        last,
        bytes,
    }
}

fn server_p50(t: &Trips) -> String {
    if t.server.is_empty() {
        String::new()
    } else {
        format!("{:.3} ms", pct(&t.server, 0.5))
    }
}

fn reference_latency(socket: &Path, iters: usize) {
    // Cargo's variable when it runs the bench, not the compiled-in one (which names the
    // checkout that built the binary, maybe another sharing the target folder).
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("benches run by cargo");
    let path = Path::new(&root).join("docs/reference-queries.json");
    let queries: Vec<Json> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut conn = Raw::connect(socket);
    let pings = round_trips(
        &mut conn,
        &json!({"op": "ping"}),
        20,
        iters,
        Duration::from_secs(60),
    );
    println!(
        "\n### Reference queries through the socket\n\n{iters} round trips per query after \
         20 warm-up, one connection, `format: json`, timed at the client from writing the \
         request line until the whole response line is read; \"with parse\" adds the \
         client's serde_json parse of it; \"in daemon\" is the response's `elapsed_us`.\n"
    );
    println!(
        "| query | source | rows | response | first call | p50 | p99 | p50 with parse | in daemon p50 | goal p50 ≤ 1 ms, p99 ≤ 5 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let t = round_trips(
            &mut conn,
            &query_request(q),
            20,
            iters,
            Duration::from_secs(120),
        );
        let (p50, p99) = (pct(&t.read, 0.5), pct(&t.read, 0.99));
        println!(
            "| {} | {} | {} | {:.1} kB | {:.2} ms | {p50:.3} ms | {p99:.3} ms | {:.3} ms | {} | {} |",
            i + 1,
            t.last["source"].as_str().unwrap_or("?"),
            t.last["rows"].as_array().map_or(0, Vec::len),
            t.bytes as f64 / 1e3,
            t.first,
            pct(&t.parsed, 0.5),
            server_p50(&t),
            mark(p50 <= 1.0 && p99 <= 5.0)
        );
        all.extend(t.read);
    }
    let all = sorted(all);
    let (p50, p99) = (pct(&all, 0.5), pct(&all, 0.99));
    println!(
        "| all five | | | | | {p50:.3} ms | {p99:.3} ms | | | {} |",
        mark(p50 <= 1.0 && p99 <= 5.0)
    );
    println!(
        "| `ping` (floor) | | | | | {:.3} ms | {:.3} ms | | | |",
        pct(&pings.read, 0.5),
        pct(&pings.read, 0.99)
    );
}

// ---------------------------------------------------------------------------------------
// 2. DuckDB-routed queries against DuckDB over the raw CSVs
// ---------------------------------------------------------------------------------------

struct Routed {
    label: &'static str,
    /// Where the daemon answers it.
    source: &'static str,
    query: Json,
    /// The same question in DuckDB SQL over `{src}` (the raw CSVs); first column `c0`.
    sql: String,
}

fn routed_queries(user: i64, auction: &str) -> Vec<Routed> {
    const DAY: &str = "CAST(epoch_ms(ts) AS DATE)";
    // 2024-06-01 12:00:00 UTC to 12:59:59.999.
    let (t0, t1) = (1_717_243_200_000i64, 1_717_246_799_999i64);
    let auction_sql = auction.replace('\'', "''").to_lowercase();
    vec![
        Routed {
            label: "raw rows of one user (user_id =, limit 100)",
            source: "duckdb",
            query: json!({"select": ["ts", "type", "auction_id"],
                          "where": [{"col": "user_id", "op": "eq", "val": user}],
                          "limit": 100}),
            sql: format!(
                "SELECT ts AS c0, type, lower(auction_id) FROM {{src}} WHERE user_id = {user} \
                 ORDER BY 1 ASC NULLS LAST, 2 ASC NULLS LAST, 3 ASC NULLS LAST LIMIT 100"
            ),
        },
        Routed {
            label: "events of one auction (auction_id =, limit 10)",
            source: "duckdb",
            query: json!({"select": ["ts", "type", "user_id", "bid_price"],
                          "where": [{"col": "auction_id", "op": "eq", "val": auction}],
                          "limit": 10}),
            sql: format!(
                "SELECT ts AS c0, type, user_id, bid_price FROM {{src}} \
                 WHERE lower(auction_id) = '{auction_sql}' ORDER BY 1 ASC NULLS LAST, \
                 2 ASC NULLS LAST, 3 ASC NULLS LAST, 4 ASC NULLS LAST LIMIT 10"
            ),
        },
        Routed {
            label: "one hour by ts, per country (ts between)",
            source: "rollup:hour_type_country",
            query: json!({"select": ["country", {"COUNT": "*"}, {"SUM": "bid_price"}],
                          "where": [{"col": "ts", "op": "between", "val": [t0, t1]}],
                          "group_by": ["country"]}),
            sql: format!(
                "SELECT country AS c0, COUNT(*), SUM(bid_price) FROM {{src}} \
                 WHERE ts BETWEEN {t0} AND {t1} GROUP BY country ORDER BY country ASC NULLS LAST"
            ),
        },
        Routed {
            label: "one hour by ts from mid-minute, per country (ts between)",
            source: "duckdb",
            query: json!({"select": ["country", {"COUNT": "*"}, {"SUM": "bid_price"}],
                          "where": [{"col": "ts", "op": "between", "val": [t0 + 30_000, t1 + 30_000]}],
                          "group_by": ["country"]}),
            sql: format!(
                "SELECT country AS c0, COUNT(*), SUM(bid_price) FROM {{src}} \
                 WHERE ts BETWEEN {} AND {} GROUP BY country ORDER BY country ASC NULLS LAST",
                t0 + 30_000,
                t1 + 30_000
            ),
        },
        Routed {
            label: "day x country x advertiser, one day of impressions",
            source: "duckdb",
            query: json!({"select": ["day", "country", "advertiser_id", {"SUM": "bid_price"}],
                          "where": [{"col": "type", "op": "eq", "val": "impression"},
                                    {"col": "day", "op": "eq", "val": "2024-06-01"}],
                          "group_by": ["day", "country", "advertiser_id"]}),
            sql: format!(
                "SELECT {DAY} AS c0, country, advertiser_id, SUM(bid_price) FROM {{src}} \
                 WHERE type = 'impression' AND {DAY} = DATE '2024-06-01' \
                 GROUP BY ALL ORDER BY 1 ASC NULLS LAST, 2 ASC NULLS LAST, 3 ASC NULLS LAST"
            ),
        },
        Routed {
            label: "top advertisers by impressions with bid_price ≥ 0.99",
            source: "duckdb",
            query: json!({"select": ["advertiser_id", {"COUNT": "*"}],
                          "where": [{"col": "type", "op": "eq", "val": "impression"},
                                    {"col": "bid_price", "op": "gte", "val": 0.99}],
                          "group_by": ["advertiser_id"],
                          "order_by": [{"col": "COUNT(*)", "dir": "desc"}],
                          "limit": 10}),
            sql: "SELECT advertiser_id AS c0, COUNT(*) FROM {src} \
                  WHERE type = 'impression' AND bid_price >= 0.99 GROUP BY advertiser_id \
                  ORDER BY 2 DESC NULLS LAST, 1 ASC NULLS LAST LIMIT 10"
                .to_string(),
        },
        Routed {
            label: "10,000 users, per type (user_id between)",
            source: "duckdb",
            query: json!({"select": ["type", {"COUNT": "*"}, {"SUM": "total_price"}],
                          "where": [{"col": "user_id", "op": "between",
                                     "val": [1_000_000, 1_009_999]}],
                          "group_by": ["type"]}),
            sql: "SELECT type AS c0, COUNT(*), SUM(total_price) FROM {src} \
                  WHERE user_id BETWEEN 1000000 AND 1009999 GROUP BY type \
                  ORDER BY type ASC NULLS LAST"
                .to_string(),
        },
    ]
}

/// `read_csv` of the files with the columns' types given (no sniffing of types).
fn csv_source(files: &[PathBuf]) -> String {
    let list: Vec<String> = files
        .iter()
        .map(|p| format!("'{}'", p.display().to_string().replace('\'', "''")))
        .collect();
    format!(
        "read_csv([{}], header = true, delim = ',', columns = {{'ts': 'BIGINT', \
         'type': 'VARCHAR', 'auction_id': 'VARCHAR', 'advertiser_id': 'INTEGER', \
         'publisher_id': 'INTEGER', 'bid_price': 'DOUBLE', 'user_id': 'BIGINT', \
         'total_price': 'DOUBLE', 'country': 'VARCHAR'}})",
        list.join(", ")
    )
}

/// DuckDB alone, in-process, on a fresh in-memory connection: seconds and the first column.
fn duckdb_raw(sql: &str) -> (f64, Vec<Option<String>>) {
    let start = Instant::now();
    let conn = duckdb::Connection::open_in_memory().expect("duckdb");
    let wrapped = format!("SELECT CAST(c0 AS VARCHAR) FROM ({sql}) AS q");
    let mut out = Vec::new();
    {
        let mut stmt = conn
            .prepare(&wrapped)
            .unwrap_or_else(|e| panic!("{e}\n{wrapped}"));
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            out.push(row.get::<_, Option<String>>(0).unwrap());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(conn);
    (secs, out)
}

fn duckdb_routed(
    socket: &Path,
    files: &[PathBuf],
    by_day: &serving::Native,
    user: i64,
    auction: &str,
) {
    let loaded = serving::Native::load(files, serving::Layout::AsLoaded);
    eprintln!("native DuckDB table as loaded in {:.1} s", loaded.load_s);
    let src = csv_source(files);
    let mut conn = Raw::connect(socket);
    println!(
        "\n### DuckDB-answered queries: socket against DuckDB over the raw CSVs\n\n\
         Socket: 3 warm-up, then up to 30 round trips (at most 20 s) per query, timed as \
         above (until the response line is read). DuckDB: the \
         same question as SQL over `read_csv` of the {} files (column types given), \
         in-process, a fresh in-memory connection per run, CSVs in the page cache; median of \
         3 runs. DuckDB native: the daemon's own SQL for the query on a native table of the same \
         rows (in-process, built once from the CSVs with the daemon's column types), timed as \
         the socket is (3 warm-up, then up to 30 runs, at most 20 s), median; on two such \
         tables: as loaded (`CREATE TABLE … AS SELECT … FROM read_csv(…)`: file after file, \
         each file's rows in its own order) and sorted by day, type and country across the \
         files (DuckDB's best case for a time range). Rows and the first column of every row \
         are compared.\n",
        files.len()
    );
    println!("| query | source | rows (socket / DuckDB) | same answer | socket p50 | socket max | in daemon p50 | DuckDB read_csv | speed-up | goal ≥ 10x | native as loaded | socket / as loaded | native by day | socket / by day | goal ≤ 1.5x (as loaded; by day) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let (mut to_loaded, mut to_by_day) = (Vec::new(), Vec::new());
    let mut texts = Vec::new();
    for (i, r) in routed_queries(user, auction).iter().enumerate() {
        let t = round_trips(
            &mut conn,
            &query_request(&r.query),
            3,
            30,
            Duration::from_secs(20),
        );
        let ours = first_column(&t.last);
        let sql = r.sql.replace("{src}", &src);
        let mut runs = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..3 {
            let (secs, col) = duckdb_raw(&sql);
            runs.push(secs * 1e3);
            theirs = col;
        }
        let duck = pct(&sorted(runs), 0.5);
        let p50 = pct(&t.read, 0.5);
        let ratio = duck / p50;
        ratios.push(ratio);
        let (loaded_ms, _) = loaded.time(&r.query, 3, 30, Duration::from_secs(20));
        let (by_day_ms, _) = by_day.time(&r.query, 3, 30, Duration::from_secs(20));
        let (vs_loaded, vs_by_day) = (p50 / loaded_ms, p50 / by_day_ms);
        to_loaded.push(vs_loaded);
        to_by_day.push(vs_by_day);
        let source = t.last["source"].as_str().unwrap_or("?").to_string();
        if source != r.source {
            eprintln!(
                "warning: query {} was answered by {source}, not {}",
                i + 1,
                r.source
            );
        }
        if ours != theirs {
            eprintln!(
                "warning: query {} differs: socket {} rows, DuckDB {} rows; first rows {:?} vs {:?}",
                i + 1,
                ours.len(),
                theirs.len(),
                &ours[..ours.len().min(3)],
                &theirs[..theirs.len().min(3)]
            );
        }
        println!(
            "| {}. {} | {source} | {} / {} | {} | {p50:.2} ms | {:.2} ms | {} | {duck:.0} ms | {ratio:.0}x | {} | {loaded_ms:.2} ms | {vs_loaded:.2}x | {by_day_ms:.2} ms | {vs_by_day:.2}x | {}; {} |",
            i + 1,
            r.label,
            ours.len(),
            theirs.len(),
            if ours == theirs { "yes" } else { "**no**" },
            t.read[t.read.len() - 1],
            server_p50(&t),
            mark(ratio >= 10.0),
            mark(vs_loaded <= 1.5),
            mark(vs_by_day <= 1.5)
        );
        texts.push((i + 1, r.query.to_string()));
    }
    let smallest = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "\nSmallest speed-up: {smallest:.0}x (goal ≥ 10x: {}).",
        mark(smallest >= 10.0)
    );
    for (name, ratios) in [("as loaded", &to_loaded), ("sorted by day", &to_by_day)] {
        let (i, slowest) = (ratios.iter().copied().enumerate())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        println!(
            "Largest socket / native ratio, native table {name}: {slowest:.2}x (query {}; \
             goal ≤ 1.5x: {}).",
            i + 1,
            mark(slowest <= 1.5)
        );
    }
    println!("\nThe queries:\n");
    for (i, t) in texts {
        println!("{i}. `{t}`");
    }
}

// ---------------------------------------------------------------------------------------
// 3. A file dropped into the folder until it is queryable
// ---------------------------------------------------------------------------------------

struct Landing {
    tracked: u64,
    fresh_mtime: bool,
    total: Duration,
    /// The daemon's own update time for the file (its "published" log line), ms.
    update_ms: Option<u64>,
    /// From the rename until that log line (the pass over, the next one may start).
    pass_done: Option<Duration>,
    /// Where the update's time went, from the daemon's log, if it says.
    breakdown: Option<String>,
}

/// Writes `name.tmp` into `watch`, then renames it to `name` and waits with
/// `min_generation` until a COUNT(*) includes its rows.
fn land(
    daemon: &Daemon,
    watch: &Path,
    name: &str,
    text: &[u8],
    rows: usize,
    fresh: bool,
) -> Landing {
    let mut client = daemon.client();
    let generation = sync(&mut client);
    let before = count_all(&mut client);
    let status = ask(&mut client, &json!({"op": "status"}));
    let tracked = status.line["files"]["tracked"].as_u64().unwrap();
    let tmp = watch.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(text).unwrap();
        f.sync_all().unwrap();
    }
    // Let the passes woken by writing the (ignored) temp file go by.
    std::thread::sleep(Duration::from_millis(500));
    let mtime = if fresh {
        SystemTime::now()
    } else {
        SystemTime::now() - Duration::from_secs(3600)
    };
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let from_log = daemon.log_len();
    let start = Instant::now();
    std::fs::rename(&tmp, watch.join(name)).unwrap();
    let mut want = generation + 1;
    loop {
        let q = json!({"select": [{"COUNT": "*"}], "from": "events"});
        let reply = ask(
            &mut client,
            &json!({"op": "query", "query": q, "format": "json",
                    "min_generation": want, "timeout_ms": 600_000}),
        );
        let n = reply.line["rows"][0][0].as_i64().unwrap();
        if n == before + rows as i64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the file never showed"
        );
        want = reply.line["generation"].as_u64().unwrap() + 1;
    }
    let total = start.elapsed();
    // The pass logs once update returns, which is after the publish (and whatever the
    // engine does after it); wait for it so the next drop starts on an idle daemon.
    let logged = daemon.published_after(from_log, Duration::from_secs(300), |l| {
        log_field(l, "added") == Some(1)
    });
    let breakdown = logged
        .as_ref()
        .and_then(|(at, _)| breakdown(daemon, from_log, *at));
    Landing {
        tracked,
        fresh_mtime: fresh,
        total,
        update_ms: logged.as_ref().and_then(|(_, l)| log_field(l, "ms")),
        pass_done: logged.map(|(at, _)| at.saturating_duration_since(start)),
        breakdown,
    }
}

/// The engine's "generation committed to the store" log lines (fold, merge, waiting for
/// DuckDB's appends, store) before the pass's "published" line read at `published`, and the time from the
/// last of them to that line (writing the rollup partitions, the manifest, publishing
/// and what follows). None if the daemon does not log them.
fn breakdown(daemon: &Daemon, from: usize, published: Instant) -> Option<String> {
    let lines = daemon.lines_since(from);
    let commits: Vec<&(Instant, String)> = lines
        .iter()
        .filter(|(at, l)| *at <= published && l.contains("committed"))
        .collect();
    let last = commits.last()?.0;
    let sum = |key: &str| -> Option<u64> { commits.iter().map(|(_, l)| log_field(l, key)).sum() };
    Some(format!(
        "{} · {} · {} · {} · {:.0}",
        sum("fold_ms")?,
        sum("merge_ms")?,
        sum("table_wait_ms")?,
        sum("store_ms")?,
        ms(published.saturating_duration_since(last))
    ))
}

fn landings(
    d10: &Daemon,
    w10: &Path,
    d49: &Daemon,
    w49: &Path,
    rows: usize,
    drops: usize,
    n_all: usize,
) -> f64 {
    let mut results: Vec<(usize, Landing)> = Vec::new();
    let mut mb = 0.0;
    // Interleaved, so drift in the machine's load hits both states alike; the same bytes
    // land in both. The last round renames in a file with an hour-old mtime.
    for k in 0..=drops {
        let fresh = k < drops;
        let text = rollupd::app::gen::sample_file(rows, 1000 + k as u64);
        mb = text.len() as f64 / 1e6;
        let name = format!("drop-{k}.csv");
        for (label, d, w) in [(10, d10, w10), (n_all, d49, w49)] {
            let l = land(d, w, &name, &text, rows, fresh);
            eprintln!(
                "dropped {name} into {label}: {:.3} s (daemon update {:?} ms, pass over at {:?})",
                l.total.as_secs_f64(),
                l.update_ms,
                l.pass_done
            );
            results.push((label, l));
        }
    }
    println!(
        "\n### File dropped to queryable\n\nOne new {rows}-row file ({:.1} MB) written as \
         `drop-N.csv.tmp` in the watched folder (ignored), fsynced, then renamed to \
         `drop-N.csv`; timed from the rename until a `{{\"op\":\"query\", \"min_generation\": \
         G+1}}` COUNT(*) answer includes its rows (one connection, the daemon's \
         `min_generation` wait). Daemons run with `--settle-ms {SETTLE_MS}`. A file renamed in \
         with a fresh mtime (set just before the rename: the usual case of a download or copy \
         finished moments ago) is held for the settle interval after the daemon first sees \
         it; one with an mtime older than the interval settles at once (last rows). The two \
         daemons (10 and {n_all} files folded) run side by side and drops alternate between \
         them; each drop stays, so later drops see a few more files. \"Daemon's update\" is \
         the `ms` of the daemon's own `published` log line (the whole `update`, including \
         what it does after publishing); \"pass over\" is when that line was read, from the \
         rename; the next drop waits for it. The breakdown comes from the daemon's log: its \
         engine's `fold_ms`, `merge_ms`, `table_wait_ms` (DuckDB's appends still running after \
         the merge) and `store_ms`, then the time from that \
         log line to the `published` one (the snapshot swap, which makes the file \
         queryable, then writing the changed rollup partitions and the manifest, and the DuckDB \
         checkpoint).\n",
        mb
    );
    println!("| files folded before | mtime at rename | rename → queryable | minus settle ({SETTLE_MS} ms) | daemon's update (its log) | rename → pass over | fold · merge · table wait · store · publish+write (ms) |");
    println!("|---|---|---|---|---|---|---|");
    for (_, l) in &results {
        let total = ms(l.total);
        let after = if l.fresh_mtime {
            format!("{:.0} ms", total - SETTLE_MS as f64)
        } else {
            "— (settled at once)".into()
        };
        println!(
            "| {} | {} | {total:.0} ms | {after} | {} | {} | {} |",
            l.tracked,
            if l.fresh_mtime { "fresh" } else { "1 h old" },
            l.update_ms.map_or("?".into(), |m| format!("{m} ms")),
            l.pass_done
                .map_or("?".into(), |d| format!("{:.0} ms", ms(d))),
            l.breakdown.as_deref().unwrap_or("—")
        );
    }
    let median = |label: usize| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(b, l)| *b == label && l.fresh_mtime)
            .map(|(_, l)| ms(l.total) - SETTLE_MS as f64)
            .collect();
        pct(&sorted(v), 0.5)
    };
    let old = |label: usize| {
        results
            .iter()
            .find(|(b, l)| *b == label && !l.fresh_mtime)
            .map_or(f64::NAN, |(_, l)| ms(l.total))
    };
    let (m10, m49) = (median(10), median(n_all));
    let (o10, o49) = (old(10), old(n_all));
    println!("\n| measure | ~10 files folded | ~{n_all} files folded | ratio {n_all}/10 | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| queryable after settling (fresh mtime, median of {drops}, minus {SETTLE_MS} ms) | {:.2} s | {:.2} s | {:.2}x | ≤ 1 s: {}; ratio 0.8–1.2x: {} |",
        m10 / 1e3,
        m49 / 1e3,
        m49 / m10,
        mark(m10 <= 1000.0 && m49 <= 1000.0),
        mark((0.8..=1.2).contains(&(m49 / m10)))
    );
    println!(
        "| rename → queryable, old mtime (settles at once) | {:.2} s | {:.2} s | {:.2}x | ≤ 1 s: {} |",
        o10 / 1e3,
        o49 / 1e3,
        o49 / o10,
        mark(o10 <= 1000.0 && o49 <= 1000.0)
    );
    m49
}

// ---------------------------------------------------------------------------------------
// 3b. An append and a delete until queryable, against the drop
// ---------------------------------------------------------------------------------------

/// Waits with `min_generation` from `generation + 1` on until COUNT(*) is `want`.
fn count_reaches(client: &mut Client, generation: u64, want: i64, start: Instant) -> Duration {
    let mut at = generation + 1;
    loop {
        let q = json!({"select": [{"COUNT": "*"}], "from": "events"});
        let reply = ask(
            client,
            &json!({"op": "query", "query": q, "format": "json",
                    "min_generation": at, "timeout_ms": 600_000}),
        );
        if reply.line["rows"][0][0].as_i64().unwrap() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the change never showed"
        );
        at = reply.line["generation"].as_u64().unwrap() + 1;
    }
}

/// On the daemon with every file folded: 10,000 rows appended to a dropped file, then
/// that file deleted, each timed until a COUNT(*) shows it; against `add_ms`, the drop's
/// median (fresh mtime, minus the settle interval).
fn append_and_delete(daemon: &Daemon, watch: &Path, name: &str, file_rows: usize, add_ms: f64) {
    let mut client = daemon.client();
    let path = watch.join(name);
    let tail = rollupd::app::gen::sample_file(10_000, 4242);
    let body = &tail[tail.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let generation = sync(&mut client);
    let before = count_all(&mut client);
    let start = Instant::now();
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(body).unwrap();
    }
    let append = ms(count_reaches(
        &mut client,
        generation,
        before + 10_000,
        start,
    ));
    let generation = sync(&mut client);
    let start = Instant::now();
    std::fs::remove_file(&path).unwrap();
    let rows = (file_rows + 10_000) as i64;
    let delete = ms(count_reaches(
        &mut client,
        generation,
        before + 10_000 - rows,
        start,
    ));
    // The delete's update goes on after it is queryable (restoring MIN and MAX, writing
    // the partitions); its log line says how long.
    sync(&mut client);
    println!(
        "\n### An append and a delete until queryable\n\nOn the daemon with every file \
         folded: 10,000 rows appended (one write) to `{name}`, timed from the write until a \
         `min_generation` COUNT(*) includes them; then the file deleted, timed the same way \
         until it no longer counts. Both against the drop above (fresh mtime, median, minus \
         the settle interval: {add:.0} ms). A delete is queryable once its sums and counts \
         are; MIN and MAX of the rollups it touched come from DuckDB until the same \
         generation is published again with them restored.\n",
        add = add_ms
    );
    println!("| change | queryable after | vs the drop | goal |");
    println!("|---|---|---|---|");
    let append_settled = append - SETTLE_MS as f64;
    println!(
        "| append 10,000 rows (minus settle, {SETTLE_MS} ms) | {append_settled:.0} ms | {:.2}x | ≤ 0.3x: {} |",
        append_settled / add_ms,
        mark(append_settled <= 0.3 * add_ms)
    );
    println!(
        "| delete the file | {delete:.0} ms | {:.2}x | ≤ 1x: {} |",
        delete / add_ms,
        mark(delete <= add_ms)
    );
}

// ---------------------------------------------------------------------------------------

/// The 1, 5 and 15 minute load averages (the machine is shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap().trim().to_string())
        })
        .unwrap_or_default()
}

struct Cold {
    files: u64,
    rows: u64,
    ready: Duration,
    synced: Duration,
    rss_mb: f64,
}

fn cold_build(d: &mut Daemon) -> Cold {
    let ready = d.wait_ready();
    let mut client = d.client();
    sync(&mut client);
    let synced = d.started.elapsed();
    let status = ask(&mut client, &json!({"op": "status"}));
    Cold {
        files: status.line["files"]["tracked"].as_u64().unwrap(),
        rows: status.line["rows"].as_u64().unwrap(),
        ready,
        synced,
        rss_mb: d.peak_rss_mb(),
    }
}

fn main() {
    common::require_release_duckdb();
    let a = args();
    let files = common::bench_data(&a.data, a.files, a.rows);
    let csv_bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    // `--queries-only` keeps its state between runs, so a rerun skips the cold build.
    let work = if a.queries_only {
        let w = a.data.join("work-queries");
        std::fs::create_dir_all(&w).unwrap();
        w
    } else {
        common::work_dir(&a.data, "work-daemon")
    };
    let (user, auction) = sample_ids(&files[0]);
    let ten = &files[..files.len().min(10)];

    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().unwrap(),
        cpu_model()
    );
    println!(
        "data: {} files x {} rows, {:.2} GB of CSV; daemon: `rollupd run --settle-ms {SETTLE_MS}` \
         (release build), measured at the client over its Unix socket",
        files.len(),
        a.rows,
        csv_bytes as f64 / 1e9
    );

    println!("load average at start: {}", load_average());

    // All files: cold build, then the query measurements on an idle daemon.
    let w49 = serving::linked_once(&files, &work.join("watch"));
    let mut d49 = Daemon::start(&w49, &work.join("state"));
    let c49 = cold_build(&mut d49);
    eprintln!(
        "cold build of {} files: {:.1} s",
        c49.files,
        c49.synced.as_secs_f64()
    );
    let native = serving::Native::load(&files, serving::Layout::ByDay);
    eprintln!("native DuckDB table loaded in {:.1} s", native.load_s);
    reference_latency(&d49.socket, a.iters);
    serving::random_mix(&d49.socket, &native, a.mix, 5);
    serving::large_answers(&d49.socket, &native);
    duckdb_routed(&d49.socket, &files, &native, user, &auction);
    drop(native);
    if a.queries_only {
        println!("\nload average at the end: {}", load_average());
        return;
    }

    // Ten files, in a second daemon, for the drop comparison.
    let w10 = common::linked(ten, &work.join("watch10"));
    let mut d10 = Daemon::start(&w10, &work.join("state10"));
    let c10 = cold_build(&mut d10);
    eprintln!(
        "cold build of {} files: {:.1} s",
        c10.files,
        c10.synced.as_secs_f64()
    );

    println!("\n### Cold build through the daemon (context)\n");
    println!(
        "| files | rows | start → socket answers | start → `sync` returns | daemon peak RSS |"
    );
    println!("|---|---|---|---|---|");
    for c in [&c49, &c10] {
        println!(
            "| {} | {} | {:.2} s | {:.1} s | {:.0} MB |",
            c.files,
            c.rows,
            c.ready.as_secs_f64(),
            c.synced.as_secs_f64(),
            c.rss_mb
        );
    }

    let add_ms = landings(&d10, &w10, &d49, &w49, a.rows, a.drops, files.len());
    append_and_delete(&d49, &w49, "drop-0.csv", a.rows, add_ms);

    println!("\n### Shutdown\n");
    println!("| daemon | SIGTERM → exit | exit status |");
    println!("|---|---|---|");
    for (label, d) in [(files.len(), &mut d49), (ten.len(), &mut d10)] {
        let (status, took) = d.stop();
        println!(
            "| {label} files | {:.2} s | {} |",
            took.as_secs_f64(),
            match status.code() {
                Some(0) => "0".to_string(),
                _ => format!("**{status}**"),
            }
        );
        let log = work.join(format!("rollupd-{label}.log"));
        std::fs::write(&log, d.log_text()).unwrap();
        eprintln!("the daemon's log: {}", log.display());
        for line in d.complaints() {
            eprintln!("rollupd ({label} files) logged: {line}");
        }
        if !status.success() {
            eprintln!("warning: rollupd ({label} files) did not exit 0: {status}");
        }
    }
    println!("\nload average at the end: {}", load_average());
}
