//! Command-line parsing and the commands' output for people.
//!
//! Settings come from the platform defaults, overridden by the config file (`--config`,
//! or the platform's default one if present), overridden by flags.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value as Json;

use rollupd::app::config::{Config, Folders};
use rollupd::app::gen::{generate, GenOptions};
use rollupd::app::service::{self, Platform, ServicePaths};
use rollupd::daemon::client::{Client, ClientOptions};
use rollupd::daemon::default_socket;
use rollupd::daemon::limits::QueryLimits;
use rollupd::daemon::protocol::{
    error_line, query_response, AdviseReply, ExplainReply, FilesReply, Format, Head, ReloadReply,
    Request, StatusReply, SyncReply,
};
use rollupd::model::schema::Zone;
use rollupd::storage::manifest::Manifest;
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

/// Settings given on the command line, over the config file.
#[derive(Args, Clone, Default)]
struct Settings {
    /// The config file (default: the platform's, if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The folder of CSV files.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// The state folder.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The daemon's socket (default: rollupd.sock in the state folder).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Time zone of the derived time columns (UTC or an IANA name).
    #[arg(long)]
    time_zone: Option<String>,
    /// How long a changed file must stay the same before it is folded.
    #[arg(long)]
    settle_ms: Option<u64>,
    /// How often to rescan the folder in case an event was missed.
    #[arg(long)]
    rescan_secs: Option<u64>,
    /// How long an unterminated last line is held for its writer to finish it.
    #[arg(long)]
    line_hold_ms: Option<u64>,
    /// Bad rows a file may have (skipped and reported) before it fails.
    #[arg(long)]
    max_bad_rows: Option<u64>,
    /// The longest request line the socket accepts, in bytes.
    #[arg(long)]
    max_request_bytes: Option<usize>,
}

impl Settings {
    /// The effective configuration.
    fn config(&self) -> Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(w) = &self.watch {
            c.watch = absolute(w)?;
        }
        if let Some(s) = &self.state {
            c.state = absolute(s)?;
        }
        if let Some(s) = &self.socket {
            c.socket = Some(absolute(s)?);
        }
        if let Some(z) = &self.time_zone {
            c.time_zone = z.clone();
        }
        c.settle_ms = self.settle_ms.unwrap_or(c.settle_ms);
        c.rescan_secs = self.rescan_secs.unwrap_or(c.rescan_secs);
        c.line_hold_ms = self.line_hold_ms.unwrap_or(c.line_hold_ms);
        c.max_bad_rows = self.max_bad_rows.unwrap_or(c.max_bad_rows);
        c.max_request_bytes = self.max_request_bytes.unwrap_or(c.max_request_bytes);
        c.check().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::env::current_dir()?.join(p))
}

/// Where to reach a daemon: its socket, the state folder it serves, or the config.
#[derive(Args, Clone)]
struct Target {
    /// The daemon's socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The state folder (its daemon's socket is rollupd.sock in it).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The config file naming the socket (default: the platform's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds to wait for the daemon's answer (for sync: for every change to be
    /// published).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

impl Target {
    /// A connection to the daemon that waits `timeout` seconds for each answer.
    fn client(&self) -> Result<Client> {
        let opts = ClientOptions {
            read_timeout: Some(Duration::from_secs(self.timeout.max(1))),
            ..ClientOptions::default()
        };
        Ok(Client::connect_with(&self.socket()?, opts)?)
    }

