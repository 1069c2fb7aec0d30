//! Input format tests: files written differently fold to the same answers as DuckDB reads.

use std::path::PathBuf;

use rollupd::gen::{write_file, GenOptions};

use crate::oracle::{assert_same, oracle};
use crate::util::{answer_rows, reference_queries, Workspace};

/// One generated file's CSV text.
fn sample(rows: usize, index: usize) -> String {
    let mut out = Vec::new();
    let opts = GenOptions {
        files: 1,
        rows_per_file: rows,
        seed: 5,
    };
    write_file(&mut out, &opts, index).unwrap();
    String::from_utf8(out).unwrap()
}

/// Rewrites CSV text field by field (the sample has no quoted fields).
fn map_fields(text: &str, f: impl Fn(usize, Vec<&str>) -> Vec<String>) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        out.push_str(&f(i, line.split(',').collect()).join(","));
        out.push('\n');
    }
    out
}

fn check_queries(ws: &Workspace, files: &[PathBuf]) {
    let engine = ws.build();
    let mut queries = reference_queries();
    queries.extend(
        [
            r#"{"select":["type",{"COUNT":"*"},{"SUM":"bid_price"},{"MAX":"total_price"}],"group_by":["type"]}"#,
            r#"{"select":["country",{"COUNT":"auction_id"},{"SUM":"user_id"}],"group_by":["country"]}"#,
            r#"{"select":["ts","type","auction_id","bid_price","country","minute"],"where":[{"col":"type","op":"neq","val":"serve"}],"order_by":[{"col":"ts","dir":"desc"}],"limit":20}"#,
        ]
        .iter()
        .map(|q| serde_json::from_str(q).unwrap()),
    );
    for q in &queries {
        let answer = engine.query(q).unwrap();
        let want = oracle(files, q).unwrap();
        assert_same(q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
    }
}

#[test]
fn crlf_line_endings_fold_correctly() {
    let ws = Workspace::new();
    let f = ws.write("crlf.csv", sample(2000, 0).replace('\n', "\r\n"));
    check_queries(&ws, &[f]);
}

#[test]
fn utf8_bom_folds_correctly() {
    let ws = Workspace::new();
    let f = ws.write("bom.csv", format!("\u{feff}{}", sample(2000, 1)));
    check_queries(&ws, &[f]);
}

#[test]
fn quoted_fields_fold_correctly() {
    let ws = Workspace::new();
    let text = map_fields(&sample(2000, 2), |_, fields| {
        fields
            .iter()
            .map(|f| {
                if f.is_empty() {
                    String::new()
                } else {
                    format!("\"{f}\"")
                }
            })
            .collect()
    });
    let f = ws.write("quoted.csv", text);
    check_queries(&ws, &[f]);
}

#[test]
fn columns_in_another_order_fold_correctly() {
    let ws = Workspace::new();
    let order = [8, 7, 0, 5, 2, 1, 6, 4, 3];
    let text = map_fields(&sample(2000, 3), |_, fields| {
        order.iter().map(|&i| fields[i].to_string()).collect()
    });
    let a = ws.write("reordered.csv", text);
    let b = ws.write("plain.csv", sample(1500, 4));
    check_queries(&ws, &[a, b]);
}

#[test]
fn extra_columns_are_ignored() {
    let ws = Workspace::new();
    let text = map_fields(&sample(2000, 5), |i, mut fields| {
        let (a, b) = if i == 0 {
            ("note".to_string(), "campaign".to_string())
        } else {
            (format!("\"free text, row {i}\""), format!("c{}", i % 7))
        };
        let mut out: Vec<String> = vec![a];
        out.extend(fields.drain(..).map(str::to_string));
        out.push(b);
        out
    });
    let f = ws.write("extra.csv", text);
    check_queries(&ws, &[f]);
}
