//! Serving figures of the daemon bench: a random mix of rollup-answered queries, large
//! answers as JSON and Arrow, and DuckDB-answered shapes, each against DuckDB on a native
//! table of the same rows (built in-process from the CSVs, the daemon's own schema and
//! SQL).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duckdb::types::ToSqlOutput;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rollupd::model::schema::Zone;
use rollupd::query::plan::sql;
use rollupd::query::Query;
use serde_json::{json, Value as Json};

use super::{csv_source, mark, ms, pct, sorted, Raw};

/// DuckDB (the embedded build, in-process) on a native `events` table of the bench rows,
/// with the daemon's column types.
pub struct Native {
    conn: duckdb::Connection,
    pub load_s: f64,
}

/// The order of a native table's rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// As `CREATE TABLE … AS SELECT … FROM read_csv(…)` loads the files: file after file,
    /// each in its own order (the bench files are random partitions: each spans the year).
    AsLoaded,
    /// Sorted by day, type and country across all files, as the daemon sorts each file's
    /// rows: DuckDB's best case for a time range (a day's rows in a row group or two).
    ByDay,
}

impl Native {
    pub fn load(files: &[PathBuf], layout: Layout) -> Native {
        let start = Instant::now();
        let conn = duckdb::Connection::open_in_memory().expect("duckdb");
        let src = csv_source(files);
        let order = match layout {
            Layout::AsLoaded => "",
            Layout::ByDay => " ORDER BY day, \"type\", country",
        };
        conn.execute_batch(&format!(
            "CREATE TABLE events AS SELECT ts, \"type\", CAST(auction_id AS UUID) AS auction_id, \
             advertiser_id, publisher_id, CAST(bid_price AS DECIMAL(18, 9)) AS bid_price, \
             user_id, CAST(total_price AS DECIMAL(18, 9)) AS total_price, country, \
             CAST(epoch_ms(ts) AS DATE) AS day, CAST(floor(ts / 60000) AS INTEGER) AS local_minute \
             FROM {src}{order}"
        ))
        .expect("native table");
        Native {
            conn,
            load_s: start.elapsed().as_secs_f64(),
        }
    }

    /// The daemon's SQL for `query` run in full (every row read): `warm` runs, then at least
    /// 3 and up to `runs` until `budget` has passed. Returns the median ms of those and the
    /// rows.
    pub fn time(&self, query: &Json, warm: usize, runs: usize, budget: Duration) -> (f64, usize) {
        let q = Query::parse(query).expect("a valid query");
        let (text, params) = sql(&q, Zone::Utc);
        let bound = rollupd::storage::table::bind(&params);
        let mut stmt = self.conn.prepare(&text).expect("prepare");
        let mut run = || {
            let start = Instant::now();
            let batches = stmt
                .query_arrow(duckdb::params_from_iter(
                    bound.iter().map(ToSqlOutput::from),
                ))
                .expect("native query");
            let rows: usize = batches.map(|b| b.num_rows()).sum();
            (ms(start.elapsed()), rows)
        };
        for _ in 0..warm {
            run();
        }
        let (started, mut times, mut rows) = (Instant::now(), Vec::new(), 0);
        while times.len() < 3 || (times.len() < runs && started.elapsed() < budget) {
            let (t, r) = run();
            times.push(t);
            rows = r;
        }
        (pct(&sorted(times), 0.5), rows)
    }
}

impl Raw {
    /// One request, with the csv or arrow payload read too: (ms until the whole answer is
    /// read, the reply line, its rows, bytes in all); panics on an error reply. The time
    /// leaves out parsing the reply line (`parse_ms`).
    fn answer(&mut self, request: &Json) -> (f64, Json, usize, usize) {
        match self.try_answer(request) {
            Ok(a) => a,
            Err(head) => panic!("{request} failed: {head}"),
        }
    }

