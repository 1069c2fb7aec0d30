//! Layout changes: a changed time zone or rollup set is computed from the DuckDB table,
//! no file read again, on the next start or while the daemon answers (`reload`, SIGHUP);
//! queries then follow the new zone (checked against day counts computed here with
//! chrono-tz) and the rollups equal a fresh build in the new layout. A change that fails
//! or is killed at any step leaves either layout whole. A DuckDB table of another schema
//! version is created again and every file folded again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::atomic::Ordering;

use rollupd::engine::failpoint::{Action, Failpoints, LAYOUT_POINTS};
use rollupd::engine::Layout;
use rollupd::model::schema::Zone;
use rollupd::rollup::default_specs;
use rollupd::{Engine, EngineOptions};
use serde_json::{json, Value};

use crate::history::assert_fresh;
use crate::util::{answer_rows, append_rows, ok_stdout, Daemon, Workspace};

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
fn a_changed_time_zone_is_computed_from_the_table_and_queries_follow_it() {
    let ws = Workspace::new();
    let files = ws.generate(2, 4_000, 9);
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
    assert_eq!(report["bytes_parsed"], 0, "no file is read again");
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

/// A table of the schema version before bit-packed prices (DuckDB's own compression, its
/// default row groups; here with a widened country type too) is copied into a new file in
/// the current layout on open, with its rows in their order, and no file is folded again;
/// the copy answers as a fresh build does, and a later file widens its country type
/// again. A copy that fails leaves the old file answering, and the next open copies it.
#[test]
fn a_table_of_the_previous_schema_version_is_copied_not_folded_again() {
    use crate::input::{map_fields, sample};
    let with_country = |text: &str, country: &'static str| {
        map_fields(text, move |i, fields| {
            let mut out: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            if i > 0 && i % 3 == 0 {
                out[8] = country.to_string();
            }
            out
        })
    };
    let ws = Workspace::new();
    let mut files = vec![ws.write("a.csv", with_country(&sample(20_000, 0), "usa"))];
    files.extend(ws.generate(1, 20_000, 80));
    drop(ws.build());
    let path = ws.state().join("events.duckdb");
    let rows_in_order = "SELECT md5(string_agg(concat_ws(',', file_id, ts, country, bid_price, \
                         total_price), ';' ORDER BY rowid)) FROM events";
    let before: String = {
        let db = duckdb::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE v2 AS SELECT * FROM events; DROP TABLE events; \
             ALTER TABLE v2 RENAME TO events; \
             UPDATE meta SET value = 2 WHERE key = 'schema_version'; CHECKPOINT",
        )
        .unwrap();
        db.query_row(rows_in_order, [], |r| r.get(0)).unwrap()
    };
    let version = |db: &duckdb::Connection| -> i64 {
        db.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let copy_fails = EngineOptions::default();
    copy_fails
        .failpoints
        .arm("table.rewrite", Action::Error)
        .unwrap();
    for (opts, copied) in [(copy_fails, false), (EngineOptions::default(), true)] {
        let engine = Engine::open(&ws.state(), opts).unwrap();
        assert_eq!(engine.rebuilt(), None, "copied or kept, not rebuilt");
        let report = engine.update(&ws.watch()).unwrap();
        assert_eq!(report.bytes_parsed, 0, "no file is read again");
        assert_fresh(&engine, &files, "after the copy");
        drop(engine);
        let left: Vec<_> = (std::fs::read_dir(ws.state()).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("rewrite"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let db = duckdb::Connection::open(&path).unwrap();
        assert_eq!(version(&db), if copied { 3 } else { 2 });
    }
    {
        let db = duckdb::Connection::open(&path).unwrap();
        let after: String = db.query_row(rows_in_order, [], |r| r.get(0)).unwrap();
        assert_eq!(after, before, "the rows, in their order");
        let storage = |sql: &str| -> String { db.query_row(sql, [], |r| r.get(0)).unwrap() };
        let prices = storage(
            "SELECT string_agg(DISTINCT compression, ',') FROM pragma_storage_info('events') \
             WHERE column_name IN ('bid_price', 'total_price') AND segment_type <> 'VALIDITY' \
             AND compression <> 'Constant'",
        );
        assert_eq!(prices, "BitPacking");
        let largest = storage(
            "SELECT CAST(max(count) AS VARCHAR) FROM pragma_storage_info('events') \
             WHERE column_name = 'ts' AND segment_type <> 'VALIDITY'",
        );
        assert_eq!(largest, rollupd::storage::duck::ROW_GROUP_ROWS.to_string());
    }
    let engine = Engine::open(&ws.state(), EngineOptions::default()).unwrap();
    assert_eq!(engine.rebuilt(), None);
    files.push(ws.write("c.csv", with_country(&sample(3_000, 2), "jp")));
    let report = engine.update(&ws.watch()).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_fresh(&engine, &files, "after a later file widened the type");
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

fn tokyo() -> Zone {
    Zone::parse("Asia/Tokyo").unwrap()
}

/// Asserts that the rollups and DuckDB both count rows per day as `zone` does.
fn assert_days_in(engine: &Engine, files: &[PathBuf], zone: chrono_tz::Tz, what: &str) {
    let want = json!(day_counts(files, zone));
    let answer = engine.query(&per_day()).unwrap();
    assert!(answer.source.starts_with("rollup:"), "{what}");
    assert_eq!(json!(answer_rows(&answer)), want, "{what}: rollup days");
    let raw = json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"],
                     "where": [{"col": "user_id", "op": "gte", "val": 0}]});
    let answer = engine.query(&raw).unwrap();
    assert_eq!(answer.source, "duckdb", "{what}");
    assert_eq!(json!(answer_rows(&answer)), want, "{what}: DuckDB days");
}

/// An open engine moves to another rollup set and then to another time zone: rollups
/// added are computed from the table (appended rows included), those removed go, the
/// table's time columns follow the zone, no file is read, and the rollups equal a fresh
/// build in each layout. Updates after the change fold in the new layout, and a restart
/// with it finds nothing to do.
#[test]
fn relayout_changes_rollups_and_zone_on_an_open_engine_without_reading_a_file() {
    let ws = Workspace::new();
    let files = ws.generate(3, 2_000, 80);
    let all = default_specs();
    let engine = ws.build_with(EngineOptions {
        specs: all[..3].to_vec(),
        ..EngineOptions::default()
    });
    append_rows(&files[1], 200, 81);
    engine.update(&ws.watch()).unwrap();
    let parsed = engine.stats().bytes_parsed.load(Ordering::Relaxed);

    let to = Layout {
        zone: Zone::Utc,
        specs: all[1..].to_vec(),
    };
    let report = engine.relayout(to.clone()).unwrap();
    assert_eq!(report.change.removed, vec![all[0].name()]);
    assert_eq!(report.change.added.len(), all.len() - 3);
    assert_eq!(report.change.time_zone, None);
    assert_eq!((report.files, report.rows), (3, 6_200));
    assert_eq!(*engine.layout(), to);
    assert_eq!(engine.snapshot().generation(), report.generation);
    assert_fresh(&engine, &files, "after rollups were added and removed");
    for q in crate::util::reference_queries() {
        let answer = engine.query(&q).unwrap();
        let want = crate::oracle::oracle(&files, &q).unwrap();
        crate::oracle::assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want)
            .unwrap();
    }

    // A span of whole UTC hours of `ts` is an `hour` span in UTC only: a rollup answers
    // it here, DuckDB once the zone is another, with the same answer.
    let hours = json!({"select": ["country", {"COUNT": "*"}], "group_by": ["country"],
        "where": [{"col": "ts", "op": "between", "val": [1_717_243_200_000_i64, 1_717_250_399_999_i64]}]});
    let utc_hours = engine.query(&hours).unwrap();
    assert!(
        utc_hours.source.starts_with("rollup:"),
        "{}",
        utc_hours.source
    );

    let tokyo_all = Layout {
        zone: tokyo(),
        specs: all.clone(),
    };
    let report = engine.relayout(tokyo_all.clone()).unwrap();
    let tokyo_hours = engine.query(&hours).unwrap();
    assert_eq!(tokyo_hours.source, "duckdb");
    assert_eq!(answer_rows(&tokyo_hours), answer_rows(&utc_hours));
    let zone = report.change.time_zone.expect("a zone change");
    assert_eq!(
        (zone.from.as_str(), zone.to.as_str()),
        ("UTC", "Asia/Tokyo")
    );
    assert_fresh(&engine, &files, "after the zone changed");
    assert_days_in(
        &engine,
        &files,
        chrono_tz::Asia::Tokyo,
        "after the zone changed",
    );
    assert_eq!(engine.stats().bytes_parsed.load(Ordering::Relaxed), parsed);

    // The same layout again: nothing to do.
    let again = engine.relayout(tokyo_all.clone()).unwrap();
    assert!(again.change.is_empty());
    assert_eq!(again.generation, engine.snapshot().generation());

    append_rows(&files[2], 100, 82);
    engine.update(&ws.watch()).unwrap();
    assert_fresh(&engine, &files, "an append after the change");
    assert_days_in(&engine, &files, chrono_tz::Asia::Tokyo, "an append after");
    drop(engine);
    let engine = Engine::open(
        &ws.state(),
        EngineOptions {
            zone: tokyo(),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        engine.rebuilt(),
        None,
        "the state is in the configured layout"
    );
    assert_fresh(&engine, &files, "after a restart");
}

/// A layout change failing at each of its steps (after the table's time columns moved
/// to the new zone; before the store commit) leaves the old layout answering as a fresh
/// build, the table in the old zone, and updates folding in it; on a restart too. Then
/// the same change goes through.
#[test]
fn a_layout_change_that_fails_leaves_the_old_layout_whole() {
    for point in LAYOUT_POINTS {
        let ws = Workspace::new();
        let files = ws.generate(2, 1_500, 83);
        let all = default_specs();
        let failpoints = Failpoints::default();
        let old = EngineOptions {
            specs: all[..2].to_vec(),
            failpoints: failpoints.clone(),
            ..EngineOptions::default()
        };
        let engine = ws.build_with(old.clone());
        let to = Layout {
            zone: tokyo(),
            specs: all.clone(),
        };
        failpoints.arm(point, Action::Error).unwrap();
        let generation = engine.snapshot().generation();
        assert!(engine.relayout(to.clone()).is_err(), "{point}");
        assert_eq!(*engine.layout(), old.layout(), "{point}");
        assert_eq!(engine.snapshot().generation(), generation, "{point}");
        assert_fresh(&engine, &files, point);
        assert_days_in(&engine, &files, chrono_tz::UTC, point);
        append_rows(&files[0], 100, 84);
        engine.update(&ws.watch()).unwrap();
        assert_fresh(&engine, &files, &format!("{point}: an append after"));
        assert_days_in(&engine, &files, chrono_tz::UTC, point);
        drop(engine);

        let engine = Engine::open(&ws.state(), old.clone()).unwrap();
        assert_eq!(engine.rebuilt(), None, "{point}: nothing to repair");
        assert_fresh(&engine, &files, &format!("{point}: after a restart"));
        failpoints.clear();
        engine.relayout(to).unwrap();
        assert_fresh(&engine, &files, &format!("{point}: the change again"));
        assert_days_in(&engine, &files, chrono_tz::Asia::Tokyo, point);
    }
}

/// Writes the daemon's config file (its watch and state come from the command line).
fn write_config(ws: &Workspace, zone: &str, rollups: &[&str]) {
    let names: Vec<String> = rollups.iter().map(|r| format!("{r:?}")).collect();
    let text = format!("time_zone = {zone:?}\nrollups = [{}]\n", names.join(", "));
    std::fs::write(ws.tmp.path().join("rollupd.toml"), text).unwrap();
}

/// The socket-level queries a rollup set change must never disturb: one only the added
/// rollup will answer, one a kept rollup answers, one only DuckDB answers.
fn watched_queries() -> Vec<Value> {
    vec![
        json!({"select": ["hour", "publisher_id", {"COUNT": "*"}, {"MAX": "bid_price"}],
               "group_by": ["hour", "publisher_id"]}),
        crate::util::reference_queries()[0].clone(),
        json!({"select": ["type", {"COUNT": "*"}], "group_by": ["type"],
               "where": [{"col": "user_id", "op": "gte", "val": 0}]}),
    ]
}

/// Sets its flag when dropped, also when a panic unwinds past it.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `reload` adds a rollup while clients query: every answer of every query equals the
/// one before the change (never empty, never partial, whatever it was answered from),
/// status shows the change while it runs, no CSV byte is parsed, and once the reply is
/// in the new rollup answers its query; the answers equal DuckDB over the CSVs.
#[test]
fn adding_a_rollup_while_queries_run_never_returns_an_empty_or_partial_answer() {
    let ws = Workspace::new();
    let files = ws.generate(4, 3_000, 85);
    write_config(&ws, "UTC", &["day_type_country", "minute_type"]);
    let env = [("ROLLUPD_FAILPOINTS", "layout.commit=pause")];
    let d = Daemon::spawn_with_env(&ws, &["--config", "rollupd.toml"], &env).wait_ready();
    d.sync();
    let queries = watched_queries();
    let before: Vec<Value> = queries
        .iter()
        .map(|q| {
            let line = d
                .request(json!({"op": "query", "query": q, "cache": false}))
                .line;
            let want = crate::oracle::oracle(&files, q).unwrap();
            let rows: Vec<Vec<Value>> = serde_json::from_value(line["rows"].clone()).unwrap();
            let columns: Vec<String> = serde_json::from_value(line["columns"].clone()).unwrap();
            crate::oracle::assert_same(q, &columns, &rows, &want).unwrap();
            line["rows"].clone()
        })
        .collect();
    assert_eq!(
        d.request(json!({"op": "explain", "query": queries[0]}))
            .line["source"],
        "duckdb"
    );
    let parsed = d.status()["bytes_parsed"].clone();

    let done = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|s| {
        let querying = s.spawn(|| {
            let mut client = d.client();
            let mut answers = 0;
            while !done.load(Ordering::SeqCst) {
                for (q, want) in queries.iter().zip(&before) {
                    let request = json!({"op": "query", "query": q, "cache": false});
                    let reply = client.request(&request).unwrap();
                    assert!(reply.error().is_none(), "{}", reply.line);
                    assert_eq!(&reply.line["rows"], want, "{q} during the change");
                    answers += 1;
                }
            }
            answers
        });
        // Set however this closure ends: a failed assertion below must fail the test,
        // not leave the scope waiting for the querying thread.
        let _stop = StopOnDrop(&done);
        write_config(&ws, "UTC", &["day_type_country", "hour_publisher"]);
        let reloading = s.spawn(|| ws.run(&["reload", "--socket", "state/rollupd.sock"]));
        // Paused before its commit, the change has derived every file: the status asked
        // only now must show all of them done (asked first, it could predate the pause).
        let marker = d.paused_at("layout.commit");
        let status = d.status();
        let progress = &status["layout_change"];
        assert_eq!(progress["change"]["added"], json!(["hour_publisher"]));
        assert_eq!(progress["change"]["removed"], json!(["minute_type"]));
        assert_eq!(
            (&progress["files"], &progress["files_done"]),
            (&json!(4), &json!(4))
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::remove_file(&marker).unwrap();
        let out = ok_stdout(&reloading.join().unwrap());
        assert!(out.contains("rollups added: hour_publisher"), "{out}");
        assert!(out.contains("rollups removed: minute_type"), "{out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        done.store(true, Ordering::SeqCst);
        querying.join().unwrap()
    });
    assert!(answers >= 6, "only {answers} answers during the change");

    let status = d.status();
    assert_eq!(status["bytes_parsed"], parsed, "no CSV byte is parsed");
    assert!(status["layout_change"].is_null(), "{status}");
    let names: Vec<&str> = status["rollups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["day_type_country", "hour_publisher"]);
    for (q, want) in queries.iter().zip(&before) {
        let line = d
            .request(json!({"op": "query", "query": q, "cache": false}))
            .line;
        assert_eq!(&line["rows"], want, "{q} after the change");
    }
    let explain = d
        .request(json!({"op": "explain", "query": queries[0]}))
        .line;
    assert_eq!(explain["source"], "rollup:hour_publisher");
    d.stop();
}

/// SIGHUP reloads the time zone: rollups and DuckDB count days in the new zone, from the
/// table (nothing parsed). A config that does not check is refused, and the daemon goes
/// on in the layout it has.
#[test]
fn sighup_moves_the_daemon_to_the_configured_time_zone() {
    let ws = Workspace::new();
    let files = ws.generate(2, 3_000, 86);
    write_config(&ws, "UTC", &["day_type_country", "hour_type"]);
    let d = Daemon::start(&ws, &["--config", "rollupd.toml"]);
    d.sync();
    let parsed = d.status()["bytes_parsed"].clone();
    write_config(&ws, "America/New_York", &["day_type_country", "hour_type"]);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    let status = d.status_until("the new zone", |s| s["time_zone"] == "America/New_York");
    assert_eq!(status["bytes_parsed"], parsed);
    let want = json!(day_counts(&files, chrono_tz::America::New_York));
    let raw = json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"],
                     "where": [{"col": "user_id", "op": "gte", "val": 0}]});
    for q in [per_day(), raw] {
        let line = d.request(json!({"op": "query", "query": q})).line;
        assert_eq!(line["rows"], want, "{q}");
    }

    write_config(&ws, "UTC", &["fortnight_type"]);
    let reply = d.client().request(&json!({"op": "reload"})).unwrap();
    let error = reply
        .error()
        .expect("a config that does not check is refused");
    assert!(error.message.contains("fortnight"), "{}", reply.line);
    assert_eq!(d.status()["time_zone"], "America/New_York");
    d.stop();
}

/// A daemon killed in the middle of a layout change (its table already in the new zone,
/// the store not yet committed) restarts in whichever layout the config then names: the
/// old one (the table's time columns go back) or the new one (computed from the table).
/// No file is read again either way.
#[test]
fn a_daemon_killed_during_a_layout_change_restarts_in_either_layout() {
    let ws = Workspace::new();
    let files = ws.generate(2, 3_000, 87);
    write_config(&ws, "UTC", &["day_type_country"]);
    let env = [("ROLLUPD_FAILPOINTS", "layout.commit=abort")];
    let d = Daemon::spawn_with_env(&ws, &["--config", "rollupd.toml"], &env).wait_ready();
    d.sync();
    write_config(&ws, "Asia/Tokyo", &["day_type_country", "hour_type"]);
    assert!(d.client().request(&json!({"op": "reload"})).is_err());
    assert!(!d.wait_exit().success());

    let days = |zone: chrono_tz::Tz, what: &str| {
        let d = Daemon::start(&ws, &["--config", "rollupd.toml"]);
        assert_eq!(
            d.status()["bytes_parsed"],
            0,
            "{what}: a file was read again"
        );
        let want = json!(day_counts(&files, zone));
        let raw = json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"],
                         "where": [{"col": "user_id", "op": "gte", "val": 0}]});
        for q in [per_day(), raw] {
            let line = d.request(json!({"op": "query", "query": q})).line;
            assert_eq!(line["rows"], want, "{what}: {q}");
        }
        d.stop();
    };
    write_config(&ws, "UTC", &["day_type_country"]);
    days(chrono_tz::UTC, "back in the old layout");
    write_config(&ws, "Asia/Tokyo", &["day_type_country", "hour_type"]);
    days(chrono_tz::Asia::Tokyo, "in the new layout");
}
