//! Faults of the machine and damaged state: a state folder that runs out of space or goes
//! away under the daemon, and a manifest, partition, partials file, store or database
//! lost or damaged between runs. After each, answers equal DuckDB over the files present.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::daemon::assert_equivalent;
use crate::util::{Daemon, Workspace};

/// Builds a state of sample files with a daemon and stops it; `damage` then changes the
/// state folder, and a new daemon must start, say in `rebuilt` that it repaired
/// something (`reason`), and answer like DuckDB.
fn damaged_then_restarted(seed: u64, reason: &str, damage: impl FnOnce(&Path)) {
    let ws = Workspace::new();
    ws.generate(3, 3_000, seed);
    let d = Daemon::start(&ws, &[]);
    let before = d.sync();
    d.stop();
    damage(&ws.state());
    let d = Daemon::start(&ws, &[]);
    let after = d.sync();
    assert!(after >= before, "generations only grow: {before} → {after}");
    let rebuilt = d.status()["rebuilt"].clone();
    assert!(
        rebuilt.as_str().is_some_and(|r| r.contains(reason)),
        "rebuilt: {rebuilt}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    assert_equivalent(&d, &ws, &mut rng, 10, reason);
    d.stop();
}

/// The files in `dir` (recursively) whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Cuts a file to half its length.
fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len / 2).unwrap();
}

#[test]
fn a_deleted_manifest_refused_to_start() {
    damaged_then_restarted(81, "the manifest was missing", |state| {
        std::fs::remove_file(state.join("manifest.json")).unwrap();
    });
}

#[test]
fn a_truncated_manifest_refused_to_start() {
    damaged_then_restarted(82, "the manifest could not be read", |state| {
        truncate_half(&state.join("manifest.json"));
    });
}

#[test]
fn a_deleted_rollup_partition_refused_to_start() {
    damaged_then_restarted(83, "a rollup partition could not be read", |state| {
        let parts = files_ending(&state.join("rollups"), ".arrow");
        std::fs::remove_file(&parts[parts.len() / 2]).unwrap();
    });
}

#[test]
fn a_truncated_rollup_partition_refused_to_start() {
    damaged_then_restarted(84, "a rollup partition could not be read", |state| {
        let parts = files_ending(&state.join("rollups"), ".arrow");
        truncate_half(&parts[0]);
    });
}

#[test]
fn a_deleted_partials_file_refused_to_start() {
    damaged_then_restarted(85, "the partials of 1 file(s) were missing", |state| {
        let partials = files_ending(&state.join("partials"), ".rp");
        std::fs::remove_file(&partials[1]).unwrap();
    });
}

#[test]
fn a_truncated_partials_file_refused_to_start() {
    damaged_then_restarted(
        86,
        "the partials of 1 file(s) were missing or damaged",
        |state| {
            let partials = files_ending(&state.join("partials"), ".rp");
            truncate_half(&partials[0]);
        },
    );
}

#[test]
fn a_corrupt_store_refused_to_start() {
    damaged_then_restarted(87, "the store could not be read", |state| {
        for f in files_ending(&state.join("store"), "") {
            std::fs::write(&f, vec![0xA5; 4096]).unwrap();
        }
    });
    // (The store moved aside is kept for inspection, beside the new one.)
}

#[test]
fn a_corrupt_duckdb_database_refused_to_start() {
    damaged_then_restarted(88, "the DuckDB database could not be opened", |state| {
        std::fs::write(state.join("events.duckdb"), vec![0x5A; 64 << 10]).unwrap();
    });
}
