//! Differential tests: random and reference queries against DuckDB over the raw CSVs.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rollupd::daemon::protocol::{query_response, Format};
use rollupd::model::schema::Column;
use rollupd::query::{plan::covers, Query};
use rollupd::rollup::{codec, Dim, RollupSpec};
use rollupd::Engine;
use serde_json::{json, Value as Json};

use crate::oracle::{assert_same, oracle, query_context, random_query, rollup_query, values_equal};
use crate::util::{answer_rows, reference_queries, Workspace};

/// The rollup a query should be answered from, worked out independently of the planner:
/// the smallest rollup whose key has every column the query touches.
fn expected_source(q: &Query, catalog: &[(RollupSpec, u64)]) -> String {
    let simple_aggs = q.select.iter().all(|item| match item {
        rollupd::query::request::Item::Column(_) => true,
        rollupd::query::request::Item::Agg(a) => match a.arg {
            None | Some(Column::BidPrice | Column::TotalPrice) => true,
            Some(c) => a.func == rollupd::query::request::Func::Count && key_column(c),
        },
    });
    let columns: Vec<Column> = q.key_columns().collect();
    if !q.is_aggregate() || !simple_aggs || !columns.iter().all(|c| key_column(*c)) {
        return "duckdb".into();
    }
    let fits = |spec: &RollupSpec| {
        let all_aggs_fit = q.select.iter().all(|item| match item {
            rollupd::query::request::Item::Agg(a) => match a.arg {
                Some(
                    c @ (Column::Type
                    | Column::Country
                    | Column::AdvertiserId
                    | Column::PublisherId),
                ) => spec.dims.contains(&Dim::of(c).unwrap()),
                Some(Column::Time(t)) => spec.grain.is_some_and(|g| g <= t),
                _ => true,
            },
            _ => true,
        });
        all_aggs_fit
            && columns.iter().all(|c| match c {
                Column::Time(t) => spec.grain.is_some_and(|g| g <= *t),
                c => spec.dims.contains(&Dim::of(*c).unwrap()),
            })
    };
    catalog
        .iter()
        .filter(|(spec, _)| fits(spec))
        .min_by_key(|(_, rows)| *rows)
        .map_or("duckdb".into(), |(spec, _)| {
            format!("rollup:{}", spec.name())
        })
}

fn key_column(c: Column) -> bool {
    matches!(c, Column::Time(_)) || Dim::of(c).is_some()
}

#[test]
fn random_queries_equal_duckdb_over_the_csvs() {
    let ws = Workspace::new();
    let files = ws.generate(3, 4000, 7);
    let engine = ws.build();
    let snap = engine.snapshot();
    let catalog: Vec<(RollupSpec, u64)> = snap
        .catalog
        .iter()
        .map(|e| (e.spec.clone(), e.rows))
        .collect();
    let ctx = query_context(&files);
    let mut rng = ChaCha8Rng::seed_from_u64(20241124);
    let (mut rollup, mut duckdb) = (0, 0);
    for i in 0..1200 {
        let q = random_query(&mut rng, &ctx);
        let parsed = Query::parse(&q).unwrap_or_else(|e| panic!("query {i} {q}: {e}"));
        let answer = engine
            .query(&q)
            .unwrap_or_else(|e| panic!("query {i} {q}: {e}"));
        let want = oracle(&files, &q).unwrap_or_else(|e| panic!("oracle {i} {q}: {e}"));
        assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want)
            .unwrap_or_else(|e| panic!("query {i}: {e}"));
        let expected = expected_source(&parsed, &catalog);
        assert_eq!(answer.source, expected, "query {i} {q}");
        assert_eq!(
            answer.source != "duckdb",
            snap.catalog.iter().any(|e| covers(&e.spec, &parsed)),
            "query {i} {q}"
        );
        if answer.source == "duckdb" {
            duckdb += 1;
        } else {
            rollup += 1;
        }
    }
    assert!(
        rollup >= 300 && duckdb >= 200,
        "rollup {rollup}, duckdb {duckdb}"
    );
}

