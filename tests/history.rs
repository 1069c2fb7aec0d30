//! Random file histories: after every operation and update, the rollups equal a fresh
//! fold of the folder's files and sampled queries equal DuckDB over those files.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollupd::engine::{Layout, Snapshot};
use rollupd::ingest::fold::{fold_file, FoldWith};
use rollupd::rollup::RollupRows;
use rollupd::{Engine, EngineOptions};

use crate::oracle::{assert_same, oracle, random_query, QueryContext};
use crate::util::{answer_rows, Workspace};

const HEADER: &str =
    "ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price,country\n";
const COUNTRIES: [&str; 4] = ["US", "JP", "DE", "BR"];
const DAY0_MS: i64 = 1_717_200_000_000; // 2024-06-01 00:00 UTC

/// A small random row spanning three days of June 2024.
fn row(rng: &mut ChaCha8Rng) -> String {
    let ts = DAY0_MS + rng.gen_range(0..3 * 86_400_000);
    let (ty, bid, total) = match rng.gen_range(0..20) {
        0..=9 => ("serve", String::new(), String::new()),
        10..=16 => (
            "impression",
            format!("0.{:06}", rng.gen_range(1..999_999)),
            String::new(),
        ),
        17..=18 => ("click", String::new(), String::new()),
        _ => (
            "purchase",
            String::new(),
            format!("{}.{:02}", rng.gen_range(1..300), rng.gen_range(0..100)),
        ),
    };
    let country = if rng.gen_bool(0.05) {
        ""
    } else {
        COUNTRIES.choose(rng).unwrap()
    };
    format!(
        "{ts},{ty},{:08x}-0000-4000-8000-{:012x},{},{},{bid},{},{total},{country}\n",
        rng.gen::<u32>(),
        rng.gen::<u64>() & 0xffff_ffff_ffff,
        rng.gen_range(1..6),
        rng.gen_range(100..104),
        rng.gen_range(1..50)
    )
}

fn rows(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n).map(|_| row(rng)).collect()
}

fn context() -> QueryContext {
    QueryContext {
        days: vec![
            "2024-06-01".into(),
            "2024-06-02".into(),
            "2024-06-03".into(),
        ],
        advertisers: (1..6).collect(),
        publishers: (100..104).collect(),
        countries: COUNTRIES.iter().map(|c| c.to_string()).collect(),
    }
}

/// Writes a file and gives it a strictly later mtime (a fake clock), as a real writer would.
fn write(path: &Path, content: &str, clock: &mut u64) {
    std::fs::write(path, content).unwrap();
    touch(path, clock);
}

fn touch(path: &Path, clock: &mut u64) {
    *clock += 1;
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + *clock);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// The rollups a fresh build of `files` produces.
pub fn fresh_rollups(files: &[PathBuf], engine: &Engine) -> Vec<RollupRows> {
    fresh_rollups_in(files, &EngineOptions::default().layout(), engine)
}

/// The rollups of layout `layout` folded from scratch from `files`, their country codes
/// those of `engine`'s dictionary (so that they compare with its rollups).
pub fn fresh_rollups_in(files: &[PathBuf], layout: &Layout, engine: &Engine) -> Vec<RollupRows> {
    let with = FoldWith {
        zone: layout.zone,
        specs: &layout.specs,
        countries: engine.store().countries(),
    };
    let parts: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| fold_file(f, i as i32, with).unwrap().partial)
        .collect();
    (0..layout.specs.len())
        .map(|s| RollupRows::merge_all(parts.iter().map(|p| &p[s])))
        .collect()
}

/// Asserts the engine's rollups equal a fresh build of the folder in the engine's
/// layout, value for value.
pub fn assert_fresh(engine: &Engine, files: &[PathBuf], what: &str) {
    let snap = engine.snapshot();
    let fresh = fresh_rollups_in(files, &engine.layout(), engine);
    assert_eq!(
        snap.rollups.len(),
        fresh.len(),
        "{what}: the snapshot holds {} rollups, a fresh build {}",
        snap.rollups.len(),
        fresh.len()
    );
    for (s, (got, want)) in snap.rollups.iter().zip(&fresh).enumerate() {
        assert!(
            *got.merged() == *want,
            "{what}: rollup {} differs from a fresh build ({} vs {} rows)",
            snap.catalog[s].spec.name(),
            got.len(),
            want.len()
        );
    }
}

