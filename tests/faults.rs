//! Faults of the machine and damaged state: a state folder that runs out of space or goes
//! away under the daemon, and a manifest, partition, partials file, store or database
//! lost or damaged between runs. After each, answers equal DuckDB over the files present.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use rollupd::app::gen::sample_file;
use rollupd::EngineOptions;

use crate::daemon::{assert_equivalent, assert_equivalent_to};
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

/// A tmpfs of a few MB mounted on a folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one of `mb` MB on `dir` (created); `None`, with a message, where mounting
    /// is not permitted.
    fn mount(dir: &Path, mb: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                println!("skipped: cannot mount a tmpfs ({})", why.trim());
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` until a write fails with ENOSPC, leaving about
/// `spare` bytes free; returns the filler file.
fn fill(dir: &Path, spare: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 << 10];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    f.set_len(len.saturating_sub(spare)).unwrap();
    path
}

#[test]
fn a_full_disk_under_the_state_folder_stopped_updates_for_good() {
    let ws = Workspace::new();
    let Some(_tmpfs) = Tmpfs::mount(&ws.state(), 12) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(91);
    ws.generate(2, 2_000, 91);
    let d = Daemon::start(&ws, &[]);
    d.sync();
    // Full to the last byte, then with a little room: the fault strikes DuckDB first,
    // then, with room for the table, the store, the partitions or the manifest.
    for (round, spare) in [(0u64, 0u64), (1, 800 << 10), (2, 1500 << 10)] {
        let before = ws.files();
        let filler = fill(&ws.state(), spare);
        for i in 0..3 {
            let name = format!("r{round}-{i}.csv");
            ws.write(&name, sample_file(2_500, 92 + round * 10 + i));
        }
        if spare == 0 {
            let status = d.status_until("the fault is reported", |s| !s["fault"].is_null());
            assert!(
                status["fault"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("No space left"),
                "{status}"
            );
            // The published state is intact and keeps answering.
            assert_equivalent_to(&d, &before, &mut rng, 5, "with the disk full");
        } else {
            std::thread::sleep(Duration::from_secs(2));
        }
        std::fs::remove_file(&filler).unwrap();
        // It catches up by itself once there is room again: no `sync`.
        let tracked = ws.files().len() as u64;
        d.status_until("caught up after the fault", |s| {
            s["fault"].is_null() && s["files"]["tracked"] == tracked && s["files"]["pending"] == 0
        });
        assert_equivalent(&d, &ws, &mut rng, 5, &format!("after round {round}"));
    }
    d.stop();
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "after a restart");
    d.stop();
}

/// Waits at most `bound` for the daemon to exit; its status.
fn exits_within(mut d: Daemon, bound: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < bound, "still running after {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_hung_with_the_state_folder_removed() {
    let ws = Workspace::new();
    ws.generate(2, 2_000, 93);
    let d = Daemon::start(&ws, &["--socket", "rollupd.sock"]);
    d.sync();
    std::fs::remove_dir_all(ws.state()).unwrap();
    ws.write("late.csv", sample_file(500, 94));
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    exits_within(d, Duration::from_secs(20));
}

#[test]
fn a_removed_state_folder_was_written_into_forever() {
    let ws = Workspace::new();
    let mut rng = ChaCha8Rng::seed_from_u64(95);
    ws.generate(2, 2_000, 95);
    let d = Daemon::start(&ws, &["--socket", "rollupd.sock"]);
    d.sync();
    std::fs::remove_dir_all(ws.state()).unwrap();
    ws.write("late.csv", sample_file(500, 96));
    let status = exits_within(d, Duration::from_secs(60));
    assert!(!status.success(), "exits with an error: {status}");
    // The next start rebuilds the state from the folder.
    let d = Daemon::start(&ws, &["--socket", "rollupd.sock"]);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "after the state folder was removed");
    d.stop();
}

/// The WAL stays under the checkpoint threshold (here a small one).
#[test]
fn the_wal_was_never_checkpointed_after_a_publish() {
    let ws = Workspace::new();
    ws.generate(2, 2_000, 97);
    let mut opts = EngineOptions::default();
    opts.table.checkpoint_wal_bytes = 64 << 10;
    let engine = ws.build_with(opts);
    for i in 0..3 {
        ws.write(&format!("more{i}.csv"), sample_file(2_000, 98 + i));
        engine.update(&ws.watch()).unwrap();
    }
    let wal = ws.state().join("events.duckdb.wal");
    let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(
        len < 64 << 10,
        "the WAL holds {len} bytes after a quiet publish"
    );
}
