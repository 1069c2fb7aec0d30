//! Bad input: a file that does not parse is reported with path, line and reason and
//! leaves the store as it was; `max_bad_rows` lets a file skip a few bad rows.

use rollupd::{Engine, EngineOptions};

use crate::history::{assert_fresh, assert_unchanged};
use crate::util::Workspace;

const HEADER: &str =
    "ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price,country\n";
const GOOD: &str =
    "1717243200000,impression,3f1c2a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f,1001,2001,0.5,42,,US\n";

fn good_rows(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{},serve,3f1c2a9e-1d2b-4c5d-8e9f-{:012x},{},{},,7,,JP\n",
                1_717_243_200_000i64 + i as i64 * 61_000,
                i,
                1000 + i % 7,
                2000 + i % 3
            )
        })
        .collect()
}

/// A workspace with two good files folded; returns it and its engine.
fn folded() -> (Workspace, Engine) {
    let ws = Workspace::new();
    ws.generate(2, 1000, 8);
    let e = Engine::open(&ws.state(), EngineOptions::default()).unwrap();
    assert!(e.update(&ws.watch()).unwrap().failed.is_empty());
    (ws, e)
}

/// Adds `content` as a file and checks it is reported (with `needle` in the reason)
/// while the store, rollups and table stay as they were.
fn rejects(content: &[u8], needle: &str) {
    let (ws, e) = folded();
    let before = e.snapshot();
    let rows = e.table().row_count().unwrap();
    let good_files = ws.files();
    let path = ws.write("bad.csv", content);
    let report = e.update(&ws.watch()).unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let (p, reason) = (&report.failed[0].path, &report.failed[0].reason);
    assert_eq!(p, &path);
    assert!(
        reason.contains(needle),
        "reason {reason:?} lacks {needle:?}"
    );
    assert!(
        reason.contains("bad.csv"),
        "reason {reason:?} lacks the path"
    );
    assert_eq!(e.table().row_count().unwrap(), rows);
    assert_eq!(e.store().files().unwrap().len(), 2);
    assert_unchanged(&before, &e.snapshot(), "after a bad file");
    assert_fresh(&e, &good_files, "after a bad file");
}

#[test]
fn missing_header_column() {
    rejects(
        b"ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price\n1,serve,,1,1,,1,\n",
        "missing column \"country\"",
    );
}

#[test]
fn wrong_field_count() {
    let text = format!("{HEADER}{GOOD}{GOOD}1717243200000,serve,,1001,2001,,42,\n{GOOD}");
    rejects(text.as_bytes(), "line 4");
}

#[test]
fn non_numeric_number() {
    let text = format!("{HEADER}{GOOD}1717243200000,serve,,1001,lots,,42,,US\n");
    rejects(text.as_bytes(), "line 3");
}

#[test]
fn invalid_utf8() {
    let mut text = format!("{HEADER}{GOOD}{GOOD}1717243200000,serve,,1001,2001,,42,,").into_bytes();
    text.extend_from_slice(b"\xff\xfe\n");
    rejects(&text, "line 4");
}

#[test]
fn empty_file() {
    rejects(b"", "empty file");
}

#[test]
fn ten_megabyte_line() {
    let text = format!(
        "{HEADER}{GOOD}1717243200000,serve,,1001,2001,,42,,{}\n",
        "U".repeat(10 << 20)
    );
    rejects(text.as_bytes(), "longer than");
}

#[test]
fn unknown_event_type() {
    let text = format!("{HEADER}{GOOD}1717243200000,bounce,,1001,2001,,42,,US\n");
    rejects(text.as_bytes(), "line 3");
}

#[test]
fn header_only_file_is_tracked_with_no_rows() {
    let (ws, e) = folded();
    let before = e.snapshot();
    ws.write("header.csv", HEADER);
    let report = e.update(&ws.watch()).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.added, 1);
    assert_unchanged(&before, &e.snapshot(), "a header-only file");
}

#[test]
fn last_line_without_newline_folds() {
    let (ws, e) = folded();
    let text = format!("{HEADER}{}", good_rows(5).trim_end());
    ws.write("nonl.csv", text);
    let report = e.update(&ws.watch()).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.rows, 5);
    assert_fresh(&e, &ws.files(), "no final newline");
}

#[test]
fn a_bad_rewrite_keeps_the_earlier_contribution() {
    let (ws, e) = folded();
    let path = ws.write("x.csv", format!("{HEADER}{}", good_rows(10)));
    e.update(&ws.watch()).unwrap();
    let before = e.snapshot();
    let rows = e.table().row_count().unwrap();
    std::fs::write(&path, format!("{HEADER}{}oops\n", good_rows(3))).unwrap();
    let report = e.update(&ws.watch()).unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(e.table().row_count().unwrap(), rows);
    assert_unchanged(&before, &e.snapshot(), "a bad rewrite");
}

#[test]
fn max_bad_rows_skips_counts_and_reports() {
    let ws = Workspace::new();
    let bad = "1717243200000,serve,,1001,oops,,42,,US\n";
    let text = format!("{HEADER}{}{bad}{}{bad}", good_rows(4), good_rows(3));
    ws.write("some-bad.csv", &text);
    let opts = EngineOptions {
        max_bad_rows: 2,
        ..EngineOptions::default()
    };
    let e = Engine::open(&ws.state(), opts).unwrap();
    let report = e.update(&ws.watch()).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.rows, 7);
    let lines: Vec<&str> = report.skipped.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("line 6 ") && lines[1].starts_with("line 10 "),
        "{lines:?}"
    );
    assert_eq!(e.store().files().unwrap()[0].bad_rows, 2);

    let ws = Workspace::new();
    ws.write("too-bad.csv", format!("{text}{bad}"));
    let opts = EngineOptions {
        max_bad_rows: 2,
        ..EngineOptions::default()
    };
    let e = Engine::open(&ws.state(), opts).unwrap();
    let report = e.update(&ws.watch()).unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        report.failed[0].reason.contains("more than 2 bad rows"),
        "{report:?}"
    );
}
