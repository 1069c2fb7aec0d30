//! Streamed query replies through the real daemon: the chunks hold exactly what a whole
//! reply holds (json rows, csv, Arrow IPC), the framing is as documented (the reply
//! line, sized chunks, an empty one, an end line), an answer over the byte cap ends with
//! `too_large` after its first chunks, and the connection goes on taking requests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{json, Value};

use rollupd::daemon::protocol::{Format, Request};

use crate::util::{reference_queries, Daemon, Workspace};

/// Queries whose answers take several chunks and several Arrow batches.
fn large_queries() -> Vec<Value> {
    vec![
        json!({"select": ["ts", "user_id", "country"], "limit": 100_000}),
        json!({"select": ["advertiser_id", "publisher_id", {"COUNT": "*"},
                          {"SUM": "bid_price"}, {"MAX": "total_price"}],
               "group_by": ["advertiser_id", "publisher_id"]}),
        json!({"select": ["minute", "type", {"AVG": "bid_price"}],
               "group_by": ["minute", "type"],
               "order_by": [{"col": "AVG(bid_price)", "dir": "desc"}], "limit": 30_000}),
    ]
}

/// The reply line without what differs between two replies of one answer.
fn answer_line(line: &Value) -> Value {
    let mut line = line.clone();
    let fields = line.as_object_mut().unwrap();
    for f in ["elapsed_us", "bytes", "stream", "cached"] {
        fields.remove(f);
    }
    line
}

/// A streamed reply read off a raw connection: the reply line, the chunks' sizes, their
/// bytes, and the end line.
fn read_streamed(r: &mut impl BufRead) -> (Value, Vec<usize>, Vec<u8>, Value) {
    let line = |r: &mut dyn BufRead| {
        let mut text = String::new();
        r.read_line(&mut text).unwrap();
        text
    };
    let head: Value = serde_json::from_str(&line(r)).unwrap();
    assert_eq!(head["stream"], true, "{head}");
    let (mut sizes, mut bytes) = (Vec::new(), Vec::new());
    loop {
        let n: usize = line(r).trim_end().parse().unwrap();
        if n == 0 {
            break;
        }
        let at = bytes.len();
        bytes.resize(at + n, 0);
        r.read_exact(&mut bytes[at..]).unwrap();
        sizes.push(n);
    }
    let end: Value = serde_json::from_str(&line(r)).unwrap();
    (head, sizes, bytes, end)
}

/// A daemon on two sample files of `rows` rows, synced, with extra config lines.
fn daemon(rows: usize, seed: u64, config: &str) -> (Workspace, Daemon) {
    let ws = Workspace::new();
    ws.generate(2, rows, seed);
    std::fs::write(ws.tmp.path().join("stream.toml"), config).unwrap();
    let d = Daemon::start(&ws, &["--config", "stream.toml"]);
    d.sync();
    (ws, d)
}

#[test]
fn streamed_replies_hold_what_whole_replies_hold() {
    let (_ws, d) = daemon(60_000, 31, "");
    let mut client = d.client();
    let mut queries = reference_queries();
    queries.extend(large_queries());
    for q in &queries {
        for format in [Format::Json, Format::Csv, Format::Arrow] {
            let whole = client.send(&Request::query(q.clone(), format)).unwrap();
            let streamed = client
                .send(&Request::query(q.clone(), format).streamed())
                .unwrap();
            let what = format!("{}: {q}", format.name());
            assert!(whole.error().is_none(), "{what}: {}", whole.line);
            assert_eq!(
                answer_line(&whole.line),
                answer_line(&streamed.line),
                "{what}"
            );
            assert!(whole.payload == streamed.payload, "{what}");
        }
    }
    // The framing, on a raw connection: chunks of at most 256 KiB, an end line counting
    // the rows and the bytes, and the next request answered on the same connection.
    let q = &large_queries()[0];
    let s = UnixStream::connect(&d.socket).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let request = json!({"op": "query", "query": q, "format": "arrow", "stream": true});
    (&s).write_all(format!("{request}\n").as_bytes()).unwrap();
    let (head, sizes, bytes, end) = read_streamed(&mut r);
    assert!(
        head.get("bytes").is_none() && head["columns"].is_array(),
        "{head}"
    );
    assert!(
        sizes.len() > 1 && sizes.iter().all(|n| *n <= 256 << 10),
        "{sizes:?}"
    );
    assert_eq!(
        end,
        json!({"ok": true, "rows": 100_000, "bytes": bytes.len()})
    );
    let batches: Vec<_> = arrow_ipc::reader::StreamReader::try_new(&bytes[..], None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .collect();
    assert_eq!(batches, vec![65_536, 100_000 - 65_536]);
    (&s).write_all(b"{\"op\":\"ping\"}\n").unwrap();
    let mut pong = String::new();
    r.read_line(&mut pong).unwrap();
    assert_eq!(pong, "{\"ok\":true}\n");
}

#[test]
fn a_streamed_answer_over_the_byte_cap_ends_with_too_large() {
    let (_ws, d) = daemon(30_000, 32, "max_answer_bytes = 600000\n");
    let q = &large_queries()[0];
    for format in ["json", "csv", "arrow"] {
        let s = UnixStream::connect(&d.socket).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let request = json!({"op": "query", "query": q, "format": format, "stream": true});
        (&s).write_all(format!("{request}\n").as_bytes()).unwrap();
        let (_, sizes, bytes, end) = read_streamed(&mut r);
        assert!(
            !sizes.is_empty() && bytes.len() <= 600_000,
            "{format}: {sizes:?}"
        );
        assert_eq!(end["ok"], false, "{format}: {end}");
        assert_eq!(end["error"]["kind"], "too_large", "{format}: {end}");
        let msg = end["error"]["message"].as_str().unwrap();
        assert!(msg.contains("max_answer_bytes"), "{msg}");
        (&s).write_all(b"{\"op\":\"ping\"}\n").unwrap();
        let mut pong = String::new();
        r.read_line(&mut pong).unwrap();
        assert_eq!(pong, "{\"ok\":true}\n", "{format}");
    }
    // The client reads it as the error.
    let mut client = d.client();
    let request = Request::query(q.clone(), Format::Csv).streamed();
    let reply = client.send(&request).unwrap();
    assert_eq!(reply.error().unwrap().kind.name(), "too_large");
    assert!(reply.payload.is_empty());
    // An error before any row (an invalid query) is one error line, as for any request.
    let bad = Request::query(json!({"select": []}), Format::Arrow).streamed();
    let reply = client.send(&bad).unwrap();
    assert_eq!(reply.error().unwrap().kind.name(), "invalid_query");
    assert_eq!(d.status()["queries"]["too_large"], 4);
}

#[test]
fn streamed_answers_are_cached_and_served_from_the_cache() {
    let (_ws, d) = daemon(5_000, 33, "");
    let mut client = d.client();
    for q in reference_queries() {
        for format in [Format::Json, Format::Csv, Format::Arrow] {
            let request = Request::query(q.clone(), format).streamed();
            let first = client.send(&request).unwrap();
            let again = client.send(&request).unwrap();
            assert!(again.line["cached"] == true, "{q}: {}", again.line);
            assert_eq!(answer_line(&first.line), answer_line(&again.line), "{q}");
            assert!(first.payload == again.payload, "{q}");
        }
    }
}
