//! `rollupd run`: the daemon. Opens the engine on the state folder (taking its lock),
//! binds the socket, starts the ingest loop and serves queries until SIGTERM or SIGINT.
//!
//! Shutdown stops accepting connections, lets in-flight requests finish (bounded), stops
//! ingest before its next file (what it committed is published; the rest is redone from
//! the files on the next start), removes the socket and returns.
//!
//! Shutdown has a deadline ([`STOP_DEADLINE`]): past it the process exits non-zero at
//! once (sled's flush on drop was seen never to return with the state folder removed).
//!
//! Crash, don't limp: a panic in the ingest loop, the state folder removed under it, or
//! the server task ending, ends the process with an error (non-zero status) at once,
//! without waiting on anything, so the service manager restarts it; the state is as
//! after a `kill -9`, which recovery repairs.

pub mod cache;
pub mod client;
pub mod cmd;
pub mod connection;
pub mod ingest;
pub mod limits;
pub mod mapped;
pub mod memory;
pub mod protocol;
pub mod server;
pub mod stream;
pub mod subscribe;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::cache::{AnswerCache, CacheOptions};
use crate::daemon::cmd::{Handle, ServeStats};
use crate::daemon::ingest::{Ingest, IngestOptions};
use crate::daemon::limits::QueryLimits;
use crate::daemon::server::ServerOptions;
use crate::engine::{Engine, EngineOptions, Layout};
use crate::error::{Error, Result};
use crate::query::querylog::QueryLog;

/// Everything the daemon needs to run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub watch: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub engine: EngineOptions,
    pub settle: Duration,
    pub rescan: Duration,
    /// How long a query waits for its `min_generation` unless it says otherwise.
    pub wait_timeout: Duration,
    /// How long a `sync` waits unless it says otherwise.
    pub sync_timeout: Duration,
    /// Caps on each query.
    pub limits: QueryLimits,
    /// Queries run at once; more wait for a slot.
    pub max_running_queries: usize,
    pub server: ServerOptions,
    /// The answer cache's bounds.
    pub cache: CacheOptions,
    /// How `reload` (and SIGHUP) reads the layout from the config again.
    pub reload: Option<Reloader>,
}

/// Reads the time zone and rollup set from the daemon's configuration again (the config
/// file and the command line it was started with), for `reload`.
#[derive(Clone)]
pub struct Reloader(Arc<dyn Fn() -> Result<Layout> + Send + Sync>);

impl Reloader {
    pub fn new(read: impl Fn() -> Result<Layout> + Send + Sync + 'static) -> Reloader {
        Reloader(Arc::new(read))
    }

    /// The layout the configuration names now.
    pub fn layout(&self) -> Result<Layout> {
        (self.0)()
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

/// The socket of a state folder unless configured otherwise.
pub fn default_socket(state: &std::path::Path) -> PathBuf {
    state.join("rollupd.sock")
}

/// How long shutdown may take after a termination signal before the process ends without
/// finishing it (a flush that never returns, with the state folder gone, must not keep
/// the daemon from stopping).
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the daemon in the foreground until a termination signal.
pub fn run(opts: DaemonOptions) -> Result<()> {
    let mut daemon = Daemon::start(opts)?;
    if let Err(e) = daemon.wait_for_signal() {
        daemon.abandon();
        return Err(e);
    }
    stop_within(STOP_DEADLINE);
    daemon.stop();
    Ok(())
}

/// Ends the process with an error if it is still running `deadline` from now.
fn stop_within(deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            eprintln!(
                "rollupd: shutdown did not finish within {} s; exiting without it \
                 (the next start repairs the state)",
                deadline.as_secs()
            );
            // SAFETY: ends the process at once, running no destructors or exit handlers
            // (one of them is what hangs).
            unsafe { libc::_exit(1) };
        });
    if let Err(e) = spawned {
        tracing::warn!("no shutdown deadline: {e}");
    }
}

/// A running daemon: its engine, ingest loop and socket server.
pub struct Daemon {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    ingest: Ingest,
    handle: Handle,
    server: tokio::task::JoinHandle<()>,
    stop_server: tokio::sync::oneshot::Sender<()>,
    socket: PathBuf,
}