#[test]
fn reference_queries_come_from_rollups_and_equal_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 3);
    let engine = ws.build();
    let expected = [
        "rollup:day_type_country",
        "rollup:day_type_country_publisher",
        "rollup:day_type_country",
        "rollup:all_type_advertiser",
        "rollup:minute_type",
    ];
    let cases: Vec<(Json, &str)> = reference_queries().into_iter().zip(expected).collect();
    answers_equal_duckdb(&engine, &files, &cases);
}

/// Each query of `cases` is answered from its source, not empty, and equal to DuckDB's
/// answer over `files`.
fn answers_equal_duckdb(engine: &Engine, files: &[PathBuf], cases: &[(Json, &str)]) {
    for (q, source) in cases {
        let answer = engine.query(q).unwrap();
        assert_eq!(answer.source, *source, "{q}");
        assert!(!answer.result.rows.is_empty(), "{q}");
        let want = oracle(files, q).unwrap();
        assert_same(q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
    }
}

/// `ts` spans of whole hours, days and minutes are answered from rollups (as spans of a
/// time column), spans cut inside a minute from DuckDB, and all equal DuckDB over the
/// CSVs.
#[test]
fn ts_spans_of_whole_buckets_come_from_rollups_and_equal_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 4);
    let engine = ws.build();
    let ctx = query_context(&files);
    let day = crate::oracle::parse_day(&ctx.days[ctx.days.len() / 2]).unwrap();
    let t = |h: i64, m: i64| (day * 24 + h) * 3_600_000 + m * 60_000;
    let by_country = |lo: i64, hi: i64| {
        json!({"select": ["country", {"COUNT": "*"}, {"SUM": "bid_price"}, {"MAX": "total_price"}],
               "where": [{"col": "ts", "op": "between", "val": [lo, hi]}],
               "group_by": ["country"]})
    };
    let by_type = |lo: i64, hi: i64| {
        json!({"select": ["type", {"COUNT": "*"}, {"AVG": "bid_price"}],
               "where": [{"col": "ts", "op": "between", "val": [lo, hi]},
                         {"col": "type", "op": "neq", "val": "serve"}],
               "group_by": ["type"]})
    };
    let cases = [
        (
            by_country(t(13, 0), t(14, 0) - 1),
            "rollup:hour_type_country",
        ),
        (
            by_country(t(-24, 0), t(24, 0) - 1),
            "rollup:day_type_country",
        ),
        (by_type(t(9, 17), t(11, 3) - 1), "rollup:minute_type"),
        (by_country(t(13, 0), t(14, 0)), "duckdb"),
        (by_type(t(9, 17) + 1, t(11, 3) - 1), "duckdb"),
    ];
    answers_equal_duckdb(&engine, &files, &cases);
}

/// DuckDB keeps each query shape prepared on its connection: the same shape asked again
/// with other values (of other types too, and after an answer cut short by the row cap)
/// equals DuckDB's answer for those values.
#[test]
fn a_shape_asked_again_with_other_values_equals_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 5_000, 8);
    let engine = ws.build();
    let ctx = query_context(&files);
    let users = |lo: i64, hi: i64| {
        json!({"select": ["type", {"COUNT": "*"}, {"SUM": "bid_price"}],
               "where": [{"col": "user_id", "op": "between", "val": [lo, hi]}],
               "group_by": ["type"]})
    };
    let priced = |min: Json| {
        json!({"select": ["advertiser_id", {"COUNT": "*"}],
               "where": [{"col": "bid_price", "op": "gte", "val": min},
                         {"col": "country", "op": "eq", "val": ctx.countries[0]}],
               "group_by": ["advertiser_id"], "order_by": [{"col": "COUNT(*)", "dir": "desc"}],
               "limit": 5})
    };
    let every_auction =
        json!({"select": ["auction_id", {"COUNT": "*"}], "group_by": ["auction_id"]});
    let mut capped = rollupd::daemon::limits::QueryBudget::default();
    capped.limits.max_answer_rows = 100;
    let cases = [
        users(0, 1 << 40),
        users(1 << 40, 1 << 61),
        priced(json!(0.5)),
        priced(json!(1)),
        users(0, 1 << 62),
        priced(json!(0.25)),
    ];
    for (i, q) in cases.iter().enumerate() {
        let answer = engine.query(q).unwrap();
        assert_eq!(answer.source, "duckdb", "{q}");
        let want = oracle(&files, q).unwrap();
        assert_same(q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
        if i % 2 == 0 {
            let cut = engine.query_within(&every_auction, &capped);
            assert!(matches!(cut, Err(rollupd::Error::TooLarge(_))), "{cut:?}");
        }
    }
}

