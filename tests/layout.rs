//! A changed time zone rebuilds the state on the next start, and queries then follow the
//! new zone; checked against day counts computed here with chrono-tz. A changed rollup
//! set is computed from the table, no file read again. A DuckDB table of another schema
//! version is created again and every file folded again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rollupd::{Engine, EngineOptions};
use serde_json::{json, Value};

use crate::history::assert_fresh;
use crate::util::{ok_stdout, Daemon, Workspace};

/// Rows per local calendar day in `zone`, straight from the CSV text.
fn day_counts(files: &[PathBuf], zone: chrono_tz::Tz) -> Vec<Value> {
    let mut days: BTreeMap<String, u64> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let ts = header.iter().position(|h| *h == "ts").unwrap();
        for line in lines {
            let ms: i64 = line.split(',').nth(ts).unwrap().parse().unwrap();
            let day = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .with_timezone(&zone)
                .format("%Y-%m-%d")
                .to_string();
            *days.entry(day).or_default() += 1;
        }
    }
    days.into_iter().map(|(d, n)| json!([d, n])).collect()
}

fn per_day() -> Value {
    json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"]})
}

#[test]
fn a_changed_time_zone_rebuilds_the_rollups_and_queries_follow_it() {
    let ws = Workspace::new();
    let files = ws.generate(2, 4_000, 9);
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let build = |zone: &str| -> Value {
        let out = ws.run(&[
            "build",
            "--watch",
            "watch",
            "--state",
            "state",
            "--time-zone",
            zone,
            "--json",
        ]);
        serde_json::from_str(&ok_stdout(&out)).unwrap()
    };
    let query = |q: &Value| -> Value {
        let out = ws.run(&["query", "--state", "state", &q.to_string()]);
        serde_json::from_str(&ok_stdout(&out)).unwrap()
    };
    build("UTC");
    let utc = query(&per_day());
    assert_eq!(utc["rows"], json!(day_counts(&files, chrono_tz::UTC)));

    // Tokyo is UTC+9: every event after 15:00 UTC moves to the next day.
    let report = build("Asia/Tokyo");
    assert_eq!(report["bytes_parsed"], bytes, "every file is folded again");
    let tokyo = query(&per_day());
    assert!(tokyo["source"].as_str().unwrap().starts_with("rollup:"));
    assert_eq!(
        tokyo["rows"],
        json!(day_counts(&files, chrono_tz::Asia::Tokyo))
    );
    assert_ne!(tokyo["rows"], utc["rows"]);
    // Unchanged zone: nothing to do.
    assert_eq!(build("Asia/Tokyo")["bytes_parsed"], 0);

    // The daemon: a zone with daylight saving, reported in status.
    let d = Daemon::start(&ws, &["--time-zone", "America/New_York"]);
    d.sync();
    let status = d.status();
    let why = status["rebuilt"].as_str().unwrap_or_default();
    assert!(why.contains("Asia/Tokyo → America/New_York"), "{status}");
    let reply = d.request(json!({"op": "query", "query": per_day()}));
    assert_eq!(
        reply.line["rows"],
        json!(day_counts(&files, chrono_tz::America::New_York))
    );
    // DuckDB's derived columns follow the zone too (every sample row has a user id).
    let raw = json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"],
                     "where": [{"col": "user_id", "op": "gte", "val": 0}]});
    let reply = d.request(json!({"op": "query", "query": raw}));
    assert_eq!(reply.line["source"], "duckdb");
    assert_eq!(
        reply.line["rows"],
        json!(day_counts(&files, chrono_tz::America::New_York))
    );
    d.stop();
}

#[test]
fn a_table_of_another_schema_version_is_created_again_and_folded_again() {
    let ws = Workspace::new();
    let files = ws.generate(2, 2_000, 77);
    drop(ws.build());
    {
        let db = duckdb::Connection::open(ws.state().join("events.duckdb")).unwrap();
        db.execute_batch("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
            .unwrap();
    }
    let engine = Engine::open(&ws.state(), EngineOptions::default()).unwrap();
    let why = engine.rebuilt().expect("a rebuild reason");
    assert!(why.contains("schema version 99"), "{why}");
    let report = engine.update(&ws.watch()).unwrap();
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert_eq!(report.bytes_parsed, bytes, "every file is folded again");
    assert_eq!(engine.table().row_count().unwrap(), 4_000);
    assert_fresh(&engine, &files, "after a table of another version");
    drop(engine);
    let engine = Engine::open(&ws.state(), EngineOptions::default()).unwrap();
    assert_eq!(engine.rebuilt(), None, "the version is current now");
}

/// Rollups added to the set are computed from the table (appended and NULL-keyed rows
/// included), those dropped go, and no CSV is read again: the rollups equal a fresh
/// build and the queries DuckDB.
#[test]
fn an_added_rollup_is_computed_from_the_table_without_reading_a_file() {
    let ws = Workspace::new();
    let files = ws.generate(3, 2_000, 78);
    let all = rollupd::rollup::default_specs();
    let fewer = EngineOptions {
        specs: all[2..all.len() - 1].to_vec(),
        ..EngineOptions::default()
    };
    let engine = ws.build_with(fewer);
    crate::util::append_rows(&files[0], 300, 79);
    engine.update(&ws.watch()).unwrap();
    drop(engine);
    let engine = Engine::open(&ws.state(), EngineOptions::default()).unwrap();
    let why = engine.rebuilt().expect("a rebuild reason");
    assert!(why.contains("computed from the table"), "{why}");
    assert_eq!(engine.stats().bytes_parsed_of(&files[0]), 0);
    let report = engine.update(&ws.watch()).unwrap();
    assert_eq!(report.bytes_parsed, 0, "no file is read again");
    assert_fresh(&engine, &ws.files(), "after rollups were added");
    for q in crate::util::reference_queries() {
        let answer = engine.query(&q).unwrap();
        let want = crate::oracle::oracle(&ws.files(), &q).unwrap();
        crate::oracle::assert_same(
            &q,
            &answer.result.columns,
            &crate::util::answer_rows(&answer),
            &want,
        )
        .unwrap();
    }
}
