//! A blocking client of the daemon's socket, for the CLI and for scripts.
//!
//! Before sending anything the client checks that the socket is served by a process of
//! its own user (the kernel's peer credentials), so a socket another user put at the path
//! never sees a query. Connecting and each reply are bounded in time, and a reply in size:
//! a line or payload over `max_reply_bytes` is an error, and a payload is read as it
//! arrives, never allocated from the size the reply claims. A streamed reply (chunks
//! after the line, then an end line) is read whole into the same `Reply`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::daemon::protocol::{ErrorBody, Format, Head, Request};
use crate::error::{Error, Result};

/// How long and how much the client waits for and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// How long a reply may take (`None`: as long as it takes).
    pub read_timeout: Option<Duration>,
    /// The largest reply line, and the largest payload, read.
    pub max_reply_bytes: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Some(Duration::from_secs(120)),
            max_reply_bytes: 1 << 30,
        }
    }
}

/// One connection to a daemon.
pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    opts: ClientOptions,
}

/// A reply: its JSON line and the payload bytes that followed it (csv, arrow).
#[derive(Debug)]
pub struct Reply {
    pub line: Json,
    pub payload: Vec<u8>,
}

impl Reply {
    /// The error of an `"ok": false` reply.
    pub fn error(&self) -> Option<ErrorBody> {
        head(&self.line)?.error
    }

    /// The reply as `T`, or its error as `Error::Remote`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        if let Some(ErrorBody { kind, message }) = self.error() {
            return Err(Error::Remote { kind, message });
        }
        T::deserialize(&self.line).map_err(|e| not_rollupd(&format!("an unexpected reply: {e}")))
    }
}

/// The parts of a reply line every reply has; `None` if it is not a reply.
fn head(line: &Json) -> Option<Head> {
    serde::Deserialize::deserialize(line).ok()
}

impl Client {
    /// Connects to the daemon listening on `socket`; the error says when none is.
    pub fn connect(socket: &Path) -> Result<Client> {
        Client::connect_with(socket, ClientOptions::default())
    }

