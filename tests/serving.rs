//! The daemon under abuse, through its real socket: each limit answers with a clear error
//! naming its setting, the socket's path is handled safely, and the daemon answers a
//! normal query afterwards.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rollupd::app::gen::sample_file;
use rollupd::daemon::client::{Client, ClientOptions};
use rollupd::daemon::protocol::ErrorKind;

use crate::util::{Daemon, Workspace};

/// A daemon on `rows_per_file`-row sample files with extra config lines.
fn daemon_with(files: usize, rows_per_file: usize, config: &str) -> (Workspace, Daemon) {
    let ws = Workspace::new();
    ws.generate(files, rows_per_file, 5);
    std::fs::write(ws.tmp.path().join("serving.toml"), config).unwrap();
    let d = Daemon::start(&ws, &["--config", "serving.toml"]);
    d.sync();
    (ws, d)
}

/// A normal query is answered, and the daemon's resident memory stays under a bound.
fn still_serving(d: &Daemon) {
    let count = json!({"op": "query", "query": {"select": [{"COUNT": "*"}]}});
    // Both queries on one connection, made once a slot is free: connections closed just
    // before may hold theirs a moment longer, and a client over the limit is refused at
    // once (`busy`).
    let start = Instant::now();
    let (mut client, reply) = loop {
        let mut client = d.client();
        let reply = client.request(&count).unwrap();
        let busy = reply.error().is_some_and(|e| e.kind == ErrorKind::Busy);
        if !busy || start.elapsed() > Duration::from_secs(10) {
            break (client, reply);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(reply.error().is_none(), "{}", reply.line);
    assert!(reply.line["rows"][0][0].as_u64().unwrap() > 0);
    let duckdb = json!({"op": "query", "query": {"select": [{"COUNT": "*"}],
        "where": [{"col": "ts", "op": "gte", "val": 0}]}});
    let reply = client.request(&duckdb).unwrap();
    assert!(reply.error().is_none(), "{}", reply.line);
    assert_eq!(reply.line["source"], "duckdb");
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())) {
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert!(rss_kb < 1_500_000, "the daemon holds {rss_kb} kB");
    }
}

/// The error of a request that must fail, as (kind, message).
fn error_of(d: &Daemon, request: Value) -> (String, String) {
    let reply = d.client().request(&request).unwrap();
    let e = reply
        .error()
        .unwrap_or_else(|| panic!("{request} was answered: {}", reply.line));
    (e.kind.to_string(), e.message)
}

fn queries(d: &Daemon) -> Value {
    d.status()["queries"].clone()
}

#[test]
fn regression_huge_answers_are_too_large_and_name_the_cap() {
    let (_ws, d) = daemon_with(2, 5_000, "max_answer_rows = 100\nmax_answer_bytes = 3000\n");
    // From DuckDB: one group per auction.
    let per_auction = json!({"op": "query", "query": {"select": ["auction_id", {"COUNT": "*"}],
        "group_by": ["auction_id"]}});
    let (kind, msg) = error_of(&d, per_auction);
    assert_eq!(kind, "too_large");
    assert!(
        msg.contains("max_answer_rows") && msg.contains("100"),
        "{msg}"
    );
    // From a rollup: one group per minute.
    let per_minute = json!({"op": "query", "query": {"select": ["minute", {"COUNT": "*"}],
        "group_by": ["minute"]}});
    let (kind, msg) = error_of(&d, per_minute.clone());
    assert_eq!(kind, "too_large");
    assert!(msg.contains("max_answer_rows"), "{msg}");
    // Within the row cap with a limit, over the byte cap in every format.
    for format in ["json", "csv", "arrow"] {
        let raw = json!({"op": "query", "format": format, "query": {
            "select": ["ts", "auction_id", "user_id", "country"], "limit": 100}});
        let (kind, msg) = error_of(&d, raw);
        assert_eq!(kind, "too_large", "{format}");
        assert!(
            msg.contains("max_answer_bytes") && msg.contains("3000"),
            "{msg}"
        );
    }
    let mut limited = per_minute;
    limited["query"]["limit"] = json!(5);
    assert_eq!(d.request(limited).line["rows"].as_array().unwrap().len(), 5);
    assert_eq!(queries(&d)["too_large"], 5);
    still_serving(&d);
}

#[test]
fn regression_a_huge_select_list_is_refused() {
    let (_ws, d) = daemon_with(1, 2_000, "");
    let select: Vec<Value> = (0..1_000).map(|_| json!({"SUM": "bid_price"})).collect();
    let q = json!({"op": "query", "query": {"select": select, "group_by": ["minute"]}});
    let (kind, msg) = error_of(&d, q);
    assert_eq!(kind, "too_large");
    assert!(
        msg.contains("1000 items") && msg.contains("max_select_items"),
        "{msg}"
    );
    still_serving(&d);
}

