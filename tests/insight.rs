//! `explain` and `advise` against the real daemon: why each rollup was not chosen, and
//! a proposed rollup that, once added, answers the logged shape.

use serde_json::{json, Value};

use crate::util::{ok_stdout, Daemon, Workspace};

fn reason_of(reply: &Value, rollup: &str) -> (String, String) {
    let r = reply["rollups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rollup)
        .unwrap_or_else(|| panic!("{rollup} in {reply}"));
    let reason = &r["reason"];
    (
        reason["kind"].as_str().unwrap_or("").to_string(),
        reason["message"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn explain_names_the_reason_for_each_rejected_rollup() {
    let ws = Workspace::new();
    ws.generate(2, 2000, 3);
    let daemon = Daemon::start(&ws, &[]);
    daemon.sync();
    let q = json!({"select": ["hour", "advertiser_id", {"COUNT": "*"}],
                   "group_by": ["hour", "advertiser_id"]});
    let reply = daemon.request(json!({"op": "explain", "query": q})).line;
    assert_eq!(reply["source"], "duckdb", "{reply}");
    assert_eq!(reply["rows_scanned"], 4000);
    assert!(reply["sql"].as_str().unwrap().contains("GROUP BY"));
    let rollups = reply["rollups"].as_array().unwrap();
    assert_eq!(rollups.len(), 9);
    assert!(rollups
        .iter()
        .all(|r| r["chosen"] == false && r["reason"]["kind"].is_string()));
    let (kind, msg) = reason_of(&reply, "day_type_advertiser");
    assert_eq!(kind, "grain");
    assert!(msg.contains("`hour`") && msg.contains("`day`"), "{msg}");
    let (kind, msg) = reason_of(&reply, "hour_type_country");
    assert_eq!(
        (kind.as_str(), msg.as_str()),
        ("missing_column", "no column `advertiser_id`")
    );

    let min = json!({"select": ["type", {"MIN": "advertiser_id"}], "group_by": ["type"]});
    let reply = daemon.request(json!({"op": "explain", "query": min})).line;
    let (kind, msg) = reason_of(&reply, "all_type_advertiser");
    assert_eq!(kind, "aggregate");
    assert!(msg.contains("MIN(advertiser_id)"), "{msg}");
    let raw = json!({"select": ["ts"], "limit": 1});
    let reply = daemon.request(json!({"op": "explain", "query": raw})).line;
    assert_eq!(reason_of(&reply, "minute_type").0, "raw_rows");

    let by_day = json!({"select": ["day", {"SUM": "bid_price"}], "group_by": ["day"]});
    let reply = daemon
        .request(json!({"op": "explain", "query": by_day}))
        .line;
    assert_eq!(reply["rollup"], "day_type_country", "{reply}");
    assert_eq!(reason_of(&reply, "day_type_country").0, "");
    assert_eq!(reason_of(&reply, "day_type_country_publisher").0, "larger");
    assert_eq!(reason_of(&reply, "all_type_advertiser").0, "grain");
    let rows = reply["rows_scanned"].as_u64().unwrap();
    let chosen = &reply["rollups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chosen"] == true)
        .unwrap();
    assert!(
        rows > 0 && rows == chosen["rows"].as_u64().unwrap(),
        "{reply}"
    );
    let answer = daemon.request(json!({"op": "query", "query": by_day})).line;
    assert_eq!(answer["source"], "rollup:day_type_country");

    let text = ok_stdout(&ws.run(&["explain", "--state", "state", &q.to_string()]));
    assert!(
        text.starts_with("answered from DuckDB, reading 4000 rows"),
        "{text}"
    );
    assert!(text.contains("no column `advertiser_id`"), "{text}");
    let bad = ws.run(&["explain", "--state", "state", r#"{"select":["nope"]}"#]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_query"));
}

#[test]
fn advise_proposes_a_rollup_that_then_answers_the_logged_shape() {
    let ws = Workspace::new();
    ws.generate(2, 3000, 4);
    let daemon = Daemon::start(&ws, &[]);
    daemon.sync();
    let q = json!({"select": ["hour", {"SUM": "bid_price"}],
                   "where": [{"col": "publisher_id", "op": "lt", "val": 1000000}],
                   "group_by": ["hour"]});
    let users = json!({"select": ["user_id", {"COUNT": "*"}], "group_by": ["user_id"], "limit": 3});
    for _ in 0..3 {
        let reply = daemon.request(json!({"op": "query", "query": q}));
        assert_eq!(reply.line["source"], "duckdb");
    }
    daemon.request(json!({"op": "query", "query": users}));
    let by_day = json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"]});
    daemon.request(json!({"op": "query", "query": by_day}));
    // The statistics outlive a restart (into a config file, empty for now).
    daemon.stop();
    std::fs::write(ws.tmp.path().join("advised.toml"), "").unwrap();
    let daemon = Daemon::start(&ws, &["--config", "advised.toml"]);
    let advice = daemon.request(json!({"op": "advise"})).line;
    let shapes = advice["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 2, "only DuckDB-answered shapes: {advice}");
    let hourly = shapes
        .iter()
        .find(|s| s["shape"] == "select hour, SUM(bid_price) where publisher_id group by hour")
        .unwrap_or_else(|| panic!("{advice}"));
    assert_eq!(hourly["count"], 3);
    assert!(hourly["p99_us"].as_u64().unwrap() >= hourly["p50_us"].as_u64().unwrap());
    assert_eq!(hourly["rollup"], "hour_publisher");
    let estimate = hourly["rollup_rows"].as_u64().unwrap();
    let user = shapes.iter().find(|s| s["rollup"].is_null()).unwrap();
    assert!(
        user["reason"].as_str().unwrap().contains("`user_id`"),
        "{user}"
    );
    let text = ok_stdout(&ws.run(&["advise", "--state", "state"]));
    assert!(text.contains("add rollup hour_publisher"), "{text}");

    // Added to the config and reloaded, the proposed rollup answers the shape, and has
    // the rows advise counted.
    let config = "rollups = [\"day_type_country\", \"hour_publisher\"]\n";
    std::fs::write(ws.tmp.path().join("advised.toml"), config).unwrap();
    let reload = ok_stdout(&ws.run(&["reload", "--state", "state"]));
    assert!(reload.contains("rollups added: hour_publisher"), "{reload}");
    let reply = daemon.request(json!({"op": "query", "query": q}));
    assert_eq!(reply.line["source"], "rollup:hour_publisher");
    let status = daemon.status();
    let rollup = status["rollups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hour_publisher")
        .unwrap();
    assert_eq!(rollup["rows"], estimate, "{status}");
    daemon.stop();
}