    /// Connects with the given timeouts and caps, and checks who serves the socket.
    pub fn connect_with(socket: &Path, opts: ClientOptions) -> Result<Client> {
        let stream = connect_within(socket, opts.connect_timeout)?;
        check_server_uid(socket, &stream)?;
        let io = |e| Error::io(socket, e);
        stream.set_read_timeout(opts.read_timeout).map_err(io)?;
        stream.set_write_timeout(opts.read_timeout).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            opts,
        })
    }

    /// Changes how long each later reply may take.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.opts.read_timeout = timeout;
        self.writer
            .set_read_timeout(timeout)
            .map_err(|e| Error::io(&self.socket, e))
    }

    /// Sends one request and reads its reply. A streamed reply is read whole: its chunks
    /// are the payload, except for a json query, whose rows go into the line as `rows`
    /// (as in a reply that is not streamed).
    pub fn send(&mut self, request: &Request) -> Result<Reply> {
        let mut reply = self.exchange(request.to_line())?;
        let json_rows = matches!(
            request,
            Request::Query {
                format: Format::Json,
                stream: Some(true),
                ..
            }
        );
        if json_rows && reply.error().is_none() {
            let rows: Json = serde_json::from_slice(&reply.payload)
                .map_err(|e| not_rollupd(&format!("rows that are not JSON ({e})")))?;
            if let Json::Object(fields) = &mut reply.line {
                fields.remove("stream");
                fields.insert("rows".into(), rows);
            }
            reply.payload = Vec::new();
        }
        Ok(reply)
    }

    /// Sends one request and reads its reply as `T` (an error reply is `Error::Remote`).
    pub fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T> {
        self.send(request)?.parse()
    }

    /// Sends a request given as JSON (which may be malformed on purpose) and reads its
    /// reply.
    pub fn request(&mut self, request: &Json) -> Result<Reply> {
        self.exchange(request.to_string())
    }

    fn exchange(&mut self, mut line: String) -> Result<Reply> {
        line.push('\n');
        // A daemon that refuses the connection (busy) answers and closes before reading;
        // its answer is still there to read.
        let sent = self.writer.write_all(line.as_bytes());
        self.read_reply(sent)
    }

    /// Reads the next reply without sending anything: a subscription's later answers.
    pub fn next_reply(&mut self) -> Result<Reply> {
        self.read_reply(Ok(()))
    }

    /// Reads one reply; `sent` is how writing its request went (reported only when no
    /// reply comes).
    fn read_reply(&mut self, sent: std::io::Result<()>) -> Result<Reply> {
        let cap = self.opts.max_reply_bytes;
        let line = match self.read_line()? {
            Some(line) => line,
            None => {
                sent.map_err(|e| self.io_error(e))?;
                return Err(Error::Internal(
                    "the daemon closed the connection without answering".into(),
                ));
            }
        };
        let head = head(&line).ok_or_else(|| not_rollupd("a reply without \"ok\""))?;
        let mut payload = Vec::new();
        if let Some(n) = head.bytes {
            if n > cap {
                return Err(not_rollupd(&format!(
                    "a payload of {n} bytes announced, over the client's cap of {cap}"
                )));
            }
            self.read_exactly(n, &mut payload)?;
        }
        if head.stream {
            return self.read_chunks(line, payload);
        }
        Ok(Reply { line, payload })
    }

    /// The chunks of a streamed reply and its end line: the reply line with the chunks
    /// as payload, or the end line when it is an error.
    fn read_chunks(&mut self, line: Json, mut payload: Vec<u8>) -> Result<Reply> {
        let cap = self.opts.max_reply_bytes;
        loop {
            let mut size = Vec::new();
            (&mut self.reader)
                .take(CHUNK_SIZE_LINE)
                .read_until(b'\n', &mut size)
                .map_err(|e| self.io_error(e))?;
            let n: u64 = std::str::from_utf8(&size)
                .ok()
                .and_then(|s| s.strip_suffix('\n')?.parse().ok())
                .ok_or_else(|| not_rollupd("a chunk without its size"))?;
            if n == 0 {
                break;
            }
            if payload.len() as u64 + n > cap {
                return Err(not_rollupd(&format!(
                    "chunks of more than {cap} bytes, the client's cap"
                )));
            }
            self.read_exactly(n, &mut payload)?;
        }
        let end = self
            .read_line()?
            .ok_or_else(|| not_rollupd("a streamed reply without its end line"))?;
        let end_head = head(&end).ok_or_else(|| not_rollupd("an end line without \"ok\""))?;
        Ok(match end_head.ok {
            true => Reply { line, payload },
            false => Reply {
                line: end,
                payload: Vec::new(),
            },
        })
    }

    /// Reads one JSON line (`None` at the end of the connection).
    fn read_line(&mut self) -> Result<Option<Json>> {
        let cap = self.opts.max_reply_bytes;
        let mut text = Vec::new();
        (&mut self.reader)
            .take(cap.saturating_add(1))
            .read_until(b'\n', &mut text)
            .map_err(|e| self.io_error(e))?;
        if text.is_empty() {
            return Ok(None);
        }
        if text.last() != Some(&b'\n') {
            return Err(if text.len() as u64 > cap {
                not_rollupd(&format!("a reply line longer than {cap} bytes"))
            } else {
                not_rollupd("a reply cut off before its end")
            });
        }
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| not_rollupd(&format!("a reply that is not JSON ({e})")))
    }

    /// Appends the next `n` bytes to `buf` (read as they arrive).
    fn read_exactly(&mut self, n: u64, buf: &mut Vec<u8>) -> Result<()> {
        let before = buf.len();
        (&mut self.reader)
            .take(n)
            .read_to_end(buf)
            .map_err(|e| self.io_error(e))?;
        if (buf.len() - before) as u64 != n {
            return Err(not_rollupd("a payload cut off before its end"));
        }
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                Error::Timeout(format!(
                    "{}: the daemon did not answer in time",
                    self.socket.display()
                ))
            }
            _ => Error::io(&self.socket, e),
        }
    }
}

/// The longest line a chunk's size comes on.
const CHUNK_SIZE_LINE: u64 = 24;

/// Connects, giving up after `timeout` (a daemon that stopped accepting leaves a connect
/// waiting; the attempt is then left to finish on its own thread).
fn connect_within(socket: &Path, timeout: Duration) -> Result<UnixStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = socket.to_path_buf();
    std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(&path));
        })
        .map_err(|e| Error::io(socket, e))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(no_daemon(socket, e)),
        Err(_) => Err(Error::Timeout(format!(
            "{}: the daemon did not accept the connection within {} ms",
            socket.display(),
            timeout.as_millis()
        ))),
    }
}

/// Refuses a socket served by a process of another user.
fn check_server_uid(socket: &Path, stream: &UnixStream) -> Result<()> {
    let uid = peer_uid(stream).map_err(|e| Error::io(socket, e))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if uid != me {
        return Err(Error::io(
            socket,
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "served by a process of uid {uid}, not of this user (uid {me}); \
                     refusing to send it anything"
                ),
            ),
        ));
    }
    Ok(())
}

/// The uid of the process at the other end of a connected socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid descriptor, and a buffer of the size passed for SO_PEERCRED.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The uid of the process at the other end of a connected socket.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: a valid descriptor and two out-parameters.
    if unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(uid)
}

fn not_rollupd(what: &str) -> Error {
    Error::Internal(format!(
        "the socket sent {what}; is a rollupd daemon listening there?"
    ))
}

fn no_daemon(socket: &Path, e: std::io::Error) -> Error {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "no rollupd daemon is listening there; start one with `rollupd run`".to_string()
        }
        _ => format!("cannot connect: {e}"),
    };
    Error::io(socket, std::io::Error::other(reason))
}