/// Filters keeping a few advertisers or publishers, a key column after others in their
/// rollups (whose rows are then read from the rollup's list by id rather than
/// skip-scanned), equal DuckDB's: `in` lists, narrow ranges and `eq`, with other filters
/// beside them.
#[test]
fn few_ids_of_a_later_key_column_equal_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 6);
    let engine = ws.build();
    let ctx = query_context(&files);
    let (adv, publ) = (&ctx.advertisers, &ctx.publishers);
    let ids =
        |all: &[i32], at: &[usize]| -> Vec<i32> { at.iter().map(|i| all[i % all.len()]).collect() };
    let by_week = |filter: Json| {
        json!({"select": ["week", "type", {"COUNT": "*"}, {"SUM": "total_price"}, {"MAX": "bid_price"}],
               "where": filter, "group_by": ["week", "type"]})
    };
    let by_pair = |filter: Json| {
        json!({"select": ["publisher_id", "advertiser_id", {"COUNT": "*"}, {"AVG": "bid_price"}],
               "where": filter, "group_by": ["publisher_id", "advertiser_id"]})
    };
    let cases = [
        (
            by_week(json!([{"col": "advertiser_id", "op": "in", "val": ids(adv, &[3, 40, 400])}])),
            "rollup:day_type_advertiser",
        ),
        (
            by_week(
                json!([{"col": "advertiser_id", "op": "eq", "val": adv[adv.len() / 2]},
                        {"col": "type", "op": "neq", "val": "serve"},
                        {"col": "day", "op": "gte", "val": ctx.days[ctx.days.len() / 3]}]),
            ),
            "rollup:day_type_advertiser",
        ),
        (
            by_week(json!([{"col": "advertiser_id", "op": "between", "val": [adv[10], adv[12]]}])),
            "rollup:day_type_advertiser",
        ),
        (
            by_pair(
                json!([{"col": "publisher_id", "op": "in", "val": ids(publ, &[1, 20, 200, 700])}]),
            ),
            "rollup:all_advertiser_publisher",
        ),
        (
            by_pair(
                json!([{"col": "publisher_id", "op": "in", "val": ids(publ, &[5, 6, 50])},
                        {"col": "advertiser_id", "op": "lt", "val": adv[adv.len() / 2]}]),
            ),
            "rollup:all_advertiser_publisher",
        ),
    ];
    answers_equal_duckdb(&engine, &files, &cases);
}

/// Answers in which every matching rollup row is a group of its own, in order (answered
/// off the rollup's columns without grouping), equal DuckDB's: every aggregate a rollup
/// keeps, with filters and limits, and groups that are not in the rows' order.
#[test]
fn a_row_per_group_equals_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 5);
    let engine = ws.build();
    let aggs = json!([{"COUNT": "*"}, {"COUNT": "bid_price"}, {"SUM": "bid_price"},
                      {"AVG": "total_price"}, {"MIN": "bid_price"}, {"MAX": "total_price"}]);
    let with = |group: &[&str], filters: Json, limit: Option<u64>| {
        let mut select: Vec<Json> = group.iter().map(|c| json!(c)).collect();
        select.extend(aggs.as_array().unwrap().iter().cloned());
        // COUNT of a key column the rollup keeps, NULL in some rows.
        let counted = if group.contains(&"hour") {
            "country"
        } else {
            "publisher_id"
        };
        select.push(json!({"COUNT": counted}));
        let mut q = json!({"select": select, "where": filters, "group_by": group});
        if let Some(n) = limit {
            q["limit"] = json!(n);
        }
        q
    };
    let known = json!([{"col": "advertiser_id", "op": "gte", "val": 0},
                       {"col": "publisher_id", "op": "gte", "val": 0}]);
    let one = json!([{"col": "type", "op": "eq", "val": "impression"},
                     {"col": "country", "op": "eq", "val": "US"}]);
    let queries = [
        with(&["advertiser_id", "publisher_id"], known.clone(), None),
        with(&["advertiser_id", "publisher_id"], known.clone(), Some(25)),
        with(&["advertiser_id", "publisher_id"], json!([]), None),
        with(&["publisher_id", "advertiser_id"], known, Some(40)),
        with(&["hour"], one.clone(), None),
        with(&["day", "hour"], one, Some(30)),
    ];
    for q in queries {
        let answer = engine.query(&q).unwrap();
        assert!(answer.source.starts_with("rollup:"), "{q}");
        assert!(!answer.result.rows.is_empty(), "{q}");
        let want = oracle(&files, &q).unwrap();
        assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
    }
}

