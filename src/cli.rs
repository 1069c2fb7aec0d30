//! Command-line parsing and the commands' output for people (CONTRACT §4).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use rollupd::gen::{generate, GenOptions};
use rollupd::protocol::{error_line, query_response, Format};
use rollupd::{Engine, EngineOptions};

#[derive(Parser)]
#[command(
    name = "rollupd",
    version,
    about = "Incremental rollups over a folder of ad-event CSVs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sample event CSVs shaped like the real data.
    Gen {
        /// Folder to write into.
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        files: usize,
        #[arg(long, default_value_t = 100_000)]
        rows_per_file: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Bring the state up to date with the folder, once, without a daemon.
    Build {
        /// The folder of CSV files.
        #[arg(long)]
        watch: PathBuf,
        /// The state folder.
        #[arg(long, default_value = "state")]
        state: PathBuf,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Answer a JSON query (or a file holding one query or an array of them).
    Query {
        /// Query straight from a state folder no daemon holds.
        #[arg(long, default_value = "state")]
        state: PathBuf,
        /// Output format.
        #[arg(long, default_value = "json")]
        format: Format,
        /// Read the query from a file ("-" for stdin).
        #[arg(short = 'f', long = "file", conflicts_with = "json")]
        file: Option<PathBuf>,
        /// The query as JSON text.
        json: Option<String>,
    },
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Gen {
            dir,
            files,
            rows_per_file,
            seed,
        } => {
            let start = std::time::Instant::now();
            let report = generate(
                &dir,
                &GenOptions {
                    files,
                    rows_per_file,
                    seed,
                },
            )
            .with_context(|| format!("generating into {}", dir.display()))?;
            eprintln!(
                "wrote {} files, {} rows, {:.1} MB to {} in {:.1} s",
                report.files.len(),
                report.rows,
                report.bytes as f64 / 1e6,
                dir.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::Build { watch, state, json } => {
            let engine = Engine::open(&state, EngineOptions::default())?;
            let r = engine.update(&watch)?;
            if json {
                let failed: Vec<serde_json::Value> = r
                    .failed
                    .iter()
                    .map(|(p, e)| serde_json::json!({"path": p, "error": e}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "generation": r.generation, "added": r.added, "replaced": r.replaced,
                        "appended": r.appended, "moved": r.moved, "removed": r.removed,
                        "rows": r.rows, "bytes_parsed": r.bytes_parsed, "failed": failed,
                        "elapsed_us": r.elapsed.as_micros() as u64,
                    })
                );
            }
            eprintln!(
                "generation {}: {} added, {} rewritten, {} appended, {} moved, {} removed; \
                 {} rows, {:.1} MB parsed in {:.2} s",
                r.generation,
                r.added,
                r.replaced,
                r.appended,
                r.moved,
                r.removed,
                r.rows,
                r.bytes_parsed as f64 / 1e6,
                r.elapsed.as_secs_f64()
            );
            for (path, reason) in &r.failed {
                eprintln!("failed: {}: {reason}", path.display());
            }
            if !r.failed.is_empty() {
                bail!("{} file(s) could not be folded", r.failed.len());
            }
        }
        Command::Query {
            state,
            format,
            file,
            json,
        } => {
            let text = match (file, json) {
                (Some(f), _) if f.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
                (Some(f), _) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?,
                (None, Some(j)) => j,
                (None, None) => bail!("give a query as JSON text or with -f FILE"),
            };
            let parsed: serde_json::Value =
                serde_json::from_str(&text).context("the query is not valid JSON")?;
            let queries = match parsed {
                serde_json::Value::Array(items) => items,
                one => vec![one],
            };
            if !state.join("manifest.json").exists() {
                bail!(
                    "no rollups in {} yet: run `rollupd build --watch DIR --state {}` first",
                    state.display(),
                    state.display()
                );
            }
            let engine = Engine::open(&state, EngineOptions::default())?;
            let mut out = std::io::stdout().lock();
            let mut failures = 0;
            for q in &queries {
                match engine.query(q) {
                    Ok(answer) => {
                        let (line, payload) = query_response(&answer, format)?;
                        match format {
                            Format::Json => writeln!(out, "{line}")?,
                            _ => out.write_all(&payload)?,
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if queries.len() > 1 && format == Format::Json {
                            writeln!(out, "{}", error_line(&e))?;
                        } else {
                            out.flush()?;
                            eprintln!("rollupd: {} error: {e}", e.kind());
                        }
                    }
                }
            }
            out.flush()?;
            if failures > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
