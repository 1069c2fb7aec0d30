//! Crash safety: `rollupd build` killed with SIGKILL at random moments, then run again,
//! ends equal to a fresh build, and files folded before the crash are not parsed again.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollupd::{Engine, EngineOptions};

use crate::history::assert_fresh;
use crate::oracle::{assert_same, oracle};
use crate::util::{answer_rows, reference_queries, Workspace};

fn build(ws: &Workspace) -> serde_json::Value {
    let out = ws.run(&["build", "--watch", "watch", "--state", "state", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn killed_builds_recover_without_reparsing_unchanged_files() {
    let mut rng = ChaCha8Rng::seed_from_u64(4242);
    let ws = Workspace::new();
    let first = ws.generate(3, 20_000, 21);
    let first_bytes: u64 = first.iter().map(|f| f.metadata().unwrap().len()).sum();
    let report = build(&ws);
    assert_eq!(report["bytes_parsed"], first_bytes);
    // Kills land within the time an uninterrupted build of one round's change takes here,
    // so most of them interrupt it; the rounds that did are counted below.
    ws.write("probe.csv", rollupd::app::gen::sample_file(15_000, 99));
    let started = Instant::now();
    build(&ws);
    let window = started.elapsed().as_millis() as u64 * 3 / 2;
    let mut interrupted = 0;
    for round in 0..50 {
        // A change: a new file, and now and then a deleted or rewritten one.
        let name = format!("round-{round:02}.csv");
        let text = rollupd::app::gen::sample_file(15_000, 100 + round);
        ws.write(&name, &text);
        if round % 5 == 4 {
            let victim = ws.watch().join(format!("round-{:02}.csv", round - 2));
            std::fs::remove_file(victim).unwrap();
        }
        let changed_bytes = text.len() as u64;
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollupd"))
            .current_dir(ws.tmp.path())
            .args(["build", "--watch", "watch", "--state", "state", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..window)));
        let _ = child.kill();
        let _ = child.wait();
        let report = build(&ws);
        let parsed = report["bytes_parsed"].as_u64().unwrap();
        if parsed > 0 {
            interrupted += 1;
        }
        assert!(
            parsed <= changed_bytes,
            "round {round}: parsed {parsed} bytes after the crash, only {changed_bytes} changed"
        );
        let again = build(&ws);
        assert_eq!(again["bytes_parsed"], 0, "round {round}: nothing changed");
    }
    // A kill after the commit proves nothing; without enough before it the test is void.
    assert!(
        interrupted >= 10,
        "only {interrupted} of 50 kills landed before the change was committed \
         (kill window {window} ms)"
    );
    let engine = Engine::open(&ws.state(), EngineOptions::default()).unwrap();
    let files = ws.files();
    assert_fresh(&engine, &files, "after the crashes");
    for q in reference_queries() {
        let answer = engine.query(&q).unwrap();
        let want = oracle(&files, &q).unwrap();
        assert_same(&q, &answer.result.columns, &answer_rows(&answer), &want).unwrap();
    }
    let rows = engine.table().row_count().unwrap();
    let want = oracle(&files, &serde_json::json!({"select":[{"COUNT":"*"}]})).unwrap();
    assert_eq!(serde_json::json!(rows), want.rows[0][0]);
}
