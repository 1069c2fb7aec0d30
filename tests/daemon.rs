//! The daemon through its real socket: files changing under it, many clients at once,
//! crashes, bad requests, and shutdown.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use rollupd::app::gen::sample_file;

use crate::oracle::{assert_same, oracle, query_context, random_query};
use crate::util::{reference_queries, Daemon, Workspace};

/// Reference queries and `random` seeded random queries, through the socket, must equal
/// DuckDB over the files now in the folder.
pub fn assert_equivalent(
    d: &Daemon,
    ws: &Workspace,
    rng: &mut ChaCha8Rng,
    random: usize,
    when: &str,
) {
    assert_equivalent_to(d, &ws.files(), rng, random, when);
}

/// Like `assert_equivalent`, against DuckDB over `files`.
pub fn assert_equivalent_to(
    d: &Daemon,
    files: &[std::path::PathBuf],
    rng: &mut ChaCha8Rng,
    random: usize,
    when: &str,
) {
    let files = files.to_vec();
    let mut queries = reference_queries();
    let ctx = query_context(&files);
    queries.extend((0..random).map(|_| random_query(rng, &ctx)));
    let mut client = d.client();
    for q in queries {
        let reply = client.request(&json!({"op": "query", "query": q})).unwrap();
        assert!(reply.error().is_none(), "{when}: {q} → {}", reply.line);
        let columns: Vec<String> = serde_json::from_value(reply.line["columns"].clone()).unwrap();
        let rows: Vec<Vec<Value>> = serde_json::from_value(reply.line["rows"].clone()).unwrap();
        let want = oracle(&files, &q).unwrap();
        if let Err(e) = assert_same(&q, &columns, &rows, &want) {
            panic!("{when}: {e}");
        }
    }
}

pub fn bytes_parsed(d: &Daemon) -> u64 {
    d.status()["bytes_parsed"].as_u64().unwrap()
}

#[test]
fn files_changing_under_the_daemon_equal_duckdb_after_sync() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let ws = Workspace::new();
    let initial = ws.generate(2, 3_000, 1);
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 10, "initial files");

    // Written slowly in chunks cut mid-line, with one pause longer than the settle
    // interval: the daemon may see (and fail on, or fold) a half-written file first.
    let text = sample_file(4_000, 11);
    let path = ws.watch().join("slow.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    let cuts = [
        0,
        text.len() / 5 + 7,
        text.len() / 2 + 3,
        text.len() * 4 / 5 + 1,
        text.len(),
    ];
    for (i, w) in cuts.windows(2).enumerate() {
        f.write_all(&text[w[0]..w[1]]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(if i == 1 { 500 } else { 40 }));
    }
    drop(f);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 10, "written in chunks");

    // Renamed in from a name the daemon ignores.
    let part = ws.write("incoming.csv.part", sample_file(2_500, 12));
    std::fs::rename(&part, ws.watch().join("incoming.csv")).unwrap();
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 10, "renamed in");

    // Appended to: only the tail is parsed.
    let before = bytes_parsed(&d);
    let tail = sample_file(700, 13);
    let tail = &tail[tail.iter().position(|b| *b == b'\n').unwrap() + 1..];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&initial[0])
        .unwrap()
        .write_all(tail)
        .unwrap();
    d.sync();
    assert_eq!(bytes_parsed(&d) - before, tail.len() as u64, "append");
    assert_equivalent(&d, &ws, &mut rng, 10, "appended");

    // Rewritten with other content.
    std::fs::write(&initial[1], sample_file(1_800, 14)).unwrap();
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 10, "rewritten");

    // Renamed and touched: nothing parsed.
    let before = bytes_parsed(&d);
    std::fs::rename(&initial[0], ws.watch().join("renamed.csv")).unwrap();
    let touched = std::fs::File::options().append(true).open(&path).unwrap();
    touched
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(5))
        .unwrap();
    drop(touched);
    d.sync();
    assert_eq!(bytes_parsed(&d), before, "rename and touch parse nothing");
    assert_equivalent(&d, &ws, &mut rng, 5, "renamed and touched");

    // Deleted.
    std::fs::remove_file(ws.watch().join("incoming.csv")).unwrap();
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 10, "deleted");

    let files = d.request(json!({"op": "files"})).line;
    let states: Vec<&str> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["folded"; ws.files().len()], "{files}");
    let socket = d.socket.clone();
    d.stop();
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