#[test]
fn regression_a_huge_in_list_is_refused_and_a_long_one_matches_as_a_set() {
    let (_ws, d) = daemon_with(2, 5_000, "");
    let huge: Vec<i64> = (0..20_000).collect();
    let q = json!({"op": "query", "query": {"select": [{"COUNT": "*"}],
        "where": [{"col": "type", "op": "eq", "val": "click"},
                  {"col": "advertiser_id", "op": "in", "val": huge}]}});
    let (kind, msg) = error_of(&d, q);
    assert_eq!(kind, "too_large");
    assert!(
        msg.contains("where[1]") && msg.contains("max_in_values"),
        "{msg}"
    );

    // Every advertiser present, among thousands absent, in no order: the same counts as
    // no filter, from a rollup and from DuckDB.
    let all = json!({"select": ["advertiser_id", {"COUNT": "*"}], "group_by": ["advertiser_id"]});
    let rows = d.request(json!({"op": "query", "query": all})).line["rows"].clone();
    let want: Vec<Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r[0].is_null())
        .cloned()
        .collect();
    let mut ids: Vec<Value> = want.iter().map(|r| r[0].clone()).collect();
    ids.extend((0..8_000).map(|i| json!(10_000_000 + (i * 7919) % 8_000)));
    ids.reverse();
    for extra in [json!([]), json!([{"col": "ts", "op": "gte", "val": 0}])] {
        let mut filters = vec![json!({"col": "advertiser_id", "op": "in", "val": ids})];
        filters.extend(extra.as_array().unwrap().iter().cloned());
        let q = json!({"select": ["advertiser_id", {"COUNT": "*"}], "where": filters,
                       "group_by": ["advertiser_id"]});
        let reply = d.request(json!({"op": "query", "query": q}));
        assert_eq!(reply.line["rows"], json!(want), "{}", reply.line["source"]);
    }
    still_serving(&d);
}

/// A DuckDB query over every row that takes a while: one group per auction and user.
fn slow_query() -> Value {
    json!({"select": ["auction_id", "user_id", {"COUNT": "*"}, {"MAX": "bid_price"},
                      {"MIN": "ts"}],
           "group_by": ["auction_id", "user_id"],
           "order_by": [{"col": "MIN(ts)", "dir": "desc"}], "limit": 3})
}

#[test]
fn regression_a_client_disconnecting_mid_query_stops_the_query() {
    let (_ws, d) = daemon_with(4, 50_000, "duckdb_threads = 1\n");
    for round in 1..=3 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        let line = json!({"op": "query", "query": slow_query()}).to_string() + "\n";
        s.write_all(line.as_bytes()).unwrap();
        drop(s);
        let status = d.status_until("the query was not cancelled", |s| {
            s["queries"]["cancelled"] == round && s["queries"]["running"] == 0
        });
        assert_eq!(status["queries"]["timed_out"], 0, "{status}");
    }
    // The view's connections that were interrupted are replaced.
    for _ in 0..4 {
        let reply = d.request(json!({"op": "query", "query": slow_query()}));
        assert_eq!(reply.line["rows"].as_array().unwrap().len(), 3);
    }
    still_serving(&d);
}

#[test]
fn regression_a_query_over_its_time_is_interrupted_with_a_timeout() {
    let (_ws, d) = daemon_with(4, 50_000, "duckdb_threads = 1\n");
    // More timeouts than the view has connections: each interrupted one is replaced.
    for round in 1..=6 {
        let q = json!({"op": "query", "query": slow_query(), "timeout_ms": 5});
        let (kind, msg) = error_of(&d, q);
        assert_eq!(kind, "timeout");
        assert!(msg.contains("query_timeout_ms"), "{msg}");
        assert_eq!(queries(&d)["timed_out"], round);
    }
    let reply = d.request(json!({"op": "query", "query": slow_query()}));
    assert_eq!(reply.line["rows"].as_array().unwrap().len(), 3);
    still_serving(&d);
}

