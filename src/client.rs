//! A blocking client of the daemon's socket, for the CLI and for scripts.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// One connection to a daemon.
pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// A response: its JSON line and the payload bytes that followed it (csv, arrow).
#[derive(Debug)]
pub struct Reply {
    pub line: Json,
    pub payload: Vec<u8>,
}

impl Reply {
    /// The error of an `"ok": false` reply, as (kind, message).
    pub fn error(&self) -> Option<(String, String)> {
        if self.line["ok"].as_bool() == Some(true) {
            return None;
        }
        let e = &self.line["error"];
        Some((
            e["kind"].as_str().unwrap_or("internal").to_string(),
            e["message"].as_str().unwrap_or("no message").to_string(),
        ))
    }
}

impl Client {
    /// Connects to the daemon listening on `socket`; the error says when none is.
    pub fn connect(socket: &Path) -> Result<Client> {
        let stream = UnixStream::connect(socket).map_err(|e| no_daemon(socket, e))?;
        let writer = stream.try_clone().map_err(|e| Error::io(socket, e))?;
        Ok(Client {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and reads its reply.
    pub fn request(&mut self, request: &Json) -> Result<Reply> {
        let socket = &self.socket;
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(socket, e))?;
        let mut response = String::new();
        if self
            .reader
            .read_line(&mut response)
            .map_err(|e| Error::io(socket, e))?
            == 0
        {
            return Err(Error::Internal(
                "the daemon closed the connection without answering".into(),
            ));
        }
        let line: Json = serde_json::from_str(&response)
            .map_err(|e| Error::Internal(format!("the daemon's reply is not JSON: {e}")))?;
        let mut payload = Vec::new();
        if let Some(n) = line["bytes"].as_u64() {
            payload.resize(n as usize, 0);
            self.reader
                .read_exact(&mut payload)
                .map_err(|e| Error::io(socket, e))?;
        }
        Ok(Reply { line, payload })
    }
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
