//! One client connection of the socket server: newline-delimited requests in, each capped
//! in size, and response lines (plus payload bytes) out, each write bounded in time so a
//! client that stops reading cannot hold the connection's task forever.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// What reading a request produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One request line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the cap; the rest of it was not read.
    TooLong,
    /// The client closed the connection.
    Eof,
}

pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    /// The part of a request line read so far (kept here so a read can be cancelled).
    partial: Vec<u8>,
    max_line: usize,
    write_timeout: Duration,
}

impl Connection {
    pub fn new(stream: UnixStream, max_line: usize, write_timeout: Duration) -> Connection {
        let (r, w) = stream.into_split();
        Connection {
            reader: BufReader::new(r),
            writer: BufWriter::new(w),
            partial: Vec::new(),
            max_line,
            write_timeout,
        }
    }

    /// Reads the next request line, reading at most `max_line` bytes of it.
    /// Cancel-safe: a read dropped midway (a subscription waiting for a generation or a
    /// request) loses nothing; the next one goes on from there.
    pub async fn read_request(&mut self) -> io::Result<Frame> {
        loop {
            let buf = self.reader.fill_buf().await?;
            let line = &mut self.partial;
            if buf.is_empty() {
                // A last request without its newline still counts.
                return Ok(if line.is_empty() {
                    Frame::Eof
                } else {
                    Frame::Line(std::mem::take(line))
                });
            }
            let (take, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if line.len() + take > self.max_line {
                line.clear();
                return Ok(Frame::TooLong);
            }
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take + done as usize);
            if done {
                return Ok(Frame::Line(std::mem::take(line)));
            }
        }
    }

    /// Completes once the client has hung up (closed its end entirely): at once when its
    /// close arrives (the socket turns readable), otherwise checked every 50 ms (a
    /// client's next request pending also makes it readable). A client that only shut
    /// down its writing half still waits for its answer and does not count.
    pub async fn hung_up(&self) {
        hung_up(self.reader.get_ref().as_ref()).await
    }

    /// The connection's two sides apart, for a reply written in pieces while its query
    /// runs: a future that completes when the client hangs up (as `hung_up`), and the
    /// writing side.
    pub fn split(&mut self) -> (impl Future<Output = ()> + '_, Out<'_>) {
        let out = Out {
            writer: &mut self.writer,
            timeout: self.write_timeout,
        };
        (hung_up(self.reader.get_ref().as_ref()), out)
    }

    /// Writes a response line and its payload, failing with `TimedOut` if the client does
    /// not take them within the write timeout.
    pub async fn respond(&mut self, line: &str, payload: &[u8]) -> io::Result<()> {
        let (_, mut out) = self.split();
        out.send(&[line.as_bytes(), b"\n", payload]).await
    }
}

/// The writing side of a connection.
pub struct Out<'a> {
    writer: &'a mut BufWriter<OwnedWriteHalf>,
    timeout: Duration,
}

impl Out<'_> {
    /// Writes `parts` and flushes them, failing with `TimedOut` if the client does not
    /// take them within the write timeout.
    pub async fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let write = async {
            for part in parts {
                self.writer.write_all(part).await?;
            }
            self.writer.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its response",
            )),
        }
    }
}

/// Completes once the client at the other end of `stream` has hung up (see
/// `Connection::hung_up`).
async fn hung_up(stream: &UnixStream) {
    let fd = stream.as_raw_fd();
    let gone = || {
        let mut poll = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a descriptor this connection owns, no wait.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0
    };
    loop {
        if gone() {
            return;
        }
        let wait = Duration::from_millis(50);
        if let Ok(Ok(())) = tokio::time::timeout(wait, stream.readable()).await {
            if gone() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}