    /// `answer`, with an error reply given back as its line.
    fn try_answer(&mut self, request: &Json) -> Result<(f64, Json, usize, usize), Json> {
        let (start, response) = self.send(request);
        let line_read = start.elapsed();
        let parsing = Instant::now();
        let head: Json = serde_json::from_str(&response).expect("a JSON response line");
        let parse = parsing.elapsed();
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        self.read_payload(head["bytes"].as_u64().unwrap_or(0), &mut payload);
        let streamed = head["stream"] == Json::Bool(true);
        if streamed {
            self.read_chunks(&mut payload)?;
        }
        let took = match payload.is_empty() && !streamed {
            true => ms(line_read),
            false => ms(start.elapsed() - parse),
        };
        self.parse_ms = ms(parse);
        if head["ok"] != Json::Bool(true) {
            return Err(head);
        }
        let rows = match request["format"].as_str() {
            Some("arrow") => arrow_rows(&payload),
            Some("csv") => payload.iter().filter(|b| **b == b'\n').count() - 1,
            _ if head["stream"] == Json::Bool(true) => {
                let rows: Vec<serde::de::IgnoredAny> = serde_json::from_slice(&payload).unwrap();
                rows.len()
            }
            _ => head["rows"].as_array().map_or(0, Vec::len),
        };
        let bytes = response.len() + payload.len();
        self.payload = payload;
        Ok((took, head, rows, bytes))
    }

    /// Reads `n` bytes of payload onto the end of `payload`.
    fn read_payload(&mut self, n: u64, payload: &mut Vec<u8>) {
        let read = (&mut self.reader).take(n).read_to_end(payload).unwrap();
        assert_eq!(read as u64, n, "the payload ended early");
    }

    /// The chunks of a streamed reply, appended to `payload`, and its end line (given
    /// back when it is an error).
    fn read_chunks(&mut self, payload: &mut Vec<u8>) -> Result<(), Json> {
        loop {
            let mut size = String::new();
            self.reader.read_line(&mut size).unwrap();
            let n: usize = size.trim_end().parse().expect("a chunk's size");
            if n == 0 {
                break;
            }
            self.read_payload(n as u64, payload);
        }
        let mut end = String::new();
        self.reader.read_line(&mut end).unwrap();
        let end: Json = serde_json::from_str(&end).expect("an end line");
        match end["ok"] == Json::Bool(true) {
            true => Ok(()),
            false => Err(end),
        }
    }
}