#[test]
fn regression_idle_connections_beyond_the_limit_never_make_a_new_client_hang() {
    let (_ws, d) = daemon_with(1, 2_000, "max_connections = 2\nidle_timeout_secs = 3\n");
    let idle: Vec<UnixStream> = (0..2).map(|_| held_connection(&d)).collect();
    let refused = UnixStream::connect(&d.socket).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&refused).read_line(&mut line).unwrap();
    let err: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(err["error"]["kind"], "busy", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_connections"));
    // The idle ones are closed after three seconds without a request.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    }
    let status = d.status();
    assert!(
        status["connections"]["refused"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["connections"]["idle_closed"].as_u64().unwrap() >= 2,
        "{status}"
    );
    still_serving(&d);
}

/// A connection the daemon has accepted (it answered a ping on it), left idle.
fn held_connection(d: &Daemon) -> UnixStream {
    let start = Instant::now();
    loop {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A connection still closing may hold a slot: this one is then refused at once.
        let _ = s.write_all(b"{\"op\":\"ping\"}\n");
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        if line.trim() == r#"{"ok":true}"# {
            return s;
        }
        assert!(line.contains("busy"), "{line}");
        assert!(start.elapsed() < Duration::from_secs(10), "never accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn regression_sync_on_a_folder_that_never_settles_times_out() {
    let (ws, d) = daemon_with(1, 2_000, "");
    let path = ws.watch().join("growing.csv");
    std::fs::write(&path, sample_file(100, 9)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let row = sample_file(1, 10);
            let row = &row[row.iter().position(|b| *b == b'\n').unwrap() + 1..];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(row).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let (kind, msg) = error_of(&d, json!({"op": "sync", "timeout_ms": 1_500}));
    assert_eq!(kind, "timeout");
    assert!(
        msg.contains("1500 ms") && msg.contains("still pending"),
        "{msg}"
    );
    let sock = d.socket.to_str().unwrap().to_string();
    let out = ws.run(&["sync", "--socket", &sock, "--timeout", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timeout error") && err.contains("1000 ms"),
        "{err}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    d.sync();
    still_serving(&d);
}

/// A listener at `path` that answers its first request line with `reply`.
fn squatter(path: &Path, reply: &'static [u8]) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(&s).read_line(&mut line);
        let _ = (&s).write_all(reply);
    })
}

#[test]
fn regression_the_cli_refuses_a_socket_that_is_not_a_rollupd_daemon() {
    let ws = Workspace::new();
    let cases: [(&[u8], &str); 3] = [
        (
            b"{\"ok\":true,\"bytes\":18446744073709551615}\n",
            "over the client's cap",
        ),
        (b"hello\n", "not JSON"),
        (b"{\"generation\":1}\n", "without \"ok\""),
    ];
    for (i, (reply, says)) in cases.into_iter().enumerate() {
        let path = ws.tmp.path().join(format!("fake{i}.sock"));
        let server = squatter(&path, reply);
        let out = ws.run(&["status", "--socket", path.to_str().unwrap()]);
        server.join().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    // A reply line that never ends is read up to the client's cap only.
    let path = ws.tmp.path().join("endless.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let chunk = [b'x'; 4096];
        while s.write_all(&chunk).is_ok() {}
    });
    let opts = ClientOptions {
        max_reply_bytes: 64 << 10,
        ..ClientOptions::default()
    };
    let mut client = Client::connect_with(&path, opts).unwrap();
    let err = client.request(&json!({"op": "ping"})).unwrap_err();
    assert!(err.to_string().contains("longer than 65536 bytes"), "{err}");
    drop(client);
    server.join().unwrap();
}

#[test]
fn regression_the_cli_refuses_a_socket_served_by_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can serve a socket as another user here");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let ws = Workspace::new();
    let root = ws.tmp.path();
    let open = |p: &Path| {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    for p in [
        root.to_path_buf(),
        ws.watch(),
        ws.state(),
        root.join("home"),
    ] {
        open(&p);
    }
    let binary = root.join("rollupd");
    std::fs::copy(env!("CARGO_BIN_EXE_rollupd"), &binary).unwrap();
    let socket = root.join("other.sock");
    let mut other = std::process::Command::new(&binary)
        .args([
            "run",
            "--watch",
            "watch",
            "--state",
            "state",
            "--socket",
            "other.sock",
        ])
        .current_dir(root)
        .env("HOME", root.join("home"))
        .env("RUST_LOG", "warn")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other user's daemon exited"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ws.run(&["status", "--socket", socket.to_str().unwrap()]);
    let _ = other.kill();
    let _ = other.wait();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("served by a process of uid 65534"), "{err}");
}

#[test]
fn regression_a_regular_file_at_the_socket_path_is_kept() {
    let ws = Workspace::new();
    ws.generate(1, 1_000, 3);
    std::fs::create_dir_all(ws.state()).unwrap();
    let path = ws.state().join("rollupd.sock");
    std::fs::write(&path, "not a socket").unwrap();
    let out = ws.run(&["run", "--watch", "watch", "--state", "state"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");

    // A daemon on another path; a file put over its socket stays at shutdown.
    let d = Daemon::start(&ws, &["--socket", "state/served.sock"]);
    d.sync();
    still_serving(&d);
    let replacement = ws.state().join("replacement");
    std::fs::write(&replacement, "mine").unwrap();
    std::fs::rename(&replacement, &d.socket).unwrap();
    let socket = d.socket.clone();
    d.stop();
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "mine");
    let leftovers: Vec<_> = std::fs::read_dir(ws.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".rollupd-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folders left: {leftovers:?}"
    );
}
