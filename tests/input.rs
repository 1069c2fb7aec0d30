//! Input format tests: files written differently fold to the same answers as DuckDB reads.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use rollupd::engine::{Engine, EngineOptions};

use rollupd::app::gen::{write_file, GenOptions};

use crate::history::assert_fresh;
use crate::oracle::{assert_same, oracle};
use crate::util::{answer_rows, reference_queries, Workspace};

/// One generated file's CSV text.
pub fn sample(rows: usize, index: usize) -> String {
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
pub fn map_fields(text: &str, f: impl Fn(usize, Vec<&str>) -> Vec<String>) -> String {
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

/// A file larger than the memory budget folds a chunk of lines at a time: no chunk
/// parsed is larger than the budget allows, and the rollups and answers equal a fresh
/// build and DuckDB; so do an append to it and a rewrite of it.
#[test]
fn a_file_bigger_than_the_memory_budget_folds_within_it() {
    let ws = Workspace::new();
    let path = ws.write("big.csv", sample(60_000, 0));
    let chunk = 256 << 10;
    let opts = EngineOptions {
        batch_bytes: 1 << 20,
        chunk_bytes: chunk,
        ..EngineOptions::default()
    };
    let engine = Engine::open(&ws.state(), opts).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size > 4 << 20,
        "the file ({size} bytes) is larger than the budget"
    );
    let tail: String = sample(20_000, 1).split_inclusive('\n').skip(1).collect();
    let rewrite = sample(30_000, 2);
    for (step, change) in [None, Some(tail.as_str()), Some(rewrite.as_str())]
        .into_iter()
        .enumerate()
    {
        match (step, change) {
            (1, Some(tail)) => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                std::io::Write::write_all(&mut f, tail.as_bytes()).unwrap();
            }
            (_, Some(text)) => std::fs::write(&path, text).unwrap(),
            _ => {}
        }
        let report = engine.update(&ws.watch()).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let stats = engine.stats();
        assert!(stats.chunks_folded.load(Ordering::Relaxed) > 8 * (step as u64 + 1));
        assert!(stats.largest_chunk.load(Ordering::Relaxed) <= chunk as u64 + (64 << 10));
        let files = ws.files();
        assert_fresh(&engine, &files, &format!("step {step}"));
        for q in reference_queries() {
            let answer = engine.query(&q).unwrap();
            let want = oracle(&files, &q).unwrap();
            assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
        }
    }
}

