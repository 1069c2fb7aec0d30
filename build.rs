//! Records whether the bundled DuckDB is compiled as a debug build.
//!
//! libduckdb-sys defines `DEBUG` (DuckDB's asserts and verification passes, 5–100×
//! slower aggregates) whenever Cargo gives build scripts `DEBUG=true`, which it does for
//! any profile with debug info, even `line-tables-only`. Build scripts of one profile see
//! the same value, so this one tells the binary what DuckDB got; the daemon warns and
//! the benchmarks refuse to run when it is set.

fn main() {
    println!("cargo:rerun-if-env-changed=DEBUG");
    let debug = std::env::var("DEBUG").is_ok_and(|v| v != "false" && v != "0");
    println!(
        "cargo:rustc-env=ROLLUPD_DUCKDB_BUILD={}",
        if debug { "debug" } else { "release" }
    );
}
