//! Helpers for the integration tests: temp folders, sample data, running the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rollupd::app::gen::{generate, GenOptions};
use rollupd::{Engine, EngineOptions};

/// A temporary workspace with a watched folder and a state folder.
pub struct Workspace {
    pub tmp: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn watch(&self) -> PathBuf {
        let p = self.tmp.path().join("watch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Generates `files` × `rows` seeded sample files into the watched folder.
    pub fn generate(&self, files: usize, rows: usize, seed: u64) -> Vec<PathBuf> {
        generate(
            &self.watch(),
            &GenOptions {
                files,
                rows_per_file: rows,
                seed,
            },
        )
        .expect("generate")
        .files
    }

    /// Writes a file into the watched folder.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.watch().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// The CSV files now in the watched folder.
    pub fn files(&self) -> Vec<PathBuf> {
        rollupd::ingest::watch::scan_folder(&self.watch(), false).unwrap()
    }

    /// Opens an engine on the state folder and builds it from the watched folder.
    pub fn build(&self) -> Engine {
        self.build_with(EngineOptions::default())
    }

    /// Like `build`, with these options.
    pub fn build_with(&self, opts: EngineOptions) -> Engine {
        let engine = Engine::open(&self.state(), opts).expect("open");
        let report = engine.update(&self.watch()).expect("build");
        assert!(
            report.failed.is_empty(),
            "failed files: {:?}",
            report.failed
        );
        engine
    }

    /// Runs the real binary with `args` in this workspace.
    pub fn run(&self, args: &[&str]) -> Output {
        rollupd(self.tmp.path(), args)
    }
}

/// A file of this repository, found through the `CARGO_MANIFEST_DIR` cargo sets when it
/// runs the tests: not the one compiled in, which names the checkout that built the test
/// binary, and a target folder shared by checkouts may hold another's.
pub fn repo_file(path: &str) -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run by cargo");
    Path::new(&root).join(path)
}

/// Runs the real `rollupd` binary in `dir`.
pub fn rollupd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollupd"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run rollupd")
}

/// Stdout of a run that must succeed.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rollupd failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// An engine answer as JSON values, the way the protocol would send them.
pub fn answer_rows(answer: &rollupd::Answer) -> Vec<Vec<serde_json::Value>> {
    serde_json::from_str(&serde_json::to_string(&answer.result.rows).unwrap()).unwrap()
}

/// The five reference queries (as in docs/reference-queries.json).
pub fn reference_queries() -> Vec<serde_json::Value> {
    serde_json::from_str(REFERENCE).unwrap()
}

const REFERENCE: &str = r#"[{"select":["day",{"SUM":"bid_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"impression"}],"group_by":["day"]},
 {"select":["publisher_id",{"SUM":"bid_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"impression"},{"col":"country","op":"eq","val":"JP"},{"col":"day","op":"between","val":["2024-10-20","2024-10-23"]}],"group_by":["publisher_id"]},
 {"select":["country",{"AVG":"total_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"purchase"}],"group_by":["country"],"order_by":[{"col":"AVG(total_price)","dir":"desc"}]},
 {"select":["advertiser_id","type",{"COUNT":"*"}],"from":"events","group_by":["advertiser_id","type"],"order_by":[{"col":"COUNT(*)","dir":"desc"}]},
 {"select":["minute",{"SUM":"bid_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"impression"},{"col":"day","op":"eq","val":"2024-06-01"}],"group_by":["minute"],"order_by":[{"col":"minute","dir":"asc"}]}]"#;

/// A `rollupd run` child on a workspace, with its socket; killed if still running when
/// dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub socket: PathBuf,
}

/// The settle interval the tests' daemons use.
pub const SETTLE_MS: u64 = 150;

impl Daemon {
    /// Starts `rollupd run` on the workspace's `watch` and `state` folders and waits until
    /// its socket answers.
    pub fn start(ws: &Workspace, extra: &[&str]) -> Daemon {
        Daemon::spawn(ws, extra).wait_ready()
    }

    /// Starts `rollupd run` like `start`, without waiting for it.
    pub fn spawn(ws: &Workspace, extra: &[&str]) -> Daemon {
        Daemon::spawn_with_env(ws, extra, &[])
    }

    /// Starts `rollupd run` like `spawn`, with these environment variables set.
    pub fn spawn_with_env(ws: &Workspace, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let settle = SETTLE_MS.to_string();
        let mut args = vec![
            "run",
            "--watch",
            "watch",
            "--state",
            "state",
            "--settle-ms",
            &settle,
        ];
        args.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_rollupd"))
            .current_dir(ws.tmp.path())
            .args(&args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start rollupd run");
        let socket = match extra.iter().position(|a| *a == "--socket") {
            Some(i) => ws.tmp.path().join(extra[i + 1]),
            None => ws.state().join("rollupd.sock"),
        };
        Daemon { child, socket }
    }

    /// Waits until the daemon's socket answers.
    pub fn wait_ready(mut self) -> Daemon {
        let daemon = &mut self;
        let start = std::time::Instant::now();
        loop {
            if let Ok(mut c) = rollupd::daemon::client::Client::connect(&daemon.socket) {
                if c.request(&serde_json::json!({"op": "ping"})).is_ok() {
                    return self;
                }
            }
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("rollupd run exited early: {status}");
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the daemon did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> rollupd::daemon::client::Client {
        rollupd::daemon::client::Client::connect(&self.socket).expect("connect")
    }

    /// One request on a new connection; the reply must be ok.
    pub fn request(&self, request: serde_json::Value) -> rollupd::daemon::client::Reply {
        let reply = self.client().request(&request).expect("request");
        assert!(reply.error().is_none(), "{request} → {}", reply.line);
        reply
    }

    /// Waits until every change is published; returns the generation.
    pub fn sync(&self) -> u64 {
        self.request(serde_json::json!({"op": "sync"})).line["generation"]
            .as_u64()
            .unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        self.request(serde_json::json!({"op": "status"})).line
    }

    /// Polls `status` until `done` holds for it (at most a minute); `what` names the wait
    /// in the failure.
    pub fn status_until(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "{what}: {status}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits (at most a minute) until the daemon is paused at `failpoint` (set to `pause`
    /// in its environment) and returns the marker whose removal lets it go on.
    pub fn paused_at(&self, failpoint: &str) -> PathBuf {
        let marker = rollupd::engine::failpoint::pause_marker(self.child.id(), failpoint);
        let start = std::time::Instant::now();
        while !marker.exists() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the daemon never paused at {failpoint}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        marker
    }

    /// Stops the daemon with SIGTERM; it must exit 0.
    pub fn stop(mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "rollupd run exited with {status}");
    }

    /// Waits (at most a minute) for the daemon to exit by itself; its exit status.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the daemon did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends `rows` sample rows (`sample_file` with `seed`, without its header) to `path`.
pub fn append_rows(path: &Path, rows: usize, seed: u64) {
    let text = rollupd::app::gen::sample_file(rows, seed);
    let body = &text[text.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, body).unwrap();
}
