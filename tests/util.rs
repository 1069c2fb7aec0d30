//! Helpers for the integration tests: temp folders, sample data, running the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rollupd::gen::{generate, GenOptions};
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
        rollupd::watch::scan_folder(&self.watch(), false).unwrap()
    }

    /// Opens an engine on the state folder and builds it from the watched folder.
    pub fn build(&self) -> Engine {
        let engine = Engine::open(&self.state(), EngineOptions::default()).expect("open");
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

/// The five reference queries of CONTRACT §2.
pub fn reference_queries() -> Vec<serde_json::Value> {
    serde_json::from_str(REFERENCE).unwrap()
}

const REFERENCE: &str = r#"[{"select":["day",{"SUM":"bid_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"impression"}],"group_by":["day"]},
 {"select":["publisher_id",{"SUM":"bid_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"impression"},{"col":"country","op":"eq","val":"JP"},{"col":"day","op":"between","val":["2024-10-20","2024-10-23"]}],"group_by":["publisher_id"]},
 {"select":["country",{"AVG":"total_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"purchase"}],"group_by":["country"],"order_by":[{"col":"AVG(total_price)","dir":"desc"}]},
 {"select":["advertiser_id","type",{"COUNT":"*"}],"from":"events","group_by":["advertiser_id","type"],"order_by":[{"col":"COUNT(*)","dir":"desc"}]},
 {"select":["minute",{"SUM":"bid_price"}],"from":"events","where":[{"col":"type","op":"eq","val":"impression"},{"col":"day","op":"eq","val":"2024-06-01"}],"group_by":["minute"],"order_by":[{"col":"minute","dir":"asc"}]}]"#;