fn arrow_rows(ipc: &[u8]) -> usize {
    arrow_ipc::reader::StreamReader::try_new(ipc, None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
}

/// A query request that the answer cache neither answers nor keeps.
fn request(query: &Json, format: &str) -> Json {
    json!({"op": "query", "query": query, "format": format, "cache": false})
}

/// `request`, its rows streamed in chunks.
fn streamed(query: &Json, format: &str) -> Json {
    let mut r = request(query, format);
    r["stream"] = json!(true);
    r
}

/// A query request the answer cache may answer.
fn cached_request(query: &Json) -> Json {
    json!({"op": "query", "query": query, "format": "json"})
}

/// Values the random queries filter on, asked of the daemon.
struct Domain {
    days: Vec<String>,
    countries: Vec<String>,
    advertisers: Vec<i64>,
    publishers: Vec<i64>,
}

impl Domain {
    fn ask(conn: &mut Raw) -> Domain {
        let mut column = |col: &str| -> Vec<Json> {
            let q = json!({"select": [col], "group_by": [col]});
            let (_, head, _, _) = conn.answer(&request(&q, "json"));
            head["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[0].clone())
                .filter(|v| !v.is_null())
                .collect()
        };
        let text = |v: Vec<Json>| v.iter().map(|x| x.as_str().unwrap().to_string()).collect();
        let int = |v: Vec<Json>| v.iter().map(|x| x.as_i64().unwrap()).collect();
        Domain {
            days: text(column("day")),
            countries: text(column("country")),
            advertisers: int(column("advertiser_id")),
            publishers: int(column("publisher_id")),
        }
    }

    /// A random rollup-answerable query: group-by, filters and aggregates drawn from the
    /// columns of one of the default rollups.
    fn query(&self, rng: &mut impl Rng) -> Json {
        let specs = rollupd::rollup::default_specs();
        let spec = specs.choose(rng).unwrap();
        let mut cols: Vec<&str> = spec.dims.iter().map(|d| d.column().name()).collect();
        if let Some(g) = spec.grain {
            let coarser = ["minute", "hour", "day", "week"];
            let at = coarser.iter().position(|c| *c == g.name()).unwrap();
            cols.push(coarser[rng.gen_range(at..coarser.len())]);
        }
        let n = rng.gen_range(0..=cols.len().min(2));
        let group: Vec<&str> = cols.choose_multiple(rng, n).copied().collect();
        let mut filters = Vec::new();
        for _ in 0..rng.gen_range(0..=2) {
            filters.push(self.filter(cols.choose(rng).unwrap(), rng));
        }
        // Minute and hour answers over every day are large answers, measured apart.
        if group.iter().any(|c| *c == "minute" || *c == "hour") {
            let d = self.days.choose(rng).unwrap();
            filters.push(json!({"col": "day", "op": "eq", "val": d}));
        }
        let aggs = [
            json!({"COUNT": "*"}),
            json!({"SUM": "bid_price"}),
            json!({"AVG": "total_price"}),
            json!({"MAX": "bid_price"}),
            json!({"COUNT": "total_price"}),
        ];
        let mut select: Vec<Json> = group.iter().map(|c| json!(c)).collect();
        let k = rng.gen_range(1..=2);
        select.extend(aggs.choose_multiple(rng, k).cloned());
        let mut q = json!({"select": select, "where": filters, "group_by": group});
        if !group.is_empty() && rng.gen_bool(0.4) {
            let label = [
                "COUNT(*)",
                "SUM(bid_price)",
                "AVG(total_price)",
                "MAX(bid_price)",
            ];
            let by = match rng.gen_bool(0.5) {
                true => group[0].to_string(),
                false => label.choose(rng).unwrap().to_string(),
            };
            if q["select"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| label_of(s) == by)
            {
                q["order_by"] = json!([{"col": by, "dir": "desc"}]);
                q["limit"] = json!(rng.gen_range(1..=100));
            }
        }
        q
    }

    fn filter(&self, col: &str, rng: &mut impl Rng) -> Json {
        let value = |rng: &mut dyn rand::RngCore| -> Json {
            match col {
                "type" => json!(["serve", "impression", "click", "purchase"]
                    .choose(rng)
                    .unwrap()),
                "country" => json!(self.countries.choose(rng).unwrap()),
                "advertiser_id" => json!(self.advertisers.choose(rng).unwrap()),
                "publisher_id" => json!(self.publishers.choose(rng).unwrap()),
                _ => json!(self.days.choose(rng).unwrap()),
            }
        };
        let col = if ["minute", "hour", "week"].contains(&col) {
            "day"
        } else {
            col
        };
        match rng.gen_range(0..4) {
            0 => json!({"col": col, "op": "eq", "val": value(rng)}),
            1 => json!({"col": col, "op": "neq", "val": value(rng)}),
            2 => {
                let vals: Vec<Json> = (0..rng.gen_range(2..8)).map(|_| value(rng)).collect();
                json!({"col": col, "op": "in", "val": vals})
            }
            _ => {
                let (a, b) = (value(rng), value(rng));
                let (lo, hi) = if ordered(&a, &b) { (a, b) } else { (b, a) };
                json!({"col": col, "op": "between", "val": [lo, hi]})
            }
        }
    }
}

fn label_of(item: &Json) -> String {
    match item {
        Json::String(s) => s.clone(),
        Json::Object(m) => {
            let (f, c) = m.iter().next().unwrap();
            format!("{f}({})", c.as_str().unwrap())
        }
        _ => String::new(),
    }
}

/// The random mix: p50/p99 at the client over answers up to 10k rows, each query once
/// per round, against DuckDB on the native table.
pub fn random_mix(socket: &Path, native: &Native, n: usize, rounds: usize) {
    let mut conn = Raw::connect(socket);
    let domain = Domain::ask(&mut conn);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
    let queries: Vec<Json> = (0..n).map(|_| domain.query(&mut rng)).collect();
    let mut times = Vec::new();
    let mut cached_times = Vec::new();
    let mut parsed_times = Vec::new();
    let mut tail: Vec<(f64, usize, String)> = Vec::new();
    let mut worst = (f64::INFINITY, String::new());
    let (mut large, mut slower, mut rollup, mut refused) = (0, 0, 0, 0);
    for q in &queries {
        let req = request(q, "json");
        let Ok((_, head, rows, _)) = conn.try_answer(&req) else {
            refused += 1;
            continue;
        };
        if !head["source"].as_str().unwrap().starts_with("rollup:") {
            continue;
        }
        rollup += 1;
        let (mut mine, mut parsed) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = conn.answer(&req).0;
            mine.push(t);
            parsed.push(t + conn.parse_ms);
        }
        let mine = pct(&sorted(mine), 0.5);
        // With the cache: the first answer is kept, the next ones come from the cache.
        let cached = cached_request(q);
        conn.answer(&cached);
        let hits: Vec<f64> = (0..rounds).map(|_| conn.answer(&cached).0).collect();
        let (theirs, _) = native.time(q, 0, 3, Duration::ZERO);
        if theirs / mine < worst.0 {
            worst = (theirs / mine, q.to_string());
        }
        slower += usize::from(mine > theirs);
        if rows <= 10_000 {
            times.push(mine);
            parsed_times.push(pct(&sorted(parsed), 0.5));
            cached_times.push(pct(&sorted(hits), 0.5));
            tail.push((mine, rows, q.to_string()));
        } else {
            large += 1;
        }
    }
    let times = sorted(times);
    let (p50, p99) = (pct(&times, 0.5), pct(&times, 0.99));
    let cached_times = sorted(cached_times);
    let (c50, c99) = (pct(&cached_times, 0.5), pct(&cached_times, 0.99));
    println!(
        "\n### Rollup-answered random mix through the socket\n\n{n} random queries drawn \
         from the default rollups' columns (group-by of up to two of them, up to two filters \
         with eq, neq, in or between, one or two aggregates, sometimes order_by + limit; \
         minute and hour groups restricted to one day), seed 10; {rollup} answered from a \
         rollup. Each query's time is the median of {rounds} runs at the client until the \
         whole `json` answer is read (its parse into a JSON value apart), with the answer cache off (`\"cache\": false`); then \
         with it on: one answer to fill it, then the median of {rounds} answers from it. \
         DuckDB: the daemon's own SQL for the query on the native table, median of 3.\n"
    );
    println!("| measure | value | goal |\n|---|---|---|");
    println!(
        "| p50 / p99, answers ≤ 10k rows ({} queries), cache off | {p50:.3} / {p99:.3} ms | ≤ 0.5 / 2 ms: {} |",
        times.len(),
        mark(p50 <= 0.5 && p99 <= 2.0)
    );
    let parsed_times = sorted(parsed_times);
    println!(
        "| p50 / p99, the same, with the client's parse of each reply line into a JSON value | {:.3} / {:.3} ms | |",
        pct(&parsed_times, 0.5),
        pct(&parsed_times, 0.99)
    );
    println!("| p50 / p99, the same queries, answer cache on | {c50:.3} / {c99:.3} ms | |");
    println!("| answers over 10k rows (in the mix, measured apart below) | {large} | |");
    println!("| refused as over the 1 M row cap (`too_large`) | {refused} | |");
    println!(
        "| queries slower than DuckDB on the native table | {slower} of {rollup} | 0: {} |",
        mark(slower == 0)
    );
    println!(
        "| smallest speed-up over the native table | {:.1}x | ≥ 1x |\n\nSlowest against DuckDB: `{}`",
        worst.0, worst.1
    );
    tail.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\nSlowest answers of ≤ 10k rows, cache off:\n");
    for (t, rows, q) in tail.iter().take(3) {
        println!("- {t:.3} ms, {rows} rows: `{q}`");
    }
}

/// Timed runs of each large answer (their median is reported): enough that a slow
/// stretch of a shared machine moves few of them.
const LARGE_RUNS: usize = 11;

/// Large answers: rows per second at the client, json and arrow, against the native table.
pub fn large_answers(socket: &Path, native: &Native) {
    let queries = [
        (
            "advertiser x publisher, 900k of 1.27M groups",
            json!({"select": ["advertiser_id", "publisher_id", {"COUNT": "*"}, {"SUM": "bid_price"}], "group_by": ["advertiser_id", "publisher_id"], "limit": 900_000}),
        ),
        (
            "every minute, all days",
            json!({"select": ["minute", {"COUNT": "*"}, {"SUM": "bid_price"}], "group_by": ["minute"]}),
        ),
        (
            "hour x country, all days",
            json!({"select": ["hour", "country", {"COUNT": "*"}], "group_by": ["hour", "country"]}),
        ),
        (
            "day x publisher, impressions, top 500k by spend",
            json!({"select": ["day", "publisher_id", {"SUM": "bid_price"}], "where": [{"col": "type", "op": "eq", "val": "impression"}], "group_by": ["day", "publisher_id"], "order_by": [{"col": "SUM(bid_price)", "dir": "desc"}], "limit": 500_000}),
        ),
    ];
    let mut conn = Raw::connect(socket);
    println!(
        "\n### Large answers through the socket\n\nMedian of {LARGE_RUNS} runs after one warm-up, timed \
         at the client until the whole answer is read: whole (the `json` line, or the line \
         and the Arrow IPC payload) and streamed (`\"stream\": true`: the reply line, the \
         chunks and the end line). DuckDB: the daemon's SQL on the native table, reading \
         every row as Arrow in-process, median of 3. Rates are rows per second.\n"
    );
    println!("| query | source | rows | json | json streamed | arrow | arrow streamed | arrow streamed rows/s | DuckDB native | json / native | arrow streamed / native |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // The slowest rate of each way: json, json streamed, arrow, arrow streamed.
    let mut slowest = [f64::INFINITY; 4];
    for (label, q) in &queries {
        let mut run = |request: Json| {
            let (_, head, rows, _) = conn.answer(&request);
            let t: Vec<f64> = (0..LARGE_RUNS).map(|_| conn.answer(&request).0).collect();
            (
                pct(&sorted(t), 0.5),
                rows,
                head["source"].as_str().unwrap().to_string(),
            )
        };
        let (j, rows, source) = run(request(q, "json"));
        let (js, _, _) = run(streamed(q, "json"));
        let (a, arows, _) = run(request(q, "arrow"));
        let (s, srows, _) = run(streamed(q, "arrow"));
        assert_eq!((rows, rows), (arows, srows), "{label}");
        let (d, drows) = native.time(q, 0, 3, Duration::ZERO);
        assert_eq!(rows, drows, "{label}");
        let rate = |t: f64| rows as f64 / t * 1e3;
        for (min, t) in slowest.iter_mut().zip([j, js, a, s]) {
            *min = min.min(rate(t));
        }
        println!(
            "| {label} | {source} | {rows} | {j:.1} ms ({:.2} M) | {js:.1} ms ({:.2} M) | {a:.1} ms ({:.2} M) | {s:.1} ms | {:.2} M | {d:.1} ms | {:.2}x | {:.2}x |",
            rate(j) / 1e6,
            rate(js) / 1e6,
            rate(a) / 1e6,
            rate(s) / 1e6,
            j / d,
            s / d
        );
    }
    let [j, js, a, s] = slowest.map(|r| r / 1e6);
    println!(
        "\nSlowest: json {j:.2} M rows/s, streamed {js:.2} M (goal ≥ 1 M: {}); arrow {a:.2} M \
         rows/s, streamed {s:.2} M (goal ≥ 10 M: {}).",
        mark(j.max(js) >= 1.0),
        mark(a.max(s) >= 10.0)
    );
}

/// `common::linked`, keeping a folder already linked (a `--queries-only` rerun).
pub fn linked_once(files: &[PathBuf], dir: &Path) -> PathBuf {
    if dir.is_dir() {
        return dir.to_path_buf();
    }
    super::common::linked(files, dir)
}

/// Whether `a` ≤ `b`, as numbers or as text.
fn ordered(a: &Json, b: &Json) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x <= y,
        _ => a.as_str() <= b.as_str(),
    }
}