#[test]
fn rollups_are_identical_whatever_the_fold_order() {
    let ws = Workspace::new();
    ws.generate(4, 3000, 11);
    let one = ws.build();
    let other = Workspace::new();
    for (i, f) in ws.files().iter().rev().enumerate() {
        std::fs::copy(f, other.watch().join(format!("renamed-{i}.csv"))).unwrap();
    }
    let two = other.build();
    let (a, b) = (one.snapshot(), two.snapshot());
    assert_eq!(a.rollups.len(), b.rollups.len());
    // Each state codes countries in the order it met them: compare under one dictionary.
    let (ours, theirs) = (one.store().countries(), two.store().countries());
    for (x, y) in a.rollups.iter().zip(&b.rollups) {
        let y = codec::decode(&codec::encode(&y.merged(), theirs), ours).unwrap();
        assert_eq!(*x.merged(), y);
    }
}

/// Answers of thousands of groups, most of them taken (sorted by radix passes), equal
/// DuckDB's, ties included: ordered by a count (few values, many ties), by a count then
/// a group column, by a sum (cut keys), by a group column alone, by nothing (groups out
/// of the rollup's order), and a short answer whose last taken count ties many groups.
#[test]
fn large_answers_with_tied_sort_keys_equal_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 8);
    let engine = ws.build();
    let by = |group: &[&str], agg: Json, order: Json, limit: Option<u64>| {
        let mut select: Vec<Json> = group.iter().map(|c| json!(c)).collect();
        select.push(agg);
        let mut q = json!({"select": select, "group_by": group, "order_by": order});
        if let Some(n) = limit {
            q["limit"] = json!(n);
        }
        q
    };
    let pair = ["advertiser_id", "publisher_id"];
    let count = json!({"COUNT": "*"});
    let queries = [
        by(
            &pair,
            count.clone(),
            json!([{"col": "COUNT(*)", "dir": "desc"}]),
            None,
        ),
        by(
            &pair,
            count.clone(),
            json!([{"col": "COUNT(*)", "dir": "asc"}, {"col": "publisher_id", "dir": "desc"}]),
            Some(30_000),
        ),
        by(
            &pair,
            json!({"SUM": "bid_price"}),
            json!([{"col": "SUM(bid_price)", "dir": "desc"}]),
            None,
        ),
        by(
            &["publisher_id", "advertiser_id"],
            count.clone(),
            json!([{"col": "publisher_id", "dir": "desc"}]),
            None,
        ),
        by(
            &["publisher_id", "advertiser_id"],
            count.clone(),
            json!([]),
            None,
        ),
        by(
            &pair,
            count,
            json!([{"col": "COUNT(*)", "dir": "asc"}]),
            Some(100),
        ),
    ];
    for q in queries {
        let answer = engine.query(&q).unwrap();
        assert!(answer.source.starts_with("rollup:"), "{q}");
        let limited = q.get("limit").is_some_and(|l| l.as_u64() < Some(1000));
        assert!(
            limited || answer.result.rows.len() > 8192,
            "{q}: too few groups"
        );
        let want = oracle(&files, &q).unwrap();
        assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
    }
}