    fn socket(&self) -> Result<PathBuf> {
        Ok(match (&self.socket, &self.state) {
            (Some(s), _) => s.clone(),
            (None, Some(state)) => default_socket(state),
            (None, None) => Config::load(self.config.as_deref())?.socket(),
        })
    }
}

/// A query given on the command line or in a file.
#[derive(Args, Clone)]
struct QueryInput {
    /// Read the query from a file ("-" for stdin).
    #[arg(short = 'f', long = "file", conflicts_with = "query")]
    file: Option<PathBuf>,
    /// The query as JSON text.
    query: Option<String>,
}

impl QueryInput {
    /// The JSON given: one query, or (from a file) possibly an array of them.
    fn json(&self) -> Result<Json> {
        let text = match (&self.file, &self.query) {
            (Some(f), _) if f.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
            (Some(f), _) => {
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
            }
            (None, Some(j)) => j.clone(),
            (None, None) => bail!("give a query as JSON text or with -f FILE"),
        };
        serde_json::from_str(&text).context("the query is not valid JSON")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground: watch the folder, fold changes, serve queries.
    Run {
        #[command(flatten)]
        settings: Settings,
    },
    /// Bring the state up to date with the folder, once, without a daemon.
    Build {
        #[command(flatten)]
        settings: Settings,
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
        /// Keep answering: print the answer again each time new data changes it (through
        /// the daemon; one query), until interrupted.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        input: QueryInput,
    },
    /// Where the daemon would answer a query: the rollup chosen, why each other rollup
    /// was not, and the rows it reads.
    Explain {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        input: QueryInput,
        /// Print the raw protocol response.
        #[arg(long)]
        json: bool,
    },
    /// The most costly query shapes the daemon answered from DuckDB, each with the
    /// smallest rollup that would answer it (for the `rollups` setting) and its size.
    Advise {
        #[command(flatten)]
        target: Target,
        /// How many shapes.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print the raw protocol response.
        #[arg(long)]
        json: bool,
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
    /// Make the daemon read its config again and apply its time zone and rollup set,
    /// computed from its table (no CSV is read) while the old set keeps answering (SIGHUP
    /// does the same). Waits until the new set answers (`--timeout`; the change goes on
    /// if the wait ends first). Other settings take effect at the next start.
    Reload {
        #[command(flatten)]
        target: Target,
        /// Print the raw protocol response.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (defaults, config file, flags) as TOML.
    Config {
        #[command(flatten)]
        settings: Settings,
    },
    /// Install and start rollupd as a launchd agent (macOS) or systemd user service.
    Install {
        #[command(flatten)]
        settings: Settings,
        /// Print what would be written and run, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the files but do not load or start the service.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and remove the service; the data stays unless --purge.
    Uninstall {
        #[command(flatten)]
        settings: Settings,
        /// Also delete the state folder and the logs (never the watched CSVs).
        #[arg(long)]
        purge: bool,
        /// Print what would be removed and run, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove the files without stopping the service.
        #[arg(long)]
        no_stop: bool,
    },
    /// A first run: sample data, the daemon's cold build with progress, the reference
    /// queries' answers; then the daemon keeps serving (when run in a terminal).
    Demo {
        /// The demo's state folder; the sample CSVs go to its `inbox`.
        #[arg(long, default_value = "state")]
        state: PathBuf,
        #[arg(long, default_value_t = 8)]
        files: usize,
        #[arg(long, default_value_t = 250_000)]
        rows_per_file: usize,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from these definitions.
    Man,
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
}

/// The command-line definition, its version naming the bundled DuckDB.
fn command() -> clap::Command {
    let version = format!(
        "{} (DuckDB {}, {} build)",
        env!("CARGO_PKG_VERSION"),
        rollupd::storage::table::duckdb_version(),
        rollupd::storage::table::DUCKDB_BUILD
    );
    Cli::command().version(version)
}

pub fn run() -> Result<()> {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    init_logging(&cli.command);
    dispatch(cli.command)
}

/// Logs to stderr: the daemon what it does, other commands only warnings (`RUST_LOG`
/// overrides either).
fn init_logging(command: &Command) {
    let level = match command {
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
}

/// Runs one command.
fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Run { settings } => run_daemon(settings)?,
        Command::Build { settings, json } => build(&settings.config()?, json)?,
        Command::Query {
            target,
            format,
            follow: true,
            input,
        } => follow(&target, input.json()?, format)?,
        Command::Query {
            target,
            format,
            follow: false,
            input,
        } => query(&target, input.json()?, format)?,
        Command::Explain {
            target,
            input,
            json,
        } => {
            let request = Request::Explain {
                query: input.json()?,
            };
            print_op(&target, &request, json, explain_text)?
        }
        Command::Advise {
            target,
            limit,
            json,
        } => {
            let request = Request::Advise { limit: Some(limit) };
            print_op(&target, &request, json, advise_text)?
        }
        Command::Status { target, json } => {
            print_op(&target, &Request::Status {}, json, status_text)?
        }
        Command::Files { target, json } => print_op(&target, &Request::Files {}, json, files_text)?,
        Command::Sync { target, json } => sync(target, json)?,
        Command::Reload { target, json } => {
            print_op(&target, &Request::Reload {}, json, reload_text)?
        }
        Command::Config { settings } => print!("{}", settings.config()?.to_toml()),
        Command::Install {
            settings,
            dry_run,
            no_start,
        } => install(&settings, dry_run, no_start)?,
        Command::Uninstall {
            settings,
            purge,
            dry_run,
            no_stop,
        } => uninstall(&settings, purge, dry_run, no_stop)?,
        Command::Demo {
            state,
            files,
            rows_per_file,
        } => rollupd::app::demo::run(&absolute(&state)?, files, rows_per_file)?,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "rollupd", &mut std::io::stdout())
        }
        Command::Man => clap_mangen::Man::new(command()).render(&mut std::io::stdout())?,
        Command::Gen {
            dir,
            files,
            rows_per_file,
            seed,
        } => gen(&dir, files, rows_per_file, seed)?,
    }
    Ok(())
}

/// Runs the daemon in the foreground; `reload` reads the same config file, under the
/// same flags.
fn run_daemon(settings: Settings) -> Result<()> {
    let mut opts = settings.config()?.daemon_options()?;
    opts.reload = Some(rollupd::daemon::Reloader::new(move || {
        let config = settings
            .config()
            .map_err(|e| rollupd::Error::Internal(format!("{e:#}")))?;
        config.layout()
    }));
    Ok(rollupd::daemon::run(opts)?)
}

/// Answers a query, or an array of them, and prints the answers. `--state` alone means
/// "that state folder": through its daemon if one serves it, straight from the folder
/// otherwise.
fn query(target: &Target, input: Json, format: Format) -> Result<()> {
    let queries = match input {
        Json::Array(items) => items,
        one => vec![one],
    };
    let direct = target.socket.is_none()
        && target.state.is_some()
        && Client::connect(&target.socket()?).is_err();
    let answers = match &target.state {
        Some(state) if direct => query_state(state, &queries, format)?,
        _ => query_socket(&mut target.client()?, queries.clone(), format)?,
    };
    print_answers(answers, queries.len() > 1, format)
}

/// Waits until the daemon has folded and published every change. The daemon gives up
/// first and says so; the client waits a little longer.
fn sync(target: Target, json: bool) -> Result<()> {
    let sync = Request::Sync {
        timeout_ms: Some(target.timeout.saturating_mul(1000)),
    };
    let target = Target {
        timeout: target.timeout.saturating_add(10),
        ..target
    };
    print_op(&target, &sync, json, |r: &SyncReply| {
        format!("generation {}\n", r.generation)
    })
}

/// Generates sample files into `dir` and says what it wrote.
fn gen(dir: &Path, files: usize, rows_per_file: usize, seed: u64) -> Result<()> {
    let start = std::time::Instant::now();
    let options = GenOptions {
        files,
        rows_per_file,
        seed,
    };
    let report =
        generate(dir, &options).with_context(|| format!("generating into {}", dir.display()))?;
    eprintln!(
        "wrote {} files, {} rows, {:.1} MB to {} in {:.1} s",
        report.files.len(),
        report.rows,
        report.bytes as f64 / 1e6,
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What `build --json` prints.
#[derive(serde::Serialize)]
struct BuildReport<'a> {
    generation: u64,
    added: usize,
    replaced: usize,
    appended: usize,
    moved: usize,
    removed: usize,
    rows: u64,
    bytes_parsed: u64,
    failed: Vec<BuildFailure<'a>>,
    elapsed_us: u64,
}

#[derive(serde::Serialize)]
struct BuildFailure<'a> {
    path: &'a std::path::Path,
    error: &'a str,
}

fn build(config: &Config, json: bool) -> Result<()> {
    let engine = Engine::open(&config.state, config.engine_options()?)?;
    let r = engine.update(&config.watch)?;
    if json {
        let report = BuildReport {
            generation: r.generation,
            added: r.added,
            replaced: r.replaced,
            appended: r.appended,
            moved: r.moved,
            removed: r.removed,
            rows: r.rows,
            bytes_parsed: r.bytes_parsed,
            failed: r
                .failed
                .iter()
                .map(|f| BuildFailure {
                    path: &f.path,
                    error: &f.reason,
                })
                .collect(),
            elapsed_us: r.elapsed.as_micros() as u64,
        };
        println!("{}", serde_json::to_string(&report)?);
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
    if let Some(why) = engine.rebuilt() {
        eprintln!("rebuilt: {why}");
    }
    for f in &r.failed {
        eprintln!("failed: {}: {}", f.path.display(), f.reason);
    }
    if !r.failed.is_empty() {
        bail!("{} file(s) could not be folded", r.failed.len());
    }
    Ok(())
}

/// The service's paths for the effective config (which is written to the config path if
/// no file is there yet, so the service runs with it).
fn service_paths(settings: &Settings) -> Result<(ServicePaths, Config)> {
    let config = settings.config()?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")?;
    let paths = ServicePaths {
        binary: std::env::current_exe()?,
        config: match &settings.config {
            Some(c) => absolute(c)?,
            None => Folders::current().config,
        },
        state: config.state.clone(),
        socket: config.socket(),
        watch: config.watch.clone(),
        log_dir: config.log_dir.clone(),
        home,
        xdg_config_home: std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
    };
    Ok((paths, config))
}

fn install(settings: &Settings, dry_run: bool, no_start: bool) -> Result<()> {
    let (paths, config) = service_paths(settings)?;
    let platform = Platform::current();
    // SAFETY: getuid has no preconditions.
    let mut plan = service::install_plan(platform, &paths, unsafe { libc::getuid() });
    if !paths.config.exists() {
        plan.write
            .insert(0, (paths.config.clone(), config.to_toml()));
    }
    if dry_run {
        print!("{}", plan.describe());
        return Ok(());
    }
    for dir in [&config.watch, &config.state, &config.log_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    plan.execute(!no_start)?;
    println!(
        "rollupd is installed ({}).",
        service::unit_path(platform, &paths).display()
    );
    println!("  drop CSV files into: {}", config.watch.display());
    println!("  state:               {}", config.state.display());
    println!("  socket:              {}", config.socket().display());
    println!("  config:              {}", paths.config.display());
    match platform {
        Platform::Launchd => println!("  logs:                {}", config.log_dir.display()),
        Platform::Systemd => println!("  logs:                journalctl --user -u rollupd"),
    }
    println!("Try: rollupd status");
    Ok(())
}

fn uninstall(settings: &Settings, purge: bool, dry_run: bool, no_stop: bool) -> Result<()> {
    let (paths, _) = service_paths(settings)?;
    let platform = Platform::current();
    // SAFETY: getuid has no preconditions.
    let plan = service::uninstall_plan(platform, &paths, unsafe { libc::getuid() }, purge);
    if dry_run {
        print!("{}", plan.describe());
        return Ok(());
    }
    plan.execute(!no_stop)?;
    println!("rollupd is uninstalled.");
    if !purge {
        println!(
            "The state is kept in {} (remove it with `rollupd uninstall --purge`).",
            paths.state.display()
        );
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
    // Open the state with the layout it was built with, so nothing is rebuilt.
    let manifest = Manifest::load(state)?.context("no manifest in the state folder")?;
    let opts = EngineOptions {
        zone: Zone::parse(&manifest.zone)?,
        specs: manifest.rollups.iter().map(|r| r.spec.clone()).collect(),
        ..EngineOptions::default()
    };
    let engine = Engine::open(state, opts)?;
    let limits = QueryLimits::default();
    queries
        .iter()
        .map(|q| {
            let answer = engine
                .query(q)
                .and_then(|answer| query_response(&answer, format, &limits));
            Ok(answer.map_err(|e| error_line(&e)))
        })
        .collect()
}

/// Answers queries through the daemon, over one connection.
fn query_socket(client: &mut Client, queries: Vec<Json>, format: Format) -> Result<Vec<Answer>> {
    queries
        .into_iter()
        .map(|q| {
            let reply = client.send(&Request::query(q, format).streamed())?;
            Ok(match reply.error() {
                None => Ok((reply.line.to_string(), reply.payload)),
                Some(_) => Err(reply.line.to_string()),
            })
        })
        .collect()
}

/// Subscribes to a query and prints each answer as it comes (json lines, or csv/arrow
/// payloads), until the daemon ends the connection or the process is interrupted.
fn follow(target: &Target, query: Json, format: Format) -> Result<()> {
    if query.is_array() {
        bail!("--follow takes one query, not an array");
    }
    let mut client = target.client()?;
    let mut reply = client.send(&Request::Subscribe { query, format })?;
    // After the first answer, the next comes whenever the data changes.
    client.set_read_timeout(None)?;
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        match reply.error() {
            Some(e) if n == 0 => bail!("{} error: {}", e.kind, e.message),
            Some(e) => eprintln!("rollupd: {} error: {}", e.kind, e.message),
            None if format == Format::Json => writeln!(out, "{}", reply.line)?,
            None => out.write_all(&reply.payload)?,
        }
        out.flush()?;
        reply = client.next_reply()?;
    }
    Ok(())
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
                    let head: Head = serde_json::from_str(&line)?;
                    let e = head.error.context("an error reply without its error")?;
                    eprintln!("rollupd: {} error: {}", e.kind, e.message);
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

/// Runs one protocol request on the daemon and prints its reply: raw with `--json`, else
/// as `text` renders it for people. An error reply becomes the command's error.
fn print_op<T: serde::de::DeserializeOwned>(
    target: &Target,
    request: &Request,
    raw: bool,
    text: impl Fn(&T) -> String,
) -> Result<()> {
    let reply = target.client()?.send(request)?;
    let typed: T = reply.parse()?;
    if raw {
        println!("{}", reply.line);
    } else {
        print!("{}", text(&typed));
    }
    Ok(())
}

fn reload_text(r: &ReloadReply) -> String {
    let mut out = match r.change.is_empty() {
        true => "no change: the config names the time zone and rollups in place\n".to_string(),
        false => format!(
            "{}; generation {}, computed from {} rows of {} files in {:.1} s\n",
            r.change,
            r.generation,
            r.rows,
            r.files,
            r.elapsed_ms as f64 / 1000.0
        ),
    };
    out += &format!(
        "time zone: {}\nrollups: {}\n",
        r.time_zone,
        r.rollups.join(", ")
    );
    out
}

fn status_text(s: &StatusReply) -> String {
    let mut out = format!(
        "generation {}, watching {}\n",
        s.generation,
        s.watch.display()
    );
    out += &format!(
        "files: {} tracked, {} pending, {} failed, {} skipped\n",
        s.files.tracked, s.files.pending, s.files.failed, s.files.skipped
    );
    if let Some(since) = &s.watch_state.missing_since {
        out += &format!("the watched folder is missing since {since}\n");
    }
    out += &format!(
        "rows: {}; parsed since start: {}\n",
        s.rows,
        human_bytes(s.bytes_parsed)
    );
    out += &format!(
        "state: {} in {}\n",
        human_bytes(s.state_bytes),
        s.state.display()
    );
    out += &format!(
        "last change: {}\n",
        s.last_change.as_deref().unwrap_or("none since start")
    );
    if let Some(e) = &s.last_error {
        out += &format!("last error: {e}\n");
    }
    if let Some(f) = &s.fault {
        out += &format!(
            "FAULT since {}: {}; updates failed {} times, next try {}\n",
            f.since,
            f.error,
            f.attempts,
            f.next_retry.as_deref().unwrap_or("soon")
        );
    }
    if let Some(p) = &s.layout_change {
        out += &format!(
            "changing the layout ({}): {}, {} of {} files\n",
            p.change, p.step, p.files_done, p.files
        );
    }
    let (q, c) = (&s.queries, &s.connections);
    out += &format!(
        "queries: {} running; since start {} cancelled (client gone), {} timed out, {} too large\n",
        q.running, q.cancelled, q.timed_out, q.too_large
    );
    out += &format!(
        "connections: {} open; since start {} refused (busy), {} closed idle\n",
        c.open, c.refused, c.idle_closed
    );
    out += "rollups:\n";
    for r in &s.rollups {
        out += &format!(
            "  {:<28} {:>10} rows {:>10}\n",
            r.name,
            r.rows,
            human_bytes(r.bytes)
        );
    }
    out
}

fn explain_text(e: &ExplainReply) -> String {
    let route = match &e.rollup {
        Some(name) => format!("rollup {name}"),
        None => "DuckDB".to_string(),
    };
    let mut out = format!(
        "answered from {route}, reading {} rows (generation {})\n",
        e.rows_scanned, e.generation
    );
    if let Some(sql) = &e.sql {
        out += &format!("sql: {sql}\n");
    }
    for r in &e.rollups {
        let why = match &r.reason {
            None => "chosen".to_string(),
            Some(reason) => reason.message.clone(),
        };
        out += &format!("  {:<28} {:>10} rows  {why}\n", r.name, r.rows);
    }
    out
}

fn advise_text(a: &AdviseReply) -> String {
    if a.shapes.is_empty() {
        return "no query shape was answered from DuckDB yet\n".to_string();
    }
    let mut out = String::new();
    for s in &a.shapes {
        out += &format!(
            "{}\n  {} queries, p50 {:.1} ms, p99 {:.1} ms, {:.1} s in all\n",
            s.shape,
            s.count,
            s.p50_us as f64 / 1e3,
            s.p99_us as f64 / 1e3,
            s.total_us as f64 / 1e6
        );
        out += &match (&s.rollup, s.rollup_rows, &s.reason) {
            (Some(name), Some(rows), _) => format!("  add rollup {name} ({rows} rows)\n"),
            (Some(name), None, _) => format!("  add rollup {name}\n"),
            (None, _, reason) => format!("  {}\n", reason.as_deref().unwrap_or("")),
        };
    }
    out
}

fn files_text(s: &FilesReply) -> String {
    let mut out = format!("{:<8} {:>10} {:>10}  PATH\n", "STATE", "SIZE", "ROWS");
    for f in &s.files {
        let rows = f.rows.map_or("-".to_string(), |r| r.to_string());
        out += &format!(
            "{:<8} {:>10} {:>10}  {}",
            f.state.name(),
            f.size.map_or("-".to_string(), human_bytes),
            rows,
            f.path.display()
        );
        for line in f.error.iter().chain(&f.note) {
            out += &format!("\n         {line}");
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
