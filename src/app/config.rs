//! Configuration: platform defaults, overridden by a TOML file, overridden by flags.
//!
//! Defaults follow the platform: on Linux the XDG folders (`~/.config/rollupd/config.toml`,
//! `~/.local/share/rollupd/{inbox,state}`, logs in the journal or `~/.local/state/rollupd`),
//! on macOS `~/Library/Application Support/rollupd` and `~/Library/Logs/rollupd`. Relative
//! paths in a config file are relative to the file's folder; `~/` is the home folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::daemon::cache::CacheOptions;
use crate::daemon::limits::QueryLimits;
use crate::daemon::server::ServerOptions;
use crate::daemon::DaemonOptions;
use crate::engine::failpoint::Failpoints;
use crate::engine::{EngineOptions, Layout};
use crate::error::{Error, Result};
use crate::model::schema::Zone;
use crate::rollup::{default_specs, RollupSpec};
use crate::storage::table::TableOptions;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The folder of CSV files to watch.
    pub watch: PathBuf,
    /// Whether CSVs in subfolders of `watch` count too.
    pub recursive: bool,
    /// The state folder: rollups, DuckDB table, store.
    pub state: PathBuf,
    /// The daemon's socket; `rollupd.sock` in the state folder when unset.
    pub socket: Option<PathBuf>,
    /// Where the service's logs go (launchd); systemd logs to the journal.
    pub log_dir: PathBuf,
    /// Time zone of the derived time columns: `UTC` or an IANA name.
    pub time_zone: String,
    /// How long a changed file's size and mtime must stay the same before it is folded.
    pub settle_ms: u64,
    /// How often to rescan the folder in case the watcher missed an event.
    pub rescan_secs: u64,
    /// How long the daemon holds back a file's unterminated last line after the file's
    /// last change, for its writer to finish it; then it is folded as it is.
    pub line_hold_ms: u64,
    /// Bad rows a file may have (skipped, counted and reported) before it fails.
    pub max_bad_rows: u64,
    /// CSV bytes folded per commit: bounds the memory an update holds.
    pub memory_budget_mb: u64,
    /// Fold threads (0 = one per core).
    pub fold_threads: usize,
    /// DuckDB's worker threads (0 = one per core).
    pub duckdb_threads: usize,
    /// DuckDB's memory limit, e.g. "1GB".
    pub duckdb_memory_limit: String,
    /// The longest request line the socket accepts.
    pub max_request_bytes: usize,
    /// Connections the socket serves at once; a client beyond them gets a `busy` error.
    pub max_connections: usize,
    /// Seconds a connection may stay without a request before it is closed.
    pub idle_timeout_secs: u64,
    /// Queries run at once; more wait for a slot.
    pub max_running_queries: usize,
    /// How long a query may run, in milliseconds.
    pub query_timeout_ms: u64,
    /// How long a `sync` waits for every change to be published unless it says otherwise.
    pub sync_timeout_secs: u64,
    /// Rows an answer may have.
    pub max_answer_rows: u64,
    /// Bytes an encoded answer may have.
    pub max_answer_bytes: u64,
    /// Items a query's `select` may have.
    pub max_select_items: usize,
    /// Values one `in` list may have.
    pub max_in_values: usize,
    /// Bytes of answers the answer cache may hold (0 turns it off).
    pub answer_cache_bytes: u64,
    /// The largest answer the cache keeps.
    pub answer_cache_entry_bytes: u64,
    /// The rollups to keep, by name (e.g. `day_type_country`, `all_advertiser_publisher`).
    pub rollups: Vec<String>,
}

/// The platform's folders for rollupd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folders {
    pub config: PathBuf,
    pub watch: PathBuf,
    pub state: PathBuf,
    pub log_dir: PathBuf,
}