/// Rollup-shaped random queries (filters on every key column with every op, `in` lists,
/// order_by, limit) equal DuckDB over the CSVs, and every output format carries the same
/// answer as the json rows.
#[test]
fn rollup_queries_equal_duckdb_in_every_format() {
    let ws = Workspace::new();
    let files = ws.generate(3, 3000, 17);
    let engine = ws.build();
    let ctx = query_context(&files);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let limits = rollupd::daemon::limits::QueryLimits::default();
    // The same queries with their filter searches and scans cut in parts of a few rows,
    // each on a thread.
    let mut threaded = rollupd::daemon::limits::QueryBudget::default();
    threaded.limits.parallel_rows = 16;
    let mut rollup = 0;
    for i in 0..400 {
        let q = rollup_query(&mut rng, &ctx);
        let answer = engine
            .query(&q)
            .unwrap_or_else(|e| panic!("query {i} {q}: {e}"));
        let rows = answer_rows(&answer);
        let want = oracle(&files, &q).unwrap_or_else(|e| panic!("oracle {i} {q}: {e}"));
        assert_same(&q, &answer.result.columns, &rows, &want)
            .unwrap_or_else(|e| panic!("query {i}: {e}"));
        rollup += usize::from(answer.source.starts_with("rollup:"));
        let on_threads = engine.query_within(&q, &threaded).unwrap();
        assert_eq!(answer_rows(&on_threads), rows, "query {i} {q} on threads");
        for format in [Format::Json, Format::Csv, Format::Arrow] {
            let (line, payload) = query_response(&answer, format, &limits).unwrap();
            let got = match format {
                Format::Json => serde_json::from_str::<Json>(&line).unwrap()["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_array().unwrap().clone())
                    .collect(),
                Format::Csv => csv_rows(&payload, &rows),
                Format::Arrow => arrow_rows(&payload),
            };
            // Floats compare as the oracle does: serde_json's parse of a float is not
            // always the nearest double.
            let same = |a: Option<&Vec<Json>>, b: Option<&Vec<Json>>| match (a, b) {
                (Some(a), Some(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_equal(x, y))
                }
                _ => false,
            };
            let first = (0..got.len().max(rows.len())).find(|r| !same(got.get(*r), rows.get(*r)));
            assert!(
                first.is_none(),
                "query {i} {q} as {}: row {first:?}: {:?} vs {:?}",
                format.name(),
                first.and_then(|r| got.get(r)),
                first.and_then(|r| rows.get(r))
            );
        }
    }
    assert!(rollup >= 150, "only {rollup} of 400 answered from rollups");
}

/// CSV rows read back as JSON values, typed like `like` (the json rows).
fn csv_rows(payload: &[u8], like: &[Vec<Json>]) -> Vec<Vec<Json>> {
    let text = std::str::from_utf8(payload).unwrap();
    assert_eq!(text.lines().count(), like.len() + 1, "{text}");
    text.lines()
        .skip(1)
        .zip(like)
        .map(|(line, want)| {
            line.split(',')
                .zip(want)
                .map(|(field, w)| match w {
                    _ if field.is_empty() => Json::Null,
                    Json::Number(n) if n.is_f64() => json!(field.parse::<f64>().unwrap()),
                    Json::Number(_) => serde_json::from_str(field).unwrap(),
                    _ => json!(field),
                })
                .collect()
        })
        .collect()
}

/// Arrow IPC rows as JSON values.
fn arrow_rows(payload: &[u8]) -> Vec<Vec<Json>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
    let mut out = Vec::new();
    for batch in arrow_ipc::reader::StreamReader::try_new(payload, None).unwrap() {
        let batch = batch.unwrap();
        for r in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        _ if c.is_null(r) => Json::Null,
                        DataType::Int64 => json!(c.as_primitive::<Int64Type>().value(r)),
                        DataType::Float64 => json!(c.as_primitive::<Float64Type>().value(r)),
                        DataType::Decimal128(..) => serde_json::from_str(
                            &c.as_primitive::<Decimal128Type>().value(r).to_string(),
                        )
                        .unwrap(),
                        DataType::Utf8 => json!(c.as_string::<i32>().value(r)),
                        other => panic!("unexpected arrow type {other}"),
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Filters on prices (compared by DuckDB as the decimal's cast to a float, and by the
/// daemon between exact decimal bounds) keep the rows DuckDB keeps over the CSVs' floats:
/// literals a decimal holds, ones of more digits than it has, a price of the data itself,
/// bounds beyond every price, and the comparisons left as they are (`neq`, `in`).
#[test]
fn price_filters_keep_the_rows_duckdb_keeps() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 7);
    let engine = ws.build();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let held: Vec<f64> = (text.lines().skip(1))
        .filter_map(|line| line.split(',').nth(5)?.parse().ok())
        .take(3)
        .collect();
    let count = |col: &str, op: &str, val: Json| {
        json!({"select": [{"COUNT": "*"}, {"SUM": "bid_price"}, {"MAX": "total_price"}],
               "where": [{"col": col, "op": op, "val": val}]})
    };
    let mut cases = Vec::new();
    for col in ["bid_price", "total_price"] {
        cases.extend([
            count(col, "gte", json!(0.99)),
            count(col, "gt", json!(0.5)),
            count(col, "lte", json!(0.123_456_789_123)),
            count(col, "lt", json!(0.3)),
            count(col, "between", json!([0.25, 0.750_000_000_1])),
            count(col, "eq", json!(held[0])),
            count(col, "gte", json!(1e12)),
            count(col, "lte", json!(-5)),
            count(col, "neq", json!(held[1])),
            count(col, "in", json!([held[1], held[2], 0.1])),
        ]);
    }
    let cases: Vec<(Json, &str)> = cases.into_iter().map(|q| (q, "duckdb")).collect();
    answers_equal_duckdb(&engine, &files, &cases);
    let eq = engine.query(&cases[5].0).unwrap();
    assert_ne!(
        answer_rows(&eq)[0][0],
        json!(0),
        "a price of the data is found"
    );
}

/// Filters on time columns that DuckDB answers (grouped by advertiser and country, which
/// no rollup holds), each also bounding the `day` column: every bucket and comparison,
/// on a bucket's start or inside one, equal DuckDB over the CSVs.
#[test]
fn time_filters_answered_by_duckdb_equal_duckdb() {
    let ws = Workspace::new();
    let files = ws.generate(2, 20_000, 8);
    let engine = ws.build();
    let ctx = query_context(&files);
    let day = |i: usize| ctx.days[i % ctx.days.len()].clone();
    let (d0, d1) = (day(40), day(43));
    let by_pair = |col: &str, op: &str, val: Json| {
        json!({"select": ["advertiser_id", "country", {"COUNT": "*"}, {"SUM": "bid_price"}],
               "where": [{"col": col, "op": op, "val": val}],
               "group_by": ["advertiser_id", "country"]})
    };
    let cases: Vec<(Json, &str)> = [
        by_pair("day", "eq", json!(d0)),
        by_pair("day", "between", json!([d0, d1])),
        by_pair("day", "in", json!([d0, d1])),
        by_pair("week", "eq", json!(d0)),
        by_pair("week", "lte", json!(d0)),
        by_pair("week", "gt", json!(d1)),
        by_pair("hour", "lt", json!(format!("{d0} 10:00:00"))),
        by_pair("hour", "gte", json!(format!("{d1} 23:00:00"))),
        by_pair(
            "minute",
            "between",
            json!([format!("{d0} 10:17"), format!("{d0} 13:44")]),
        ),
        by_pair("minute", "eq", json!(format!("{d1} 00:00"))),
    ]
    .into_iter()
    .filter(|q| !oracle(&files, q).unwrap().rows.is_empty())
    .map(|q| (q, "duckdb"))
    .collect();
    assert!(cases.len() >= 8, "{} cases with rows", cases.len());
    answers_equal_duckdb(&engine, &files, &cases);
}
