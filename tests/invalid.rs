//! Invalid queries get `invalid_query` with a message naming the offending part.

use rollupd::Error;

use crate::util::Workspace;

fn expect_invalid(engine: &rollupd::Engine, q: &str, needle: &str) {
    let json: serde_json::Value = serde_json::from_str(q).unwrap();
    match engine.query(&json) {
        Err(e @ Error::InvalidQuery(_)) => {
            assert_eq!(e.kind(), rollupd::daemon::protocol::ErrorKind::InvalidQuery);
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "{q}: message {msg:?} lacks {needle:?}"
            );
        }
        other => panic!("{q}: expected invalid_query, got {other:?}"),
    }
}

fn engine() -> (Workspace, rollupd::Engine) {
    let ws = Workspace::new();
    ws.generate(1, 500, 1);
    let e = ws.build();
    (ws, e)
}

#[test]
fn unknown_column() {
    let (_ws, e) = engine();
    expect_invalid(&e, r#"{"select":["colour"],"limit":1}"#, "\"colour\"");
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"colour","op":"eq","val":"x"}]}"#,
        "where[0]",
    );
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"group_by":["colour"]}"#,
        "group_by[0]",
    );
}

#[test]
fn unknown_op() {
    let (_ws, e) = engine();
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"type","op":"like","val":"imp%"}]}"#,
        "\"like\"",
    );
}

#[test]
fn unknown_aggregate() {
    let (_ws, e) = engine();
    expect_invalid(&e, r#"{"select":[{"MEDIAN":"bid_price"}]}"#, "\"MEDIAN\"");
    expect_invalid(&e, r#"{"select":[{"SUM":"*"}]}"#, "SUM(*)");
    expect_invalid(&e, r#"{"select":[{"AVG":"country"}]}"#, "AVG(country)");
}

#[test]
fn wrong_value_type() {
    let (_ws, e) = engine();
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"advertiser_id","op":"eq","val":"many"}]}"#,
        "advertiser_id",
    );
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"country","op":"eq","val":7}]}"#,
        "country",
    );
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"day","op":"between","val":"2024-01-01"}]}"#,
        "between",
    );
}

#[test]
fn bad_date() {
    let (_ws, e) = engine();
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"day","op":"eq","val":"2024-02-30"}]}"#,
        "bad day",
    );
    expect_invalid(
        &e,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"hour","op":"gt","val":"yesterday"}]}"#,
        "bad hour",
    );
}

#[test]
fn non_grouped_select_column() {
    let (_ws, e) = engine();
    expect_invalid(
        &e,
        r#"{"select":["country",{"COUNT":"*"}],"group_by":["type"]}"#,
        "\"country\"",
    );
}

#[test]
fn negative_limit() {
    let (_ws, e) = engine();
    expect_invalid(&e, r#"{"select":[{"COUNT":"*"}],"limit":-1}"#, "limit");
}

#[test]
fn injection_values_are_rejected_not_spliced() {
    let (_ws, e) = engine();
    for col in [
        "type",
        "country",
        "advertiser_id",
        "day",
        "auction_id",
        "bid_price",
    ] {
        let q = format!(
            r#"{{"select":[{{"COUNT":"*"}}],"where":[{{"col":"{col}","op":"eq","val":"x' OR '1'='1"}}]}}"#
        );
        expect_invalid(&e, &q, col);
    }
}

#[test]
fn order_by_must_name_a_selected_column() {
    let (_ws, e) = engine();
    expect_invalid(
        &e,
        r#"{"select":["type",{"COUNT":"*"}],"group_by":["type"],"order_by":[{"col":"country"}]}"#,
        "order_by[0]",
    );
}
