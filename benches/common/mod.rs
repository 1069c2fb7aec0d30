//! What the benches share: their flags, and the bench data set, generated once and reused.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use rollupd::app::gen::{generate, GenOptions};

/// The value of `--name VALUE` on the command line, or `default`.
pub fn arg<T: FromStr>(name: &str, default: T) -> T {
    let argv: Vec<String> = std::env::args().collect();
    match argv.iter().position(|a| a == name) {
        Some(i) => argv
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a value")),
        None => default,
    }
}

/// Refuses to measure a binary whose embedded DuckDB was compiled with asserts (a profile
/// with debug info): its timings would mean nothing.
pub fn require_release_duckdb() {
    assert_eq!(
        rollupd::storage::table::DUCKDB_BUILD,
        "release",
        "the embedded DuckDB is a debug build; benchmark a profile without debug info"
    );
}

/// `--data DIR`: where the bench data and work folders go.
pub fn data_root() -> PathBuf {
    arg("--data", std::env::temp_dir().join("rollupd-bench"))
}

/// The bench files in `data` if there are exactly `files` of them with `rows` rows each.
fn existing_data(data: &Path, files: usize, rows: usize) -> Option<Vec<PathBuf>> {
    let found = rollupd::ingest::watch::scan_folder(data, false).ok()?;
    if found.len() != files {
        return None;
    }
    for f in &found {
        let text = std::fs::read(f).ok()?;
        if text.iter().filter(|b| **b == b'\n').count() != rows + 1 {
            return None;
        }
    }
    Some(found)
}

/// The bench data: generated once (seed 1, as `cargo bench --bench build`), then reused.
pub fn bench_data(root: &Path, files: usize, rows: usize) -> Vec<PathBuf> {
    let data = root.join(format!("data-{files}x{rows}"));
    if let Some(found) = existing_data(&data, files, rows) {
        return found;
    }
    let _ = std::fs::remove_dir_all(&data);
    let start = Instant::now();
    let r = generate(
        &data,
        &GenOptions {
            files,
            rows_per_file: rows,
            seed: 1,
        },
    )
    .expect("generate");
    eprintln!(
        "generated {} rows, {:.2} GB in {:.1} s",
        r.rows,
        r.bytes as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    r.files
}

/// An empty work folder `name` under `root` (whatever was there is removed).
pub fn work_dir(root: &Path, name: &str) -> PathBuf {
    let work = root.join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    work
}

/// A folder of hard links to `files`.
pub fn linked(files: &[PathBuf], dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for f in files {
        std::fs::hard_link(f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir.to_path_buf()
}