/// Asserts that `after` holds exactly the rollups of `before` (same count, same rows).
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    assert!(!before.rollups.is_empty(), "{what}: no rollups published");
    assert_eq!(
        before.rollups.len(),
        after.rollups.len(),
        "{what}: rollup count changed"
    );
    for (s, (a, b)) in before.rollups.iter().zip(&after.rollups).enumerate() {
        assert!(
            a == b,
            "{what}: rollup {} changed ({} vs {} rows)",
            before.catalog[s].spec.name(),
            a.len(),
            b.len()
        );
    }
}

#[test]
fn random_histories_match_a_fresh_build_and_duckdb() {
    let ctx = context();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for history in 0..200 {
        let ws = Workspace::new();
        let dir = ws.watch();
        // Every other history folds its files a few lines at a time.
        let opts = EngineOptions {
            chunk_bytes: if history % 2 == 0 { 300 } else { 64 << 20 },
            ..EngineOptions::default()
        };
        let engine = Engine::open(&ws.state(), opts).unwrap();
        let mut clock = 0u64;
        let mut log = Vec::new();
        let mut next_name = 0;
        for step in 0..20 {
            let files = ws.files();
            let pick = files.choose(&mut rng).cloned();
            let op = if files.is_empty() {
                0
            } else {
                rng.gen_range(0..8)
            };
            match (op, pick) {
                (0, _) | (_, None) => {
                    next_name += 1;
                    let n = rng.gen_range(0..40);
                    let p = dir.join(format!("f{next_name}.csv"));
                    write(&p, &format!("{HEADER}{}", rows(&mut rng, n)), &mut clock);
                    log.push(format!("add {} ({n} rows)", p.display()));
                }
                (1, Some(p)) => {
                    let n = rng.gen_range(0..40);
                    write(&p, &format!("{HEADER}{}", rows(&mut rng, n)), &mut clock);
                    log.push(format!("rewrite {}", p.display()));
                }
                (2, Some(p)) => {
                    let same = std::fs::read_to_string(&p).unwrap();
                    write(&p, &same, &mut clock);
                    log.push(format!("rewrite-identical {}", p.display()));
                }
                (3, Some(p)) => {
                    let mut text = std::fs::read_to_string(&p).unwrap();
                    let n = rng.gen_range(1..20);
                    text.push_str(&rows(&mut rng, n));
                    write(&p, &text, &mut clock);
                    log.push(format!("append {}", p.display()));
                }
                (4, Some(p)) => {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let lines: Vec<&str> = text.lines().collect();
                    let keep = rng.gen_range(1..=lines.len());
                    let cut: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
                    write(&p, &cut, &mut clock);
                    log.push(format!("truncate {} to {keep} lines", p.display()));
                }
                (5, Some(p)) => {
                    next_name += 1;
                    let to = dir.join(format!("f{next_name}.csv"));
                    std::fs::rename(&p, &to).unwrap();
                    log.push(format!("rename {} {}", p.display(), to.display()));
                }
                (6, Some(p)) => {
                    touch(&p, &mut clock);
                    log.push(format!("touch {}", p.display()));
                }
                (_, Some(p)) => {
                    std::fs::remove_file(&p).unwrap();
                    log.push(format!("delete {}", p.display()));
                }
            }
            let report = engine.update(&dir).unwrap();
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            let files = ws.files();
            let what = format!("history {history} step {step}: {}", log.join("; "));
            assert_fresh(&engine, &files, &what);
            if step % 4 == 3 {
                let q = random_query(&mut rng, &ctx);
                let answer = engine
                    .query(&q)
                    .unwrap_or_else(|e| panic!("{what}: {q}: {e}"));
                let want = oracle(&files, &q).unwrap();
                assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
}
