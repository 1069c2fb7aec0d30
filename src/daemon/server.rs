//! The socket server (the protocol is in the README): accepts connections on the daemon's Unix socket, reads
//! newline-delimited requests and answers each with one line (plus payload bytes).
//!
//! Connections are bounded by a semaphore taken after `accept`: a client beyond the limit
//! gets a `busy` error line at once, never a hang. Each connection runs in its own task, so
//! a slow or vanished client never affects the others, and is closed after
//! `idle_timeout` without a request. Only the daemon's own user may connect: the socket is
//! created mode 0600 and every peer's uid is checked. Shutdown is a future passed into
//! [`run`]: the server stops accepting, lets each connection finish the request it is
//! answering, waits (bounded) for them, and removes the socket it created (not a file
//! another process put at the path since).

use std::future::Future;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, Semaphore};

use crate::daemon::cmd::{execute, Gauge, Handle};
use crate::daemon::connection::{Connection, Frame};
use crate::daemon::protocol::{error_response, ErrorKind, Request};
use crate::daemon::stream;
use crate::daemon::subscribe::{self, Ended};
use crate::error::{Error, Result};

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; a client beyond them gets a `busy` error at once.
    pub max_connections: usize,
    /// The longest request line accepted.
    pub max_request_bytes: usize,
    /// How long a connection may go without a request before it is closed.
    pub idle_timeout: Duration,
    /// How long a client may take to read a response before it is dropped.
    pub write_timeout: Duration,
    /// How long shutdown waits for connections to finish their request.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 128,
            max_request_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The daemon's bound socket: the listener, its path, and the identity (device, inode)
/// of the socket file, so shutdown removes that file only.
pub struct Bound {
    listener: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

impl Bound {
    /// Removes the socket file if it is still the one this daemon created.
    fn remove(self) {
        drop(self.listener);
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("removing the socket {}: {e}", self.path.display());
                }
            }
            _ => tracing::warn!(
                "the socket {} was replaced by another file; leaving it",
                self.path.display()
            ),
        }
    }
}