impl Folders {
    /// The folders for a home folder and the XDG variables (`None` when unset), on macOS
    /// (`mac`) or elsewhere.
    pub fn for_home(home: &Path, xdg: impl Fn(&str) -> Option<PathBuf>, mac: bool) -> Folders {
        if mac {
            let base = home.join("Library/Application Support/rollupd");
            return Folders {
                config: base.join("config.toml"),
                watch: base.join("inbox"),
                state: base.join("state"),
                log_dir: home.join("Library/Logs/rollupd"),
            };
        }
        let dir = |var: &str, fallback: &str| {
            xdg(var)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(fallback))
                .join("rollupd")
        };
        let data = dir("XDG_DATA_HOME", ".local/share");
        Folders {
            config: dir("XDG_CONFIG_HOME", ".config").join("config.toml"),
            watch: data.join("inbox"),
            state: data.join("state"),
            log_dir: dir("XDG_STATE_HOME", ".local/state"),
        }
    }

    /// This machine's folders, from `HOME` and the XDG variables.
    pub fn current() -> Folders {
        let env = |var: &str| std::env::var_os(var).map(PathBuf::from);
        let home = env("HOME").unwrap_or_else(|| PathBuf::from("/"));
        Folders::for_home(&home, env, cfg!(target_os = "macos"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::with_folders(&Folders::current())
    }
}

impl Config {
    /// The defaults for the given folders.
    pub fn with_folders(f: &Folders) -> Config {
        Config {
            watch: f.watch.clone(),
            recursive: false,
            state: f.state.clone(),
            socket: None,
            log_dir: f.log_dir.clone(),
            time_zone: "UTC".into(),
            settle_ms: 1000,
            rescan_secs: 30,
            line_hold_ms: 10_000,
            max_bad_rows: 0,
            memory_budget_mb: 256,
            fold_threads: 0,
            duckdb_threads: 0,
            duckdb_memory_limit: TableOptions::default().memory_limit,
            max_request_bytes: ServerOptions::default().max_request_bytes,
            max_connections: ServerOptions::default().max_connections,
            idle_timeout_secs: ServerOptions::default().idle_timeout.as_secs(),
            max_running_queries: 8,
            query_timeout_ms: QueryLimits::default().query_timeout.as_millis() as u64,
            sync_timeout_secs: 600,
            max_answer_rows: QueryLimits::default().max_answer_rows,
            max_answer_bytes: QueryLimits::default().max_answer_bytes,
            max_select_items: QueryLimits::default().max_select_items,
            max_in_values: QueryLimits::default().max_in_values,
            answer_cache_bytes: CacheOptions::default().max_bytes,
            answer_cache_entry_bytes: CacheOptions::default().max_entry_bytes,
            rollups: default_specs().iter().map(RollupSpec::name).collect(),
        }
    }

    /// Loads the config file at `path`, or the platform's default one if there is one
    /// (defaults otherwise). An explicit path that does not exist is an error.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let folders = Folders::current();
        let (path, required) = match path {
            Some(p) => (
                std::env::current_dir()
                    .map_err(|e| Error::io(p, e))?
                    .join(p),
                true,
            ),
            None => (folders.config.clone(), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path, &Config::with_folders(&folders)),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::with_folders(&folders))
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Parses config text read from `path` over `defaults`, and checks it.
    pub fn parse(text: &str, path: &Path, defaults: &Config) -> Result<Config> {
        let bad = |reason: String| Error::State {
            path: path.to_path_buf(),
            reason,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = toml::Table::try_from(defaults).map_err(|e| bad(e.to_string()))?;
        for (k, v) in base {
            table.entry(k).or_insert(v);
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.watch, &mut config.state, &mut config.log_dir] {
            *p = resolve(p, dir);
        }
        if let Some(s) = &mut config.socket {
            *s = resolve(s, dir);
        }
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Whether the values make sense (a known zone, known rollups, non-zero limits).
    pub fn check(&self) -> std::result::Result<(), String> {
        Zone::parse(&self.time_zone).map_err(|e| e.to_string())?;
        self.specs()?;
        let limits = [
            ("max_request_bytes", self.max_request_bytes as u64),
            ("max_connections", self.max_connections as u64),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_running_queries", self.max_running_queries as u64),
            ("query_timeout_ms", self.query_timeout_ms),
            ("sync_timeout_secs", self.sync_timeout_secs),
            ("max_answer_rows", self.max_answer_rows),
            ("max_answer_bytes", self.max_answer_bytes),
            ("max_select_items", self.max_select_items as u64),
            ("max_in_values", self.max_in_values as u64),
            ("answer_cache_entry_bytes", self.answer_cache_entry_bytes),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be above 0"));
        }
        Ok(())
    }

    /// The rollup specs named by `rollups`.
    pub fn specs(&self) -> std::result::Result<Vec<RollupSpec>, String> {
        let mut specs = Vec::new();
        for name in &self.rollups {
            let spec = RollupSpec::from_name(name)?;
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    /// The socket: the configured one, or `rollupd.sock` in the state folder.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| crate::daemon::default_socket(&self.state))
    }

    /// The time zone and rollup set.
    pub fn layout(&self) -> Result<Layout> {
        Ok(Layout {
            zone: Zone::parse(&self.time_zone)?,
            specs: self.specs().map_err(Error::invalid)?,
        })
    }

    pub fn engine_options(&self) -> Result<EngineOptions> {
        let Layout { zone, specs } = self.layout()?;
        Ok(EngineOptions {
            zone,
            recursive: self.recursive,
            specs,
            threads: self.fold_threads,
            batch_bytes: self.memory_budget_mb.max(1) << 20,
            chunk_bytes: ((self.memory_budget_mb.max(1) << 20) / 4).clamp(256 << 10, 64 << 20)
                as usize,
            max_bad_rows: self.max_bad_rows,
            table: TableOptions {
                threads: self.duckdb_threads,
                memory_limit: self.duckdb_memory_limit.clone(),
                // Half the budget: DuckDB caches the blocks it writes up to its limit.
                ingest_memory_limit: format!("{}MB", (self.memory_budget_mb / 2).max(1)),
                ..TableOptions::default()
            },
            // A testing hook: steps of the commit path to fail (see `failpoint`).
            failpoints: Failpoints::parse(
                &std::env::var("ROLLUPD_FAILPOINTS").unwrap_or_default(),
            )?,
            ..EngineOptions::default()
        })
    }

    pub fn daemon_options(&self) -> Result<DaemonOptions> {
        Ok(DaemonOptions {
            watch: self.watch.clone(),
            state: self.state.clone(),
            socket: self.socket(),
            engine: EngineOptions {
                line_hold: Duration::from_millis(self.line_hold_ms),
                ..self.engine_options()?
            },
            settle: Duration::from_millis(self.settle_ms),
            rescan: Duration::from_secs(self.rescan_secs.max(1)),
            wait_timeout: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(self.sync_timeout_secs),
            limits: self.query_limits(),
            max_running_queries: self.max_running_queries,
            server: ServerOptions {
                max_request_bytes: self.max_request_bytes,
                max_connections: self.max_connections,
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                ..ServerOptions::default()
            },
            cache: CacheOptions {
                max_bytes: self.answer_cache_bytes,
                max_entry_bytes: self.answer_cache_entry_bytes,
            },
            reload: None,
        })
    }

    /// The caps on each query.
    pub fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            max_answer_rows: self.max_answer_rows,
            max_answer_bytes: self.max_answer_bytes,
            max_select_items: self.max_select_items,
            max_in_values: self.max_in_values,
            query_timeout: Duration::from_millis(self.query_timeout_ms),
            ..QueryLimits::default()
        }
    }

    /// The configuration as TOML, as a config file would hold it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serializes")
    }
}

/// `~/x` → home/x; a relative path → under `dir`.
fn resolve(p: &Path, dir: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if p.is_relative() {
        dir.join(p)
    } else {
        p.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folders() -> Folders {
        Folders::for_home(Path::new("/home/ann"), |_| None, false)
    }

    #[test]
    fn platform_folders() {
        assert_eq!(
            folders(),
            Folders {
                config: "/home/ann/.config/rollupd/config.toml".into(),
                watch: "/home/ann/.local/share/rollupd/inbox".into(),
                state: "/home/ann/.local/share/rollupd/state".into(),
                log_dir: "/home/ann/.local/state/rollupd".into(),
            }
        );
        let xdg = Folders::for_home(
            Path::new("/home/ann"),
            |v| (v == "XDG_DATA_HOME").then(|| PathBuf::from("/data")),
            false,
        );
        assert_eq!(xdg.state, PathBuf::from("/data/rollupd/state"));
        let mac = Folders::for_home(Path::new("/Users/ann"), |_| None, true);
        assert_eq!(
            mac.state,
            PathBuf::from("/Users/ann/Library/Application Support/rollupd/state")
        );
        assert_eq!(
            mac.log_dir,
            PathBuf::from("/Users/ann/Library/Logs/rollupd")
        );
    }

    #[test]
    fn a_file_overrides_defaults_and_paths_resolve_against_it() {
        let defaults = Config::with_folders(&folders());
        let text = "watch = \"csv\"\ntime_zone = \"Europe/Paris\"\nrollups = [\"day_type\"]\n";
        let c = Config::parse(text, Path::new("/etc/rollupd/config.toml"), &defaults).unwrap();
        assert_eq!(c.watch, PathBuf::from("/etc/rollupd/csv"));
        assert_eq!(c.state, defaults.state);
        assert_eq!(c.time_zone, "Europe/Paris");
        assert_eq!(c.specs().unwrap().len(), 1);
        assert_eq!(c.socket(), defaults.state.join("rollupd.sock"));
        let again = Config::parse(&c.to_toml(), Path::new("/x/c.toml"), &defaults).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let defaults = Config::with_folders(&folders());
        let err = |text: &str| {
            Config::parse(text, Path::new("/c.toml"), &defaults)
                .unwrap_err()
                .to_string()
        };
        assert!(err("time_zone = \"Mars/Olympus\"").contains("Mars/Olympus"));
        assert!(err("rollups = [\"fortnight_type\"]").contains("fortnight"));
        assert!(err("colour = \"blue\"").contains("colour"));
        assert!(err("settle_ms = \"soon\"").contains("settle_ms"));
    }
}
