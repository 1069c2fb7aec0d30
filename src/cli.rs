//! Command-line parsing and the commands' output for people (CONTRACT §4).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value as Json};

use rollupd::client::Client;
use rollupd::daemon::{default_socket, DaemonOptions};
use rollupd::gen::{generate, GenOptions};
use rollupd::protocol::{error_line, query_response, Format};
use rollupd::server::ServerOptions;
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

/// Where to reach a daemon: its socket, or the state folder it serves.
#[derive(Args, Clone)]
struct Target {
    /// The daemon's socket (default: rollupd.sock in the state folder).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The state folder.
    #[arg(long)]
    state: Option<PathBuf>,
}

impl Target {
    fn state(&self) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE))
    }

    fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| default_socket(&self.state()))
    }
}

const DEFAULT_STATE: &str = "state";

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground: watch the folder, fold changes, serve queries.
    Run {
        /// The folder of CSV files (created if missing).
        #[arg(long)]
        watch: PathBuf,
        /// The state folder.
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        /// The socket to serve on (default: rollupd.sock in the state folder).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// How long a changed file must stay the same before it is folded.
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
        /// How often to rescan the folder in case an event was missed.
        #[arg(long, default_value_t = 30)]
        rescan_secs: u64,
        /// Bad rows a file may have (skipped and reported) before it fails.
        #[arg(long, default_value_t = 0)]
        max_bad_rows: u64,
        /// The longest request line the socket accepts, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_request_bytes: usize,
    },
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
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Answer a JSON query (or a file holding one query or an array of them), through the
    /// daemon's socket, or straight from a state folder no daemon holds (--state).
    Query {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(long, default_value = "json")]
        format: Format,
        /// Read the query from a file ("-" for stdin).
        #[arg(short = 'f', long = "file", conflicts_with = "json")]
        file: Option<PathBuf>,
        /// The query as JSON text.
        json: Option<String>,
    },
    /// The daemon's state: generation, files, rows, rollups, last change and error.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the raw protocol response.
        #[arg(long)]
        json: bool,
    },
    /// The files the daemon tracks, with their state.
    Files {
        #[command(flatten)]
        target: Target,
        /// Print the raw protocol response.
        #[arg(long)]
        json: bool,
    },
    /// Rescan the folder and wait until every change is folded and published.
    Sync {
        #[command(flatten)]
        target: Target,
        /// Print the raw protocol response.
        #[arg(long)]
        json: bool,
    },
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    // The daemon logs what it does; one-shot commands only warnings.
    let level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Run {
            watch,
            state,
            socket,
            settle_ms,
            rescan_secs,
            max_bad_rows,
            max_request_bytes,
        } => {
            let socket = socket.unwrap_or_else(|| default_socket(&state));
            rollupd::daemon::run(DaemonOptions {
                watch,
                state,
                socket,
                engine: EngineOptions {
                    max_bad_rows,
                    ..EngineOptions::default()
                },
                settle: Duration::from_millis(settle_ms),
                rescan: Duration::from_secs(rescan_secs.max(1)),
                wait_timeout: Duration::from_secs(30),
                server: ServerOptions {
                    max_request_bytes,
                    ..ServerOptions::default()
                },
            })?;
        }
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
            target,
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
            let parsed: Json =
                serde_json::from_str(&text).context("the query is not valid JSON")?;
            let queries = match parsed {
                Json::Array(items) => items,
                one => vec![one],
            };
            // --state alone means "that state folder": through its daemon if one serves it,
            // straight from the folder otherwise.
            let direct = target.socket.is_none()
                && target.state.is_some()
                && Client::connect(&target.socket()).is_err();
            let answers = if direct {
                query_state(&target.state(), &queries, format)?
            } else {
                query_socket(&target.socket(), &queries, format)?
            };
            print_answers(answers, queries.len() > 1, format)?;
        }
        Command::Status { target, json } => print_op(&target, "status", json, status_text)?,
        Command::Files { target, json } => print_op(&target, "files", json, files_text)?,
        Command::Sync { target, json } => print_op(&target, "sync", json, |r| {
            format!("generation {}\n", r["generation"])
        })?,
    }
    Ok(())
}

/// One query's outcome: a response line and its payload, or an error line.
type Answer = Result<(String, Vec<u8>), String>;