/// Binds the socket at `path`, mode 0600. A socket file left by a dead daemon is replaced;
/// one a live daemon answers on is an error, and so is any other kind of file (which is
/// left alone). The socket is bound in a new private folder (mode 0700, random name) and
/// renamed into place, so it never exists with a wider mode or under a name another user
/// could take first.
pub fn bind(path: &Path) -> Result<Bound> {
    check_socket_path(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let private = private_dir(dir)?;
    let tmp = private.join("s");
    let bound = (|| -> std::io::Result<Bound> {
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        let meta = std::fs::symlink_metadata(path)?;
        listener.set_nonblocking(true)?;
        Ok(Bound {
            listener: UnixListener::from_std(listener)?,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound.map_err(|e| Error::io(path, e))
}

/// What is at the socket path: nothing or a dead daemon's socket (fine), a live daemon's
/// socket or another kind of file (an error).
fn check_socket_path(path: &Path) -> Result<()> {
    let refuse = |kind: IoKind, msg: &str| Err(Error::io(path, std::io::Error::new(kind, msg)));
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == IoKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if !m.file_type().is_socket() => refuse(
            IoKind::AlreadyExists,
            "exists and is not a socket; rollupd leaves it alone: remove it or choose \
             another socket path",
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => refuse(
                IoKind::AddrInUse,
                "another rollupd daemon is listening on this socket",
            ),
            Err(e) if e.kind() == IoKind::ConnectionRefused => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        },
    }
}

/// A new folder in `dir` with a random name, mode 0700.
fn private_dir(dir: &Path) -> Result<PathBuf> {
    let mut last = None;
    for _ in 0..16 {
        let p = dir.join(format!(".rollupd-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == IoKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Err(Error::io(dir, last.expect("tried")))
}

/// Serves the bound socket until `shutdown` completes, then removes the socket file (if it
/// is still the one bound).
pub async fn run(bound: Bound, handle: Handle, opts: ServerOptions, shutdown: impl Future) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let accept = async {
        loop {
            let stream = match bound.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                refuse(&stream, &handle, &opts);
                continue;
            };
            let (handle, opts) = (handle.clone(), opts.clone());
            let mut stop = notify_shutdown.subscribe();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let _open = Gauge::up(&handle.stats.connections_open);
                let conn = serve(stream, &handle, &opts, &mut stop).await;
                // The slot is free before the client can see the connection close.
                drop(permit);
                drop(conn);
                drop(done);
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown => tracing::info!("shutting down: no new connections"),
    }
    bound.remove();
    drop(notify_shutdown);
    drop(done_tx);
    if tokio::time::timeout(opts.drain_timeout, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still busy after the drain timeout; closing them");
    }
}

/// Answers a connection beyond `max_connections` with a `busy` line, without waiting
/// (a new socket's buffer always has room for it), and closes it.
fn refuse(stream: &UnixStream, handle: &Handle, opts: &ServerOptions) {
    handle
        .stats
        .connections_refused
        .fetch_add(1, Ordering::Relaxed);
    let msg = format!(
        "too many connections: {} are open (max_connections); try again later",
        opts.max_connections
    );
    let line = error_response(ErrorKind::Busy, &msg) + "\n";
    if let Err(e) = stream.try_write(line.as_bytes()) {
        tracing::debug!("refusing a connection: {e}");
    }
}

/// Serves one connection until the client leaves, misbehaves, stays idle, or shutdown;
/// gives the connection back for the caller to close.
async fn serve(
    stream: UnixStream,
    handle: &Handle,
    opts: &ServerOptions,
    stop: &mut broadcast::Receiver<()>,
) -> Connection {
    let peer_ok = stream
        .peer_cred()
        // SAFETY: geteuid has no preconditions.
        .map(|c| c.uid() == unsafe { libc::geteuid() })
        .unwrap_or(false);
    let mut conn = Connection::new(stream, opts.max_request_bytes, opts.write_timeout);
    if !peer_ok {
        let line = error_response(
            ErrorKind::BadRequest,
            "only the daemon's own user may connect",
        );
        let _ = conn.respond(&line, &[]).await;
        return conn;
    }
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(opts.idle_timeout, conn.read_request()) => match f {
                Ok(f) => f,
                Err(_) => {
                    handle.stats.connections_idle_closed.fetch_add(1, Ordering::Relaxed);
                    return conn;
                }
            },
            _ = stop.recv() => return conn,
        };
        let (line, payload) = match frame {
            Ok(Frame::Line(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Frame::Line(line)) => match Request::parse(&line) {
                Ok(Request::Subscribe { query, format }) => {
                    match subscribe::serve(&mut conn, handle, query, format, stop).await {
                        Ended::Unsubscribed => continue,
                        Ended::Closed => return conn,
                    }
                }
                Ok(
                    request @ Request::Query {
                        stream: Some(true), ..
                    },
                ) => match stream::serve(&mut conn, handle, request).await {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::debug!("client dropped: {e}");
                        return conn;
                    }
                },
                Ok(request) => execute(request, handle, conn.hung_up()).await,
                Err(msg) => (error_response(ErrorKind::BadRequest, &msg), Vec::new()),
            },
            Ok(Frame::TooLong) => {
                let msg = format!(
                    "request line longer than {} bytes (max_request_bytes); closing the \
                     connection",
                    opts.max_request_bytes
                );
                let _ = conn
                    .respond(&error_response(ErrorKind::TooLarge, &msg), &[])
                    .await;
                return conn;
            }
            Ok(Frame::Eof) => return conn,
            Err(e) => {
                tracing::debug!("reading a request: {e}");
                return conn;
            }
        };
        if let Err(e) = conn.respond(&line, &payload).await {
            tracing::debug!("client dropped: {e}");
            return conn;
        }
    }
}