#[test]
fn clients_see_whole_generations_while_files_come_and_go() {
    let ws = Workspace::new();
    let pool = ws.tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    // Files of distinct sizes, so a count names the set of files it came from.
    let rows: Vec<u64> = (0..6).map(|i| 1_000 + 173 * i).collect();
    for (i, n) in rows.iter().enumerate() {
        std::fs::write(
            pool.join(format!("f{i}.csv")),
            sample_file(*n as usize, 40 + i as u64),
        )
        .unwrap();
    }
    let mut present = vec![false; rows.len()];
    for (i, p) in present.iter_mut().enumerate().take(2) {
        let name = format!("f{i}.csv");
        std::fs::rename(pool.join(&name), ws.watch().join(&name)).unwrap();
        *p = true;
    }
    let d = Daemon::start(&ws, &[]);
    let total = |present: &[bool]| -> u64 {
        rows.iter()
            .zip(present)
            .filter(|(_, p)| **p)
            .map(|(r, _)| r)
            .sum()
    };
    let mut expected = BTreeMap::new();
    expected.insert(d.sync(), total(&present));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let queries = [
        json!({"select": [{"COUNT": "*"}], "from": "events"}),
        // Not covered by a rollup: answered by DuckDB.
        json!({"select": [{"COUNT": "*"}], "from": "events",
               "where": [{"col": "ts", "op": "gte", "val": 0}]}),
    ];
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (stop, seen, socket) = (stop.clone(), seen.clone(), d.socket.clone());
            let queries = queries.clone();
            std::thread::spawn(move || {
                let mut client = rollupd::daemon::client::Client::connect(&socket).unwrap();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let q = &queries[i % 2];
                    i += 1;
                    let reply = client.request(&json!({"op": "query", "query": q})).unwrap();
                    assert!(reply.error().is_none(), "{}", reply.line);
                    seen.lock().unwrap().push((
                        reply.line["generation"].as_u64().unwrap(),
                        reply.line["rows"][0][0].as_u64().unwrap(),
                        reply.line["source"].as_str().unwrap().to_string(),
                    ));
                }
            })
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for _ in 0..12 {
        // One change at a time, so each sync's generation is exactly one set of files.
        let i = rng.gen_range(0..rows.len());
        let (from, to) = if present[i] {
            (ws.watch(), pool.clone())
        } else {
            (pool.clone(), ws.watch())
        };
        let name = format!("f{i}.csv");
        std::fs::rename(from.join(&name), to.join(&name)).unwrap();
        present[i] = !present[i];
        expected.insert(d.sync(), total(&present));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client failed");
    }
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 100, "only {} answers", seen.len());
    assert!(seen.iter().any(|(_, _, s)| s == "duckdb"));
    assert!(seen.iter().any(|(_, _, s)| s.starts_with("rollup:")));
    for (generation, count, source) in seen.iter() {
        assert_eq!(
            expected.get(generation),
            Some(count),
            "generation {generation} from {source}: count {count} is not that of a whole set \
             of files (expected per generation: {expected:?})"
        );
    }
}

#[test]
fn killed_daemons_recover_without_reparsing_unchanged_files() {
    let mut rng = ChaCha8Rng::seed_from_u64(4243);
    let ws = Workspace::new();
    ws.generate(3, 20_000, 21);
    let d = Daemon::start(&ws, &[]);
    d.sync();
    d.kill();
    // Kills land within the first two thirds of the time a daemon takes here from its
    // start until `sync` returns for one round's change (the rest is publishing, after
    // the commit), so most of them interrupt the update; the rounds that did are counted
    // below. The failpoint tests kill the process at each later step.
    ws.write("probe.csv", sample_file(15_000, 199));
    let started = Instant::now();
    let d = Daemon::start(&ws, &[]);
    d.sync();
    let window = started.elapsed().as_millis() as u64 * 2 / 3;
    d.kill();
    // Rounds go on (up to 24) until three kills have interrupted an update: how many land
    // in time depends on the machine's load.
    let mut interrupted = 0;
    for round in 0..24u64 {
        if round >= 8 && interrupted >= 3 {
            break;
        }
        let text = sample_file(15_000, 200 + round);
        ws.write(&format!("round-{round}.csv"), &text);
        if round % 3 == 2 {
            std::fs::remove_file(ws.watch().join(format!("round-{}.csv", round - 1))).unwrap();
        }
        let d = Daemon::spawn(&ws, &[]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..window)));
        d.kill();
        let d = Daemon::start(&ws, &[]);
        d.sync();
        let parsed = bytes_parsed(&d);
        if parsed > 0 {
            interrupted += 1;
        }
        assert!(
            parsed <= text.len() as u64,
            "round {round}: parsed {parsed} bytes after the crash, only {} changed (rebuilt \
             on open: {})",
            text.len(),
            d.status()["rebuilt"]
        );
        d.sync();
        assert_eq!(
            bytes_parsed(&d),
            parsed,
            "round {round}: nothing changed since"
        );
        d.kill();
    }
    // A kill after the commit proves nothing; without enough before it the test is void.
    assert!(
        interrupted >= 3,
        "only {interrupted} of 24 kills landed before the change was committed \
         (kill window {window} ms)"
    );
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 20, "after the crashes");
    let files = ws.files();
    let count = d.request(json!({"op": "query", "query": {"select": [{"COUNT": "*"}],
        "where": [{"col": "ts", "op": "gte", "val": 0}]}}));
    let want = oracle(&files, &json!({"select": [{"COUNT": "*"}]})).unwrap();
    assert_eq!(count.line["rows"][0][0], want.rows[0][0]);
    d.stop();
}