impl Daemon {
    /// Opens the engine (taking the state folder's lock), binds the socket and starts the
    /// ingest loop and the server.
    pub fn start(opts: DaemonOptions) -> Result<Daemon> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the async runtime: {e}")))?;
        let engine = Arc::new(Engine::open(&opts.state, opts.engine.clone())?);
        // Absolute paths from here on, for logs and status.
        let state = engine
            .state()
            .canonicalize()
            .map_err(|e| Error::io(&opts.state, e))?;
        let bound = {
            let _context = runtime.enter();
            server::bind(&opts.socket)?
        };
        let ingest = Ingest::start(
            engine.clone(),
            IngestOptions {
                watch: opts.watch.clone(),
                settle: opts.settle,
                rescan: opts.rescan,
            },
        )?;
        let watch = ingest.watch().to_path_buf();
        let handle = Handle {
            engine: engine.clone(),
            ingest: ingest.handle(),
            watch: watch.clone(),
            wait_timeout: opts.wait_timeout,
            sync_timeout: opts.sync_timeout,
            limits: opts.limits.clone(),
            query_slots: Arc::new(tokio::sync::Semaphore::new(opts.max_running_queries.max(1))),
            stats: Arc::new(ServeStats::default()),
            log: Arc::new(QueryLog::open(&state)),
            cache: Arc::new(AnswerCache::new(opts.cache)),
            reload: opts.reload.clone(),
        };
        runtime.spawn(save_log_every(handle.log.clone(), LOG_SAVE_INTERVAL));
        runtime.spawn(reload_on_hangup(handle.clone()));
        tracing::info!(
            watch = %watch.display(),
            state = %state.display(),
            socket = %opts.socket.display(),
            generation = engine.snapshot().generation(),
            "rollupd is running"
        );
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(server::run(
            bound,
            handle.clone(),
            opts.server.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Daemon {
            runtime,
            engine,
            ingest,
            handle,
            server,
            stop_server,
            socket: opts.socket,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The shared state the server answers from.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Blocks until SIGTERM or SIGINT (`Ok`), or until the ingest loop panics or the
    /// server task ends (an error: the daemon cannot go on; see [`Daemon::abandon`]).
    pub fn wait_for_signal(&mut self) -> Result<()> {
        let died = self.ingest.died();
        let server = &mut self.server;
        self.runtime.block_on(async {
            let signal = shutdown_signal()?;
            let died = async {
                match died {
                    Some(rx) => rx.await.ok(),
                    None => None,
                }
            };
            tokio::select! {
                _ = signal => Ok(()),
                Some(panic) = died => Err(Error::Internal(panic)),
                ended = server => Err(Error::Internal(match ended {
                    Err(e) if e.is_panic() => "the socket server panicked".to_string(),
                    _ => "the socket server stopped".to_string(),
                })),
            }
        })
    }

    /// Gives up after a fatal error: removes the socket and leaves every thread and
    /// destructor alone (one may hold a poisoned lock or never return), for the process
    /// to exit at once.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.socket);
        std::mem::forget(self);
    }

    /// Stops accepting connections, lets requests in flight finish (bounded), stops
    /// ingest before its next file, and removes the socket.
    pub fn stop(self) {
        let _ = self.stop_server.send(());
        let _ = self.runtime.block_on(self.server);
        if let Err(e) = self.handle.log.save() {
            tracing::warn!("saving the query log: {e}");
        }
        self.ingest.stop();
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        drop(self.engine);
        tracing::info!("rollupd stopped");
    }
}

/// How often the query log is written when it changed.
const LOG_SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// Writes the query log every `interval` when it changed.
async fn save_log_every(log: Arc<QueryLog>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.save()).await {
            Ok(Err(e)) => tracing::warn!("saving the query log: {e}"),
            Err(e) => tracing::warn!("saving the query log: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// Reloads the layout on each SIGHUP (as `reload` does), logging the outcome.
async fn reload_on_hangup(handle: Handle) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => return tracing::warn!("SIGHUP does not reload: {e}"),
    };
    while hangups.recv().await.is_some() {
        match cmd::reload(&handle).await {
            Ok(r) => tracing::info!(change = %r.change, generation = r.generation, "reloaded"),
            Err(e) => tracing::error!("reload: {e}"),
        }
    }
}

/// A future that completes on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |e| Error::Internal(format!("installing signal handlers: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