/// A bad line deep in a file folded a chunk at a time fails that file alone, after its
/// first chunks' rows went to DuckDB: they are taken out again, for a new file and for an
/// appended tail alike, and the other files' answers stand.
#[test]
fn a_bad_line_deep_in_a_chunked_file_leaves_no_rows_of_it() {
    let ws = Workspace::new();
    let good = ws.write("good.csv", sample(2_000, 3));
    let text = sample(40_000, 0);
    let cut = text.len() * 9 / 10;
    let bad = format!("{}x,y\n{}", &text[..cut], &text[cut..]);
    let big = ws.write("big.csv", &bad);
    let opts = EngineOptions {
        chunk_bytes: 256 << 10,
        ..EngineOptions::default()
    };
    let engine = Engine::open(&ws.state(), opts).unwrap();
    let count = serde_json::json!({
        "select": [{"COUNT": "*"}],
        "where": [{"col": "user_id", "op": "gte", "val": 0}]
    });
    let duckdb_count = |engine: &Engine| {
        let a = engine.query(&count).unwrap();
        assert_eq!(a.source, "duckdb");
        answer_rows(&a)[0][0].clone()
    };
    let report = engine.update(&ws.watch()).unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(engine.stats().chunks_folded.load(Ordering::Relaxed) > 2);
    let want = oracle(std::slice::from_ref(&good), &count).unwrap();
    assert_same(
        &count,
        &["COUNT(*)".into()],
        &[vec![duckdb_count(&engine)]],
        &want,
    )
    .unwrap();
    assert_fresh(
        &engine,
        std::slice::from_ref(&good),
        "a new file failed deep in",
    );

    let whole: String = text[..cut]
        .rsplit_once('\n')
        .map(|(a, _)| format!("{a}\n"))
        .unwrap();
    std::fs::write(&big, &whole).unwrap();
    let report = engine.update(&ws.watch()).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let before = duckdb_count(&engine);
    let tail: String = sample(30_000, 4).split_inclusive('\n').skip(1).collect();
    let bad_tail = format!(
        "{}x,y\n{}",
        &tail[..tail.len() - 100],
        &tail[tail.len() - 100..]
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    std::io::Write::write_all(&mut f, bad_tail.as_bytes()).unwrap();
    drop(f);
    let report = engine.update(&ws.watch()).unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(
        duckdb_count(&engine),
        before,
        "the bad tail's rows were taken out"
    );
    std::fs::write(&big, &whole).unwrap();
    engine.update(&ws.watch()).unwrap();
    assert_fresh(&engine, &ws.files(), "after the tail was cut off again");
}

/// Country texts other than two capital letters (`usa`, `jp`, one with a quote, one
/// not ASCII) widen the table's country type, in order: answers from the rollups and
/// from DuckDB (grouped and sorted by country, filtered on countries no file holds and
/// on ranges of text) equal DuckDB over the files, and still do once a file that brought
/// some of them is removed and another brings more.
#[test]
fn countries_of_other_forms_widen_the_table_type_and_answer_as_text() {
    let odd = |text: &str, names: [&'static str; 3]| {
        map_fields(text, move |i, fields| {
            let mut out: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            if i > 0 && i % 3 == 0 {
                out[8] = names[(i / 3) % 3].to_string();
            }
            out
        })
    };
    let ws = Workspace::new();
    let a = ws.write("a.csv", odd(&sample(2000, 0), ["usa", "jp", "O'Neil"]));
    let b = ws.write("b.csv", odd(&sample(1500, 1), ["usa", "Zürich", "gb"]));
    let queries: Vec<serde_json::Value> = [
        r#"{"select":["country",{"COUNT":"*"},{"SUM":"bid_price"}],"where":[{"col":"user_id","op":"gte","val":0}],"group_by":["country"],"order_by":[{"col":"country","dir":"asc"}]}"#,
        r#"{"select":["country",{"COUNT":"*"},{"MIN":"total_price"}],"group_by":["country"],"order_by":[{"col":"country","dir":"desc"}]}"#,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"country","op":"eq","val":"zz"},{"col":"user_id","op":"gte","val":0}]}"#,
        r#"{"select":["country",{"COUNT":"*"}],"where":[{"col":"country","op":"in","val":["usa","jp","ZZ","US","xx"]},{"col":"user_id","op":"gte","val":0}],"group_by":["country"]}"#,
        r#"{"select":[{"COUNT":"*"}],"where":[{"col":"country","op":"gt","val":"a"},{"col":"user_id","op":"gte","val":0}]}"#,
        r#"{"select":["ts","type","country","user_id"],"where":[{"col":"country","op":"neq","val":"US"}],"order_by":[{"col":"ts","dir":"asc"},{"col":"user_id","dir":"asc"}],"limit":30}"#,
    ]
    .iter()
    .map(|q| serde_json::from_str(q).unwrap())
    .collect();
    let engine = ws.build();
    let check = |engine: &Engine, files: &[PathBuf]| {
        for q in queries.iter().chain(&reference_queries()) {
            let answer = engine.query(q).unwrap();
            let want = oracle(files, q).unwrap();
            assert_same(q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
        }
        assert_fresh(engine, files, "odd countries");
    };
    assert_eq!(engine.query(&queries[0]).unwrap().source, "duckdb");
    check(&engine, &[a.clone(), b.clone()]);
    std::fs::remove_file(&b).unwrap();
    let c = ws.write("c.csv", odd(&sample(1000, 2), ["fr", "usa", "Å"]));
    let report = engine.update(&ws.watch()).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    check(&engine, &[a, c]);
}