/// A raw connection for misbehaving on purpose.
fn raw(d: &Daemon) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn read_line(r: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// Another client is served normally.
fn others_are_fine(d: &Daemon) {
    let reply = d.request(json!({"op": "query", "query": {"select": [{"COUNT": "*"}]}}));
    assert!(reply.line["rows"][0][0].as_u64().unwrap() > 0);
}

fn small_daemon() -> (Workspace, Daemon) {
    let ws = Workspace::new();
    ws.generate(2, 5_000, 3);
    let d = Daemon::start(&ws, &[]);
    d.sync();
    (ws, d)
}

#[test]
fn a_request_that_is_not_json_gets_bad_request_and_the_connection_goes_on() {
    let (_ws, d) = small_daemon();
    let (mut w, mut r) = raw(&d);
    w.write_all(b"this is not json\n{\"op\":\"ping\"}\n")
        .unwrap();
    let err = read_line(&mut r);
    assert_eq!(err["ok"], false);
    assert_eq!(err["error"]["kind"], "bad_request", "{err}");
    assert_eq!(read_line(&mut r), json!({"ok": true}));
    others_are_fine(&d);
}

#[test]
fn an_unknown_op_gets_bad_request() {
    let (_ws, d) = small_daemon();
    let (mut w, mut r) = raw(&d);
    w.write_all(b"{\"op\":\"drop_everything\"}\n").unwrap();
    let err = read_line(&mut r);
    assert_eq!(err["error"]["kind"], "bad_request", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("drop_everything"));
    let (mut w, mut r) = raw(&d);
    w.write_all(b"{\"op\":\"query\",\"query\":{\"select\":[\"nope\"]}}\n")
        .unwrap();
    let err = read_line(&mut r);
    assert_eq!(err["error"]["kind"], "invalid_query", "{err}");
    others_are_fine(&d);
}

#[test]
fn a_100_mb_request_line_is_refused_without_affecting_others() {
    let (_ws, d) = small_daemon();
    let (mut w, mut r) = raw(&d);
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            if w.write_all(&chunk).is_err() {
                return false; // the daemon closed the connection
            }
        }
        true
    });
    others_are_fine(&d);
    let err = read_line(&mut r);
    assert_eq!(err["error"]["kind"], "too_large", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_request_bytes"));
    assert!(
        !writer.join().unwrap(),
        "the daemon read the whole 100 MB line"
    );
    others_are_fine(&d);
}

#[test]
fn a_client_that_never_reads_does_not_hold_up_others() {
    let (_ws, d) = small_daemon();
    let (mut w, _r) = raw(&d);
    // Many large answers, never read: the daemon's writes to this client block.
    let big = json!({"op": "query", "format": "csv", "query": {
        "select": ["ts", "auction_id", "user_id", "country"], "limit": 10000}});
    let line = format!("{big}\n").repeat(200);
    w.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = w.write_all(line.as_bytes());
    for _ in 0..20 {
        others_are_fine(&d);
    }
    drop(w);
    others_are_fine(&d);
}

#[test]
fn a_client_that_disconnects_mid_response_does_not_affect_others() {
    let (_ws, d) = small_daemon();
    for format in ["json", "csv", "arrow"] {
        let (mut w, mut r) = raw(&d);
        let q = json!({"op": "query", "format": format, "query": {
            "select": ["ts", "auction_id", "user_id", "country"], "limit": 10000}});
        w.write_all(format!("{q}\n").as_bytes()).unwrap();
        let mut some = [0u8; 64];
        r.read_exact(&mut some).unwrap();
        drop((w, r));
        others_are_fine(&d);
    }
}

