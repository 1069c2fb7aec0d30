//! Failure consistency: an update that fails at any step of the commit path (an error,
//! or the process dying there) leaves state that the next update, or a restart, turns
//! into exactly the fresh-build answer; meanwhile queries see the old or the new
//! generation whole, and the rollups in memory never part from the store.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rollupd::app::gen::sample_file;
use rollupd::engine::failpoint::{Action, Failpoints, LAYER_POINTS, POINTS};
use rollupd::{Engine, EngineOptions};

use crate::history::{assert_fresh, fresh_rollups};
use crate::oracle::{assert_same, oracle, query_context, rollup_query};
use crate::util::{answer_rows, ok_stdout, reference_queries, Workspace};

/// Three folded files, then one change of every kind: a file added, one appended to,
/// one rewritten, one deleted. Returns copies of the files as they were before.
fn changed_folder(ws: &Workspace, seed: u64) -> (Vec<PathBuf>, tempfile::TempDir) {
    let files = ws.generate(3, 3_000, seed);
    let before = tempfile::tempdir().unwrap();
    let old: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let copy = before.path().join(f.file_name().unwrap());
            std::fs::copy(f, &copy).unwrap();
            copy
        })
        .collect();
    (old, before)
}

fn change_every_kind(ws: &Workspace, seed: u64) {
    let files = ws.files();
    ws.write("added.csv", sample_file(2_000, seed + 1));
    crate::util::append_rows(&files[0], 500, seed + 2);
    std::fs::write(&files[1], sample_file(1_500, seed + 3)).unwrap();
    std::fs::remove_file(&files[2]).unwrap();
}

