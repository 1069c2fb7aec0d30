//! The answer cache through the real daemon: a cached answer is the answer the daemon
//! computes, in every format and on every route; a change to the folder is in the next
//! answer; the cache holds its byte bound, skips answers over its entry cap, and can be
//! turned off per request or by config.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use rollupd::app::gen::sample_file;
use rollupd::daemon::client::Reply;

use crate::daemon::assert_equivalent;
use crate::oracle::{query_context, random_query};
use crate::util::{reference_queries, Daemon, Workspace};

/// One query request on a new connection; `cache: false` keeps the cache out of it.
fn ask(d: &Daemon, query: &Value, format: &str, cache: bool) -> Reply {
    let mut request = json!({"op": "query", "query": query, "format": format});
    if !cache {
        request["cache"] = json!(false);
    }
    d.request(request)
}

fn cached(reply: &Reply) -> bool {
    reply.line["cached"] == json!(true)
}

/// The reply without what each reply says anew (its time, whether it was cached).
fn answer_of(reply: &Reply) -> (Value, &[u8]) {
    let mut line = reply.line.clone();
    let fields = line.as_object_mut().unwrap();
    fields.remove("elapsed_us");
    fields.remove("cached");
    (line, &reply.payload)
}

/// Each query in each format: asked without the cache, then twice with it; the second
/// is cached and all three give the same answer.
fn check_cached_equal_fresh(d: &Daemon, queries: &[Value], when: &str) {
    for q in queries {
        for format in ["json", "csv", "arrow"] {
            let fresh = ask(d, q, format, false);
            let first = ask(d, q, format, true);
            let again = ask(d, q, format, true);
            let what = format!("{when}, {format}: {q}");
            assert!(!cached(&fresh) && !cached(&first), "{what}");
            assert!(cached(&again), "{what}: {}", again.line);
            assert_eq!(answer_of(&fresh), answer_of(&first), "{what}");
            assert_eq!(answer_of(&fresh), answer_of(&again), "{what}");
        }
    }
}

#[test]
fn cached_answers_equal_fresh_ones_and_never_outlive_their_generation() {
    let ws = Workspace::new();
    let initial = ws.generate(3, 2_000, 21);
    let d = Daemon::start(&ws, &[]);
    d.sync();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut queries = reference_queries();
    queries.push(
        json!({"select": ["type", {"COUNT": "*"}, {"SUM": "bid_price"}],
                        "where": [{"col": "ts", "op": "gte", "val": 0}], "group_by": ["type"]}),
    );
    let ctx = query_context(&ws.files());
    queries.extend((0..6).map(|_| random_query(&mut rng, &ctx)));
    let count = json!({"select": [{"COUNT": "*"}]});
    let mut rows = ask(&d, &count, "json", false).line["rows"][0][0].clone();
    check_cached_equal_fresh(&d, &queries, "initial");
    assert_equivalent(&d, &ws, &mut rng, 5, "initial, cached");

    let change = |what: &str| match what {
        "added" => {
            ws.write("added.csv", sample_file(1_500, 22));
        }
        "appended" => {
            crate::util::append_rows(&initial[0], 700, 23);
        }
        _ => std::fs::remove_file(&initial[1]).unwrap(),
    };
    for what in ["added", "appended", "deleted"] {
        let before = d.status()["generation"].as_u64().unwrap();
        change(what);
        assert!(d.sync() > before, "{what}: a new generation");
        // The first answer after the change is fresh, and it has the change in it.
        let now = ask(&d, &count, "json", true);
        assert!(!cached(&now), "{what}: {}", now.line);
        assert_ne!(now.line["rows"][0][0], rows, "{what}");
        rows = now.line["rows"][0][0].clone();
        check_cached_equal_fresh(&d, &queries, what);
        assert_equivalent(&d, &ws, &mut rng, 5, what);
    }
    let counts = d.status()["answer_cache"].clone();
    assert!(counts["hits"].as_u64().unwrap() > 0, "{counts}");
}

#[test]
fn the_answer_cache_holds_its_byte_bound_and_skips_large_answers() {
    let ws = Workspace::new();
    ws.generate(2, 3_000, 31);
    let config = "answer_cache_bytes = 16384\nanswer_cache_entry_bytes = 4096\n";
    std::fs::write(ws.tmp.path().join("cache.toml"), config).unwrap();
    let d = Daemon::start(&ws, &["--config", "cache.toml"]);
    d.sync();
    // Over the entry cap: never cached.
    let large = json!({"select": ["minute", {"COUNT": "*"}], "group_by": ["minute"]});
    for _ in 0..2 {
        let reply = ask(&d, &large, "json", true);
        assert!(reply.line.to_string().len() > 4096);
        assert!(!cached(&reply));
    }
    // Many small answers: cached, the oldest dropped to stay within the bound.
    for id in 0..150 {
        let q = json!({"select": [{"COUNT": "*"}, {"SUM": "bid_price"}],
                       "where": [{"col": "advertiser_id", "op": "eq", "val": id}]});
        let first = ask(&d, &q, "json", true);
        let again = ask(&d, &q, "json", true);
        assert!(cached(&again), "{}", again.line);
        assert_eq!(answer_of(&first), answer_of(&again));
        let counts = d.status()["answer_cache"].clone();
        assert!(counts["bytes"].as_u64().unwrap() <= 16384, "{counts}");
    }
    let counts = d.status()["answer_cache"].clone();
    let answers = counts["answers"].as_u64().unwrap();
    assert!(answers > 0 && answers < 150, "{counts}");
    assert_eq!(counts["max_bytes"], 16384);
}

#[test]
fn the_answer_cache_can_be_turned_off() {
    let ws = Workspace::new();
    ws.generate(1, 1_000, 41);
    std::fs::write(ws.tmp.path().join("off.toml"), "answer_cache_bytes = 0\n").unwrap();
    let d = Daemon::start(&ws, &["--config", "off.toml"]);
    d.sync();
    let q = json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"]});
    for _ in 0..3 {
        assert!(!cached(&ask(&d, &q, "csv", true)));
    }
    let counts = d.status()["answer_cache"].clone();
    assert_eq!(counts["answers"], 0, "{counts}");
    assert_eq!(counts["max_bytes"], 0, "{counts}");
}