#[test]
fn the_socket_is_private_and_a_second_daemon_refuses_to_start() {
    let (ws, d) = small_daemon();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let out = ws.run(&["run", "--watch", "watch", "--state", "state"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another rollupd process"), "{err}");
    // Another state folder, the same socket.
    let socket = d.socket.to_str().unwrap();
    let out = ws.run(&[
        "run", "--watch", "watch", "--state", "other", "--socket", socket,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another rollupd daemon is listening"), "{err}");
    others_are_fine(&d);
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_replaced() {
    let (ws, d) = small_daemon();
    let socket = d.socket.clone();
    d.kill();
    assert!(socket.exists(), "SIGKILL leaves the socket file behind");
    let d = Daemon::start(&ws, &[]);
    others_are_fine(&d);
    d.stop();
}

#[test]
fn min_generation_waits_for_the_generation_or_times_out() {
    let (ws, d) = small_daemon();
    let g = d.sync();
    let q = json!({"select": [{"COUNT": "*"}]});
    let reply = d
        .client()
        .request(&json!({"op": "query", "query": q, "min_generation": g + 1, "timeout_ms": 200}))
        .unwrap();
    assert_eq!(reply.line["error"]["kind"], "timeout", "{}", reply.line);
    let socket = d.socket.clone();
    let waiter = std::thread::spawn(move || {
        let mut c = rollupd::daemon::client::Client::connect(&socket).unwrap();
        c.request(&json!({"op": "query", "query": q, "min_generation": g + 1}))
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    ws.write("late.csv", sample_file(500, 77));
    let reply = waiter.join().unwrap();
    assert!(reply.error().is_none(), "{}", reply.line);
    assert!(reply.line["generation"].as_u64().unwrap() > g);
    assert_eq!(reply.line["rows"][0][0], 10_500);
}

#[test]
fn a_file_that_does_not_parse_is_reported_and_retried_when_it_changes() {
    let (ws, d) = small_daemon();
    let bad = ws.write("bad.csv", "ts,type\n1,serve\n");
    d.sync();
    let files = d.request(json!({"op": "files"})).line;
    let entry = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("bad.csv"))
        .unwrap()
        .clone();
    assert_eq!(entry["state"], "failed", "{files}");
    assert!(
        entry["error"].as_str().unwrap().contains("bad.csv"),
        "{entry}"
    );
    assert_eq!(d.status()["files"]["failed"], 1);
    // Not parsed again while unchanged.
    let before = bytes_parsed(&d);
    d.sync();
    assert_eq!(bytes_parsed(&d), before);
    std::fs::write(&bad, sample_file(100, 5)).unwrap();
    d.sync();
    assert_eq!(d.status()["files"]["failed"], 0);
    others_are_fine(&d);
}

#[test]
fn the_cli_talks_to_the_daemon_and_says_when_none_runs() {
    let (ws, d) = small_daemon();
    let sock = d.socket.to_str().unwrap().to_string();
    let out = ws.run(&["status", "--socket", &sock]);
    let text = crate::util::ok_stdout(&out);
    assert!(
        text.contains("files: 2 tracked, 0 pending, 0 failed"),
        "{text}"
    );
    let out = ws.run(&["files", "--state", "state"]);
    assert!(crate::util::ok_stdout(&out).contains("events-001.csv"));
    let out = ws.run(&["sync", "--json", "--socket", &sock]);
    let sync: Value = serde_json::from_str(&crate::util::ok_stdout(&out)).unwrap();
    assert_eq!(sync["ok"], true);
    // --state of a folder a daemon serves goes through its socket.
    let out = ws.run(&["query", "--state", "state", r#"{"select":[{"COUNT":"*"}]}"#]);
    let answer: Value = serde_json::from_str(&crate::util::ok_stdout(&out)).unwrap();
    assert_eq!(answer["rows"][0][0], 10_000);
    let out = ws.run(&[
        "query",
        "--socket",
        &sock,
        "--format",
        "csv",
        r#"{"select":[{"COUNT":"*"}]}"#,
    ]);
    assert_eq!(crate::util::ok_stdout(&out), "COUNT(*)\n10000\n");
    d.stop();
    let out = ws.run(&["status", "--socket", &sock]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no rollupd daemon is listening"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