/// Answers queries straight from a state folder no daemon holds.
fn query_state(state: &Path, queries: &[Json], format: Format) -> Result<Vec<Answer>> {
    if !state.join("manifest.json").exists() {
        bail!(
            "no rollups in {} yet: run `rollupd build --watch DIR --state {}` first",
            state.display(),
            state.display()
        );
    }
    let engine = Engine::open(state, EngineOptions::default())?;
    queries
        .iter()
        .map(|q| {
            Ok(match engine.query(q) {
                Ok(answer) => Ok(query_response(&answer, format)?),
                Err(e) => Err(error_line(&e)),
            })
        })
        .collect()
}

/// Answers queries through the daemon listening on `socket`, over one connection.
fn query_socket(socket: &Path, queries: &[Json], format: Format) -> Result<Vec<Answer>> {
    let mut client = Client::connect(socket)?;
    let format = format!("{format:?}").to_lowercase();
    queries
        .iter()
        .map(|q| {
            let reply = client.request(&json!({"op": "query", "query": q, "format": format}))?;
            Ok(match reply.error() {
                None => Ok((reply.line.to_string(), reply.payload)),
                Some(_) => Err(reply.line.to_string()),
            })
        })
        .collect()
}

/// Prints answers: json lines (errors too, when there are several queries), or csv/arrow
/// payloads. Exits non-zero if any query failed.
fn print_answers(answers: Vec<Answer>, several: bool, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for answer in answers {
        match answer {
            Ok((line, payload)) => match format {
                Format::Json => writeln!(out, "{line}")?,
                _ => out.write_all(&payload)?,
            },
            Err(line) => {
                failures += 1;
                if several && format == Format::Json {
                    writeln!(out, "{line}")?;
                } else {
                    out.flush()?;
                    let e: Json = serde_json::from_str(&line)?;
                    eprintln!(
                        "rollupd: {} error: {}",
                        e["error"]["kind"].as_str().unwrap_or("internal"),
                        e["error"]["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    out.flush()?;
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs one protocol op on the daemon and prints its reply: raw with `--json`, else as
/// `text` makes it for people. An error reply becomes the command's error.
fn print_op(target: &Target, op: &str, raw: bool, text: impl Fn(&Json) -> String) -> Result<()> {
    let mut client = Client::connect(&target.socket())?;
    let reply = client.request(&json!({ "op": op }))?;
    if let Some((kind, message)) = reply.error() {
        bail!("{kind} error: {message}");
    }
    if raw {
        println!("{}", reply.line);
    } else {
        print!("{}", text(&reply.line));
    }
    Ok(())
}

fn status_text(s: &Json) -> String {
    let mut out = format!(
        "generation {}, watching {}\n",
        s["generation"],
        s["watch"].as_str().unwrap_or("?")
    );
    let files = &s["files"];
    out += &format!(
        "files: {} tracked, {} pending, {} failed\n",
        files["tracked"], files["pending"], files["failed"]
    );
    out += &format!(
        "rows: {}; parsed since start: {}\n",
        s["rows"],
        human_bytes(s["bytes_parsed"].as_u64().unwrap_or(0))
    );
    out += &format!(
        "state: {} in {}\n",
        human_bytes(s["state_bytes"].as_u64().unwrap_or(0)),
        s["state"].as_str().unwrap_or("?")
    );
    out += &format!(
        "last change: {}\n",
        s["last_change"].as_str().unwrap_or("none since start")
    );
    if let Some(e) = s["last_error"].as_str() {
        out += &format!("last error: {e}\n");
    }
    out += "rollups:\n";
    for r in s["rollups"].as_array().into_iter().flatten() {
        out += &format!(
            "  {:<28} {:>10} rows {:>10}\n",
            r["name"].as_str().unwrap_or("?"),
            r["rows"],
            human_bytes(r["bytes"].as_u64().unwrap_or(0))
        );
    }
    out
}

fn files_text(s: &Json) -> String {
    let mut out = format!("{:<8} {:>10} {:>10}  PATH\n", "STATE", "SIZE", "ROWS");
    for f in s["files"].as_array().into_iter().flatten() {
        let rows = f["rows"]
            .as_u64()
            .map_or("-".to_string(), |r| r.to_string());
        out += &format!(
            "{:<8} {:>10} {:>10}  {}",
            f["state"].as_str().unwrap_or("?"),
            human_bytes(f["size"].as_u64().unwrap_or(0)),
            rows,
            f["path"].as_str().unwrap_or("?")
        );
        if let Some(e) = f["error"].as_str() {
            out += &format!("\n         {e}");
        }
        out.push('\n');
    }
    out
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
