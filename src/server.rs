//! The socket server (the protocol is in the README): accepts connections on the daemon's Unix socket, reads
//! newline-delimited requests and answers each with one line (plus payload bytes).
//!
//! Connections are bounded by a semaphore; each runs in its own task, so a slow or
//! vanished client never affects the others. Only the daemon's own user may connect: the
//! socket is created mode 0600 and every peer's uid is checked. Shutdown is a future passed
//! into [`run`]: the server stops accepting, lets each connection finish the request it is
//! answering, waits (bounded) for them, and removes the socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, Semaphore};

use crate::cmd::{execute, Handle};
use crate::connection::{Connection, Frame};
use crate::error::{Error, Result};
use crate::protocol::{error_response, Request};

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// The longest request line accepted.
    pub max_request_bytes: usize,
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
            write_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Binds the socket at `path`, mode 0600. A socket file left by a dead daemon is replaced;
/// one a live daemon answers on is an error.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::io(
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another rollupd daemon is listening on this socket",
                    ),
                ))
            }
            Err(_) => std::fs::remove_file(path).map_err(|e| Error::io(path, e))?,
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // Bind under a temporary name and rename, so the socket never exists with a wider mode.
    let tmp = temp_name(path);
    let _ = std::fs::remove_file(&tmp);
    let std_listener =
        std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let publish = || -> std::io::Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        std_listener.set_nonblocking(true)
    };
    if let Err(e) = publish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    UnixListener::from_std(std_listener).map_err(|e| Error::io(path, e))
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Serves `listener` until `shutdown` completes, then removes the socket at `path`.
pub async fn run(
    listener: UnixListener,
    path: PathBuf,
    handle: Handle,
    opts: ServerOptions,
    shutdown: impl Future,
) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let accept = async {
        loop {
            let permit = limit.clone().acquire_owned().await.expect("semaphore open");
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (handle, opts) = (handle.clone(), opts.clone());
            let mut stop = notify_shutdown.subscribe();
            let done = done_tx.clone();
            tokio::spawn(async move {
                serve(stream, &handle, &opts, &mut stop).await;
                drop(permit);
                drop(done);
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown => tracing::info!("shutting down: no new connections"),
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    drop(notify_shutdown);
    drop(done_tx);
    if tokio::time::timeout(opts.drain_timeout, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still busy after the drain timeout; closing them");
    }
}

/// Serves one connection until the client leaves, misbehaves, or shutdown.
async fn serve(
    stream: UnixStream,
    handle: &Handle,
    opts: &ServerOptions,
    stop: &mut broadcast::Receiver<()>,
) {
    let peer_ok = stream
        .peer_cred()
        // SAFETY: geteuid has no preconditions.
        .map(|c| c.uid() == unsafe { libc::geteuid() })
        .unwrap_or(false);
    let mut conn = Connection::new(stream, opts.max_request_bytes, opts.write_timeout);
    if !peer_ok {
        let line = error_response("bad_request", "only the daemon's own user may connect");
        let _ = conn.respond(&line, &[]).await;
        return;
    }
    loop {
        let frame = tokio::select! {
            f = conn.read_request() => f,
            _ = stop.recv() => return,
        };
        let (line, payload) = match frame {
            Ok(Frame::Line(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Frame::Line(line)) => match Request::parse(&line) {
                Ok(request) => execute(request, handle).await,
                Err(msg) => (error_response("bad_request", &msg), Vec::new()),
            },
            Ok(Frame::TooLong) => {
                let msg = format!(
                    "request line longer than {} bytes; closing the connection",
                    opts.max_request_bytes
                );
                let _ = conn
                    .respond(&error_response("bad_request", &msg), &[])
                    .await;
                return;
            }
            Ok(Frame::Eof) => return,
            Err(e) => {
                tracing::debug!("reading a request: {e}");
                return;
            }
        };
        if let Err(e) = conn.respond(&line, &payload).await {
            tracing::debug!("client dropped: {e}");
            return;
        }
    }
}
