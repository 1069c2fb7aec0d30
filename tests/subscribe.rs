//! Subscriptions against the real daemon: one new answer per change that alters it,
//! none for a change that does not, and a subscriber that never reads holds nobody back.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rollupd::app::gen::sample_file;
use rollupd::daemon::client::Client;

use crate::util::{Daemon, Workspace};

const COUNT: &str = r#"{"select":[{"COUNT":"*"}]}"#;

fn count_query() -> Value {
    serde_json::from_str(COUNT).unwrap()
}

/// The data rows of a sample file (its lines after the header).
fn rows_only(rows: usize, seed: u64) -> Vec<u8> {
    let text = sample_file(rows, seed);
    let header = text.iter().position(|b| *b == b'\n').unwrap();
    text[header + 1..].to_vec()
}

/// The next subscription answer: its count and generation.
fn next(sub: &mut Client) -> (u64, u64) {
    let reply = sub.next_reply().expect("a subscription answer");
    assert!(reply.error().is_none(), "{}", reply.line);
    let line = &reply.line;
    (
        line["rows"][0][0].as_u64().unwrap(),
        line["generation"].as_u64().unwrap(),
    )
}

#[test]
fn a_subscriber_gets_one_answer_per_change_that_alters_it_and_none_for_a_touch() {
    let ws = Workspace::new();
    ws.write("a.csv", sample_file(300, 1));
    let daemon = Daemon::start(&ws, &[]);
    daemon.sync();
    let mut sub = daemon.client();
    let first = sub
        .request(&json!({"op": "subscribe", "query": count_query()}))
        .unwrap();
    assert_eq!(first.line["rows"][0][0], 300, "{}", first.line);

    ws.write("b.csv", sample_file(200, 2));
    let g = daemon.sync();
    assert_eq!(next(&mut sub), (500, g), "added");

    let a = ws.watch().join("a.csv");
    let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    f.write_all(&rows_only(50, 3)).unwrap();
    drop(f);
    let g = daemon.sync();
    assert_eq!(next(&mut sub), (550, g), "appended");

    // A touch changes nothing the answer depends on: no line for it. The next change's
    // answer is the next line.
    let old = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(old + Duration::from_secs(5))
        .unwrap();
    daemon.sync();
    std::fs::remove_file(ws.watch().join("b.csv")).unwrap();
    let g = daemon.sync();
    assert_eq!(next(&mut sub), (350, g), "deleted");

    // Other requests wait for the end of the subscription.
    let reply = sub.request(&json!({"op": "status"})).unwrap();
    assert_eq!(reply.error().unwrap().kind.name(), "bad_request");
    let reply = sub.request(&json!({"op": "unsubscribe"})).unwrap();
    assert_eq!(reply.line, json!({"ok": true, "unsubscribed": true}));
    let reply = sub.request(&json!({"op": "ping"})).unwrap();
    assert_eq!(reply.line, json!({"ok": true}));
}

#[test]
fn query_follow_prints_each_new_answer() {
    let ws = Workspace::new();
    ws.write("a.csv", sample_file(100, 1));
    let daemon = Daemon::start(&ws, &[]);
    daemon.sync();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollupd"))
        .current_dir(ws.tmp.path())
        .args([
            "query", "--state", "state", "--follow", "--format", "csv", COUNT,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let line = || rx.recv_timeout(Duration::from_secs(30)).expect("a line");
    assert_eq!(
        (line(), line()),
        ("COUNT(*)".to_string(), "100".to_string())
    );
    ws.write("b.csv", sample_file(20, 2));
    daemon.sync();
    assert_eq!(
        (line(), line()),
        ("COUNT(*)".to_string(), "120".to_string())
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Times a DuckDB-answered query and a file added until it is published.
fn query_and_ingest(daemon: &Daemon, ws: &Workspace, n: u64) -> Duration {
    let start = Instant::now();
    let q = json!({"select": ["user_id", {"COUNT": "*"}], "group_by": ["user_id"], "limit": 5});
    daemon.request(json!({"op": "query", "query": q}));
    ws.write(&format!("more-{n}.csv"), sample_file(2000, 10 + n));
    daemon.sync();
    start.elapsed()
}

#[test]
fn a_subscriber_that_never_reads_slows_no_query_and_no_ingest() {
    let ws = Workspace::new();
    ws.generate(2, 5000, 7);
    let daemon = Daemon::start(&ws, &[]);
    daemon.sync();
    let baseline = (0..3)
        .map(|n| query_and_ingest(&daemon, &ws, n))
        .max()
        .unwrap();
    // Answers of about a megabyte each, which no one reads: the socket's buffer fills.
    let raw = json!({"select": ["ts", "auction_id", "user_id", "country"], "limit": 100000});
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        writeln!(s, "{}", json!({"op": "subscribe", "query": raw})).unwrap();
        stalled.push(s);
    }
    daemon.status_until("four subscribers", |s| s["connections"]["subscribed"] == 4);
    let loaded = (3..8)
        .map(|n| query_and_ingest(&daemon, &ws, n))
        .max()
        .unwrap();
    assert!(
        loaded < baseline * 5 + Duration::from_secs(2),
        "with stalled subscribers {loaded:?}, without {baseline:?}"
    );
    let reply = daemon.request(json!({"op": "query", "query": count_query()}));
    assert_eq!(reply.line["rows"][0][0], 10_000 + 8 * 2000);
}

/// A delete is published twice (first with MIN and MAX from DuckDB, then with them
/// restored in the rollups) under one generation: a subscriber to a MIN/MAX answer gets
/// one line for it, equal to the answer once restored.
#[test]
fn a_delete_publishing_its_extremes_later_sends_one_answer() {
    let ws = Workspace::new();
    ws.write("a.csv", sample_file(400, 11));
    ws.write("b.csv", sample_file(400, 12));
    let daemon = Daemon::start(&ws, &[]);
    daemon.sync();
    let query = json!({
        "select": ["type", {"MIN": "bid_price"}, {"MAX": "bid_price"}, {"COUNT": "*"}],
        "group_by": ["type"],
        "order_by": [{"col": "type", "dir": "asc"}],
    });
    let mut sub = daemon.client();
    let first = sub
        .request(&json!({"op": "subscribe", "query": query}))
        .unwrap();
    assert!(first.error().is_none(), "{}", first.line);

    std::fs::remove_file(ws.watch().join("b.csv")).unwrap();
    let deleted = daemon.sync();
    let line = sub.next_reply().expect("an answer for the delete").line;
    assert_eq!(line["generation"], deleted, "{line}");
    let mut client = daemon.client();
    let restored = client
        .request(&json!({"op": "query", "query": query, "cache": false}))
        .unwrap()
        .line;
    assert_eq!(line["rows"], restored["rows"], "the answer once restored");

    // The next line is the next change's: none came for the restore.
    ws.write("c.csv", sample_file(100, 13));
    let added = daemon.sync();
    let line = sub.next_reply().expect("an answer for the add").line;
    assert_eq!(line["generation"], added, "{line}");
}
