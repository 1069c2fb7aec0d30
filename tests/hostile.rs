//! Hostile folders and real faults: entries that are not regular files, files that fail
//! or change while folded, cut last lines, a panicking ingest thread, and the watched
//! folder itself going away. After each, answers equal DuckDB over the regular files
//! present.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use rollupd::app::gen::sample_file;

use crate::daemon::{assert_equivalent, assert_equivalent_to};
use crate::util::{Daemon, Workspace};

/// A seeded query generator and a workspace with `files` × `rows` sample files.
fn setup(files: usize, rows: usize, seed: u64) -> (ChaCha8Rng, Workspace) {
    let ws = Workspace::new();
    ws.generate(files, rows, seed);
    (ChaCha8Rng::seed_from_u64(seed), ws)
}

/// Writes `text` as `name` in `dir` whole: under a name the daemon ignores, then renamed.
fn move_in(dir: &Path, name: &str, text: &[u8]) {
    let part = dir.join(format!("{name}.part"));
    std::fs::write(&part, text).unwrap();
    std::fs::rename(&part, dir.join(name)).unwrap();
}

/// The `files` entry of the file named `name`.
fn entry(d: &Daemon, name: &str) -> Value {
    let files = d.request(json!({"op": "files"})).line;
    files["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("{name} is not listed: {files}"))
        .clone()
}

/// Asserts that `name` is listed as skipped with `reason` in its error.
fn assert_skipped(d: &Daemon, name: &str, reason: &str) {
    let e = entry(d, name);
    assert_eq!(e["state"], "skipped", "{e}");
    assert!(e["error"].as_str().unwrap().contains(reason), "{e}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

fn set_mtime(path: &Path, ago: Duration) {
    let f = std::fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

/// Waits, without asking for a rescan, until the daemon counts `rows` rows.
fn wait_count(d: &Daemon, rows: u64, what: &str) {
    let start = Instant::now();
    loop {
        let reply = d.request(json!({"op": "query", "query": {"select": [{"COUNT": "*"}]}}));
        if reply.line["rows"][0][0] == rows {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: {}",
            reply.line
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_named_csv_blocked_the_ingest_loop() {
    let (mut rng, ws) = setup(2, 2_000, 61);
    mkfifo(&ws.watch().join("pipe.csv"));
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_skipped(&d, "pipe.csv", "FIFO");
    assert_eq!(d.status()["files"]["skipped"], 1);
    ws.write("late.csv", sample_file(700, 62));
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "beside a FIFO");
    d.stop();
}

#[test]
fn a_symlink_to_a_device_was_read_until_memory_ran_out() {
    let (mut rng, ws) = setup(1, 2_000, 63);
    let outside = ws.tmp.path().join("elsewhere.csv");
    std::fs::write(&outside, sample_file(600, 64)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ws.watch().join("zero.csv")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.watch().join("linked.csv")).unwrap();
    std::os::unix::fs::symlink("nowhere.csv", ws.watch().join("dangling.csv")).unwrap();
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_skipped(&d, "zero.csv", "a symlink to a device");
    assert_skipped(&d, "dangling.csv", "a symlink to nothing");
    assert_eq!(entry(&d, "linked.csv")["state"], "folded");
    assert_equivalent(&d, &ws, &mut rng, 5, "beside symlinks");
    d.stop();
}

#[test]
fn a_directory_named_csv_failed_the_scan() {
    let (mut rng, ws) = setup(1, 2_000, 65);
    let dir = ws.watch().join("x.csv");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("inner.csv"), sample_file(300, 66)).unwrap();
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_skipped(&d, "x.csv", "a directory");
    assert_equivalent(&d, &ws, &mut rng, 5, "beside a directory named x.csv");
    d.stop();
}

#[test]
fn a_failed_file_was_not_retried_after_its_permissions_were_fixed() {
    let (mut rng, ws) = setup(1, 2_000, 67);
    let d = Daemon::start(&ws, &[]);
    d.sync();
    let locked = ws.write("locked.csv", sample_file(800, 68));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    d.sync();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!(
            "running as root, which reads a file of mode 000: the unreadable state is not \
             checked; a permission change making a failed file eligible again is, below"
        );
    } else {
        let e = entry(&d, "locked.csv");
        assert_eq!(e["state"], "failed", "{e}");
        assert!(e["error"].as_str().unwrap().contains("ermission"), "{e}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.sync();
    assert_eq!(entry(&d, "locked.csv")["state"], "folded");
    assert_equivalent(&d, &ws, &mut rng, 5, "after the permissions were fixed");

    // A failed file is not tried again while unchanged; a permission change (ctime) is a
    // change.
    let bad = ws.write("bad.csv", "ts,type\n1,serve\n");
    d.sync();
    assert_eq!(entry(&d, "bad.csv")["attempts"], 1);
    d.sync();
    assert_eq!(entry(&d, "bad.csv")["attempts"], 1, "retried unchanged");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.sync();
    let e = entry(&d, "bad.csv");
    assert_eq!(
        (&e["state"], &e["attempts"]),
        (&json!("failed"), &json!(2)),
        "{e}"
    );
    std::fs::remove_file(&bad).unwrap();
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "after the bad file went");
    d.stop();
}

#[test]
fn a_file_rewritten_while_being_folded_was_committed_half_old() {
    let mut rng = ChaCha8Rng::seed_from_u64(69);
    let ws = Workspace::new();
    let path = ws.write("moving.csv", sample_file(3_000, 69));
    set_mtime(&path, Duration::from_secs(60));
    let d = Daemon::spawn_with_env(&ws, &[], &[("ROLLUPD_FAILPOINTS", "fold.read=pause")]);
    // The first pass reads the file, then waits at the hook until the marker goes.
    let marker = d.paused_at("fold.read");
    std::fs::write(&path, sample_file(2_000, 70)).unwrap();
    std::fs::remove_file(&marker).unwrap();
    let d = d.wait_ready();
    // The old bytes were never committed: the one generation holds the new ones.
    assert_eq!(d.sync(), 1, "a fold of the old content was committed");
    assert_eq!(entry(&d, "moving.csv")["state"], "folded");
    assert_equivalent(&d, &ws, &mut rng, 5, "after a rewrite during the fold");
    d.stop();
}

#[test]
fn a_cut_last_line_was_folded_as_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let ws = Workspace::new();
    let mut files = ws.generate(1, 1_000, 71);
    let text = sample_file(400, 72);
    let cut = text.len() - 25;
    let path = ws.write("growing.csv", &text[..cut]);
    let d = Daemon::start(&ws, &["--line-hold-ms", "600000"]);
    d.sync();
    // Held: DuckDB over the complete lines is the answer.
    let complete = ws.tmp.path().join("complete.csv");
    let end = text[..cut].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    std::fs::write(&complete, &text[..end]).unwrap();
    files.push(complete);
    assert_equivalent_to(&d, &files, &mut rng, 5, "the last line cut");
    let e = entry(&d, "growing.csv");
    assert_eq!(e["state"], "pending", "{e}");
    assert!(
        e["note"].as_str().unwrap().contains("not terminated"),
        "{e}"
    );

    // The writer finishes the line.
    let mut f = std::fs::File::options().append(true).open(&path).unwrap();
    f.write_all(&text[cut..]).unwrap();
    drop(f);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "the last line finished");
    assert_eq!(entry(&d, "growing.csv")["state"], "folded");

    // A last line without its newline in a file quiet for longer than the hold is data.
    let quiet = sample_file(300, 73);
    let quiet_path = ws.write("quiet.csv", &quiet[..quiet.len() - 1]);
    set_mtime(&quiet_path, Duration::from_secs(3_600));
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "a quiet file's unterminated line");
    d.stop();
}

#[test]
fn a_panicking_ingest_thread_left_the_daemon_serving_stale_data() {
    let (mut rng, ws) = setup(1, 1_000, 75);
    let env = [("ROLLUPD_FAILPOINTS", "ingest.pass=panic")];
    let status = Daemon::spawn_with_env(&ws, &[], &env).wait_exit();
    assert!(!status.success(), "the daemon exited with {status}");
    // Restarted (as a service manager would), it catches up.
    let d = Daemon::start(&ws, &[]);
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "restarted after the panic");
    d.stop();
}

#[test]
fn a_recreated_or_renamed_watched_folder_was_not_watched_again() {
    let (mut rng, ws) = setup(2, 1_000, 77);
    let watch: PathBuf = ws.watch();
    // No rescan would come in time: only the watches can notice.
    let d = Daemon::start(&ws, &["--rescan-secs", "3600"]);
    d.sync();

    std::fs::remove_dir_all(&watch).unwrap();
    d.status_until("missing", |s| s["watch_state"]["state"] == "missing");
    std::fs::create_dir(&watch).unwrap();
    std::fs::write(watch.join("a.csv"), sample_file(500, 78)).unwrap();
    wait_count(&d, 500, "after the folder was recreated");
    // The new watch delivers events.
    move_in(&watch, "b.csv", &sample_file(400, 79));
    wait_count(&d, 900, "a file into the recreated folder");
    let status = d.status_until("watched again", |s| s["watch_state"]["state"] == "watching");
    assert!(
        status["watch_state"]["re_established"].as_u64().unwrap() >= 1,
        "{status}"
    );
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "the folder recreated");

    // Renamed away, and another folder renamed in its place.
    let other = ws.tmp.path().join("incoming");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("c.csv"), sample_file(300, 80)).unwrap();
    std::fs::rename(&watch, ws.tmp.path().join("old-watch")).unwrap();
    std::fs::rename(&other, &watch).unwrap();
    wait_count(&d, 300, "another folder renamed in");
    move_in(&watch, "d.csv", &sample_file(200, 81));
    wait_count(&d, 500, "a file into the renamed-in folder");
    d.sync();
    assert_equivalent(&d, &ws, &mut rng, 5, "another folder renamed in");
    d.stop();
}