/// The engine answers the reference queries as DuckDB does over `files`.
fn assert_answers(engine: &Engine, files: &[PathBuf], what: &str) {
    for q in reference_queries() {
        let answer = engine.query(&q).unwrap();
        let want = oracle(files, &q).unwrap();
        assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// While a removal's extremes are restored, MIN and MAX go to DuckDB and every answer
/// (those still from rollups too) is the folder's.
fn assert_extremes_from_duckdb(engine: &Engine, files: &[PathBuf], what: &str) {
    let extremes = serde_json::json!({
        "select": ["type", {"MIN": "bid_price"}, {"MAX": "bid_price"}, {"SUM": "bid_price"}],
        "from": "events",
        "group_by": ["type"],
    });
    let answer = engine.query(&extremes).unwrap();
    assert_eq!(
        answer.source, "duckdb",
        "{what}: MIN and MAX while restoring"
    );
    let want = oracle(files, &extremes).unwrap();
    assert_same(
        &extremes,
        &answer.result.columns,
        &answer_rows(&answer),
        &want,
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let sums = serde_json::json!({
        "select": ["type", {"SUM": "bid_price"}],
        "from": "events",
        "group_by": ["type"],
    });
    let answer = engine.query(&sums).unwrap();
    assert!(
        answer.source.starts_with("rollup:"),
        "{what}: {}",
        answer.source
    );
    assert_answers(engine, files, what);
}

fn reopened_parses_nothing(state: &Path, watch: &Path, files: &[PathBuf], what: &str) {
    let engine = Engine::open(state, EngineOptions::default()).unwrap();
    assert_fresh(&engine, files, &format!("{what}, reopened"));
    let report = engine.update(watch).unwrap();
    assert_eq!(report.bytes_parsed, 0, "{what}: reopened, nothing changed");
    assert_answers(&engine, files, what);
}

/// An engine on `ws`'s state with failpoints to arm, after its first update.
fn built_with_failpoints(ws: &Workspace) -> (Engine, Failpoints) {
    let failpoints = Failpoints::default();
    let opts = EngineOptions {
        failpoints: failpoints.clone(),
        ..EngineOptions::default()
    };
    let engine = Engine::open(&ws.state(), opts).unwrap();
    engine.update(&ws.watch()).unwrap();
    (engine, failpoints)
}

#[test]
fn an_error_at_any_commit_step_is_repaired_by_the_next_update() {
    for (i, point) in POINTS.into_iter().enumerate() {
        let ws = Workspace::new();
        let seed = 300 + 10 * i as u64;
        let (old, _keep) = changed_folder(&ws, seed);
        let (engine, failpoints) = built_with_failpoints(&ws);
        change_every_kind(&ws, seed);
        failpoints.arm(point, Action::Error).unwrap();
        let failed = engine.update(&ws.watch());
        assert!(failed.is_err(), "{point}: the update did not fail");
        if engine.snapshot().pending_flags().contains(&true) {
            // The new generation is out before a removal's extremes are back: answers
            // are the new folder's all the same, MIN and MAX from DuckDB meanwhile.
            assert_extremes_from_duckdb(&engine, &ws.files(), point);
        } else {
            // Queries see the old generation or the new one, whole.
            let rollups: Vec<_> = engine
                .snapshot()
                .rollups
                .iter()
                .map(|r| r.merged().as_ref().clone())
                .collect();
            assert!(
                rollups == fresh_rollups(&old, &engine)
                    || rollups == fresh_rollups(&ws.files(), &engine),
                "{point}: the published rollups are neither the old nor the new folder's"
            );
        }
        failpoints.clear();
        engine.update(&ws.watch()).unwrap();
        let what = format!("after an error at {point}");
        assert_fresh(&engine, &ws.files(), &what);
        assert_answers(&engine, &ws.files(), &what);
        drop(engine);
        reopened_parses_nothing(&ws.state(), &ws.watch(), &ws.files(), &what);
    }
}

#[test]
fn a_process_dying_at_any_commit_step_recovers_on_restart() {
    for (i, point) in POINTS.into_iter().enumerate() {
        let ws = Workspace::new();
        let seed = 400 + 10 * i as u64;
        changed_folder(&ws, seed);
        let args = ["build", "--watch", "watch", "--state", "state", "--json"];
        ok_stdout(&ws.run(&args));
        change_every_kind(&ws, seed);
        let died = std::process::Command::new(env!("CARGO_BIN_EXE_rollupd"))
            .current_dir(ws.tmp.path())
            .args(args)
            .env("ROLLUPD_FAILPOINTS", format!("{point}=abort"))
            .output()
            .unwrap();
        assert!(!died.status.success(), "{point}: the build did not die");
        assert!(
            String::from_utf8_lossy(&died.stderr).contains(point),
            "{point}: {}",
            String::from_utf8_lossy(&died.stderr)
        );
        ok_stdout(&ws.run(&args));
        let what = format!("after dying at {point}");
        reopened_parses_nothing(&ws.state(), &ws.watch(), &ws.files(), &what);
    }
}

/// A new file's partials file is written while its batch still folds; a batch that fails
/// before its store commit removes what it wrote rather than leaving it for the next open.
#[test]
fn a_batch_failing_before_its_store_commit_left_no_partials_files() {
    for point in ["table.commit", "store.commit"] {
        let ws = Workspace::new();
        let _keep = changed_folder(&ws, 41);
        let (engine, failpoints) = built_with_failpoints(&ws);
        let before = engine.snapshot().generation();
        change_every_kind(&ws, 41);
        failpoints.arm(point, Action::Error).unwrap();
        assert!(engine.update(&ws.watch()).is_err(), "{point}");
        let failed = format!(".g{}.rp", before + 1);
        let left: Vec<String> = std::fs::read_dir(ws.state().join("partials"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(&failed))
            .collect();
        assert!(left.is_empty(), "{point}: {left:?} left behind");
        failpoints.clear();
        engine.update(&ws.watch()).unwrap();
        assert_fresh(&engine, &ws.files(), point);
    }
}

/// In an update of several batches, the rollups take each batch after the first in
/// place while DuckDB finishes loading it, ahead of the store's commit. A batch whose
/// store commit then fails is taken out of them again: queries answer for the batches
/// that landed, and the next update gives the fresh-build rollups.
#[test]
fn a_batch_merged_in_place_whose_store_commit_failed_is_taken_out_again() {
    let ws = Workspace::new();
    let files = ws.generate(4, 2_000, 61);
    let failpoints = Failpoints::default();
    let opts = EngineOptions {
        failpoints: failpoints.clone(),
        // A batch per file.
        batch_bytes: 1,
        ..EngineOptions::default()
    };
    let engine = Engine::open(&ws.state(), opts).unwrap();
    failpoints
        .arm("store.commit", Action::ErrorFrom(3))
        .unwrap();
    assert!(engine.update(&ws.watch()).is_err());
    let landed: Vec<PathBuf> = engine
        .files()
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(landed.len(), 2, "the batches before the failed one landed");
    assert_answers(&engine, &landed, "after the third batch failed");
    failpoints.clear();
    engine.update(&ws.watch()).unwrap();
    assert_fresh(&engine, &files, "the next update");
    assert_answers(&engine, &files, "the next update");
}

/// Files added and appended to are published with their rows laid over the rollups they
/// leave mostly unchanged, before those are merged with them. A merge that fails leaves
/// the layers published: answers from rollups (random queries) are DuckDB's over the
/// folder all the same, and the next update merges them into the fresh-build rollups.
#[test]
fn additions_laid_over_the_rollups_answer_like_duckdb_until_merged() {
    let ws = Workspace::new();
    ws.generate(3, 3_000, 51);
    let (engine, failpoints) = built_with_failpoints(&ws);
    ws.write("added.csv", sample_file(600, 52));
    crate::util::append_rows(&ws.files()[0], 200, 53);
    for point in LAYER_POINTS {
        failpoints.arm(point, Action::Error).unwrap();
    }
    assert!(
        engine.update(&ws.watch()).is_err(),
        "the merge did not fail"
    );
    let snap = engine.snapshot();
    assert!(
        snap.rollups.iter().any(|r| !r.is_merged()),
        "no rollup was layered"
    );
    let files = ws.files();
    let ctx = query_context(&files);
    let mut rng = ChaCha8Rng::seed_from_u64(54);
    for i in 0..300 {
        let q = rollup_query(&mut rng, &ctx);
        let answer = engine
            .query(&q)
            .unwrap_or_else(|e| panic!("query {i} {q}: {e}"));
        let want = oracle(&files, &q).unwrap_or_else(|e| panic!("oracle {i} {q}: {e}"));
        assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want)
            .unwrap_or_else(|e| panic!("query {i} ({}): {e}", answer.source));
    }
    assert_answers(&engine, &files, "layered");
    failpoints.clear();
    let report = engine.update(&ws.watch()).unwrap();
    assert_eq!(report.bytes_parsed, 0, "nothing was folded again");
    assert!(engine.snapshot().rollups.iter().all(|r| r.is_merged()));
    assert_fresh(&engine, &files, "merged by the next update");
    drop(engine);
    reopened_parses_nothing(&ws.state(), &ws.watch(), &files, "merged");
}
