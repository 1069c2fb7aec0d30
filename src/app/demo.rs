//! `rollupd demo`: a first run that explains itself. It generates sample data into the
//! state folder's `inbox`, starts the daemon on it with a progress bar during the cold
//! build, answers the five reference queries through the socket, and says how to go on.
//! In a terminal the daemon then keeps serving until Ctrl-C; otherwise it stops.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value as Json;

use crate::app::config::{Config, Folders};
use crate::app::gen::{generate, GenOptions};
use crate::daemon::client::Client;
use crate::daemon::protocol::{Format, Request};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::ingest::watch::scan_folder;

/// The five reference queries (docs/reference-queries.json), with what each asks.
const REFERENCE: &str = include_str!("../../docs/reference-queries.json");
const ASKS: [&str; 5] = [
    "impression spend per day",
    "impression spend per publisher in Japan, 2024-10-20 to 2024-10-23",
    "average purchase value per country",
    "events per advertiser and type",
    "impression spend per minute on 2024-06-01",
];

pub fn run(state: &Path, files: usize, rows_per_file: usize) -> Result<()> {
    let inbox = state.join("inbox");
    let mut csvs = scan_folder(&inbox, false).unwrap_or_default();
    if csvs.is_empty() {
        println!(
            "Generating {files} sample CSV files of {rows_per_file} ad events into {} …",
            inbox.display()
        );
        csvs = generate(
            &inbox,
            &GenOptions {
                files,
                rows_per_file,
                seed: 1,
            },
        )
        .map_err(|e| Error::io(&inbox, e))?
        .files;
    }
    let total: u64 = csvs
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    let mut config = Config::with_folders(&Folders::current());
    config.watch = inbox.clone();
    config.state = state.to_path_buf();
    config.settle_ms = 200;
    let socket = config.socket();
    println!(
        "Starting the daemon: watching {}, state in {}, socket {}",
        inbox.display(),
        state.display(),
        socket.display()
    );
    let mut daemon = Daemon::start(config.daemon_options()?)?;
    let generation = cold_build(&daemon, total, csvs.len())?;
    println!("Generation {generation} is published.\n");

    let mut client = Client::connect(&socket)?;
    let queries: Vec<Json> = serde_json::from_str(REFERENCE).expect("reference queries");
    for (i, (q, asks)) in queries.iter().zip(ASKS).enumerate() {
        let reply = client.send(&Request::query(q.clone(), Format::Json))?;
        if let Some(crate::daemon::protocol::ErrorBody { kind, message: msg }) = reply.error() {
            return Err(Error::Internal(format!(
                "reference query {}: {kind}: {msg}",
                i + 1
            )));
        }
        print_answer(i + 1, asks, &reply.line);
    }
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "rollupd".to_string());
    println!("From another terminal, while this runs:");
    println!("  {exe} status --state {}", state.display());
    println!(
        "  {exe} query --state {} '{{\"select\":[\"country\",{{\"COUNT\":\"*\"}}],\"group_by\":[\"country\"]}}'",
        state.display()
    );
    println!(
        "  {exe} query --state {} -f docs/reference-queries.json",
        state.display()
    );
    println!(
        "and drop more CSV files into {}: they are folded within a second or two.",
        inbox.display()
    );
    if std::io::stdout().is_terminal() {
        println!("\nThe daemon keeps running; Ctrl-C stops it.");
        if let Err(e) = daemon.wait_for_signal() {
            daemon.abandon();
            return Err(e);
        }
    }
    daemon.stop();
    Ok(())
}

/// Waits for the first `sync` with a progress bar (bytes parsed, rows/s, ETA); returns
/// the published generation.
fn cold_build(daemon: &Daemon, total: u64, files: usize) -> Result<u64> {
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} folding [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg} ETA {eta}",
        )
        .expect("progress template"),
    );
    let stats = daemon.engine().stats();
    let parsed_before = stats
        .bytes_parsed
        .load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut sync = daemon.handle().ingest.sync();
    let outcome = loop {
        match sync.try_recv() {
            Ok(r) => break r,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            Err(_) => break Err("ingest stopped".to_string()),
        }
        let parsed = stats
            .bytes_parsed
            .load(std::sync::atomic::Ordering::Relaxed)
            - parsed_before;
        let rows = stats.rows_folded.load(std::sync::atomic::Ordering::Relaxed);
        let per_sec = rows as f64 / start.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(parsed.min(total));
        bar.set_message(format!("{files} files, {rows} rows, {per_sec:.0} rows/s"));
        std::thread::sleep(Duration::from_millis(100));
    };
    bar.finish_and_clear();
    let generation = outcome.map_err(Error::Internal)?;
    let rows: u64 = daemon.engine().files()?.iter().map(|r| r.rows).sum();
    let parsed = stats
        .bytes_parsed
        .load(std::sync::atomic::Ordering::Relaxed)
        - parsed_before;
    if parsed == 0 {
        println!("Already folded: {files} files, {rows} rows; nothing changed since.");
    } else {
        println!(
            "Folded {files} files ({rows} rows, {:.1} MB parsed) in {:.1} s.",
            parsed as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(generation)
}

/// Prints a query's answer: what it asks, where it came from, and its first rows.
fn print_answer(n: usize, asks: &str, line: &Json) {
    let rows = line["rows"].as_array().cloned().unwrap_or_default();
    println!(
        "{n}. {asks}: {} rows from {} in {} µs",
        rows.len(),
        line["source"].as_str().unwrap_or("?"),
        line["elapsed_us"]
    );
    let columns: Vec<String> = line["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap_or("?").to_string())
        .collect();
    println!("   {}", columns.join(" | "));
    for row in rows.iter().take(3) {
        let cells: Vec<String> = row
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| match v {
                Json::String(s) => s.clone(),
                Json::Null => "NULL".into(),
                Json::Number(x) => match x.as_f64() {
                    Some(f) if x.is_f64() => format!("{f:.4}"),
                    _ => x.to_string(),
                },
                other => other.to_string(),
            })
            .collect();
        println!("   {}", cells.join(" | "));
    }
    if rows.len() > 3 {
        println!("   … {} more", rows.len() - 3);
    }
    println!();
}
