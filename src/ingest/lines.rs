//! Reading a data file in bounded chunks of whole lines, so that a file of any size
//! folds in the memory of one chunk, and hashing exactly the bytes taken (the file's
//! fingerprint covers what was folded, not what was read ahead).
//!
//! A line longer than `fold::MAX_LINE` fails the read before more of it is buffered.

use std::io::Read;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::ingest::fold::{first_long_line, MAX_LINE};

/// Whole lines of a file, a chunk at a time.
pub struct Lines<R> {
    path: PathBuf,
    src: R,
    /// Bytes read and not taken yet.
    buf: Vec<u8>,
    /// About how many bytes a chunk holds.
    chunk: usize,
    eof: bool,
    hasher: Xxh3,
    /// Bytes taken (hashed) so far.
    taken: u64,
    /// Lines taken so far.
    lines: usize,
}

/// How much `Lines::skip_to` reads at a time.
const SKIP_STEP: usize = 1 << 20;

/// Whole lines taken from the file, and the file line number of the first.
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub first_line: usize,
}

impl<R: Read> Lines<R> {
    pub fn new(path: &Path, src: R, chunk: usize) -> Lines<R> {
        Lines {
            path: path.to_path_buf(),
            src,
            buf: Vec::new(),
            chunk: chunk.max(1),
            eof: false,
            hasher: Xxh3::new(),
            taken: 0,
            lines: 0,
        }
    }

    /// Reads until `buf` holds `want` bytes and a newline past `from`, or to the end.
    fn fill(&mut self, from: usize, want: usize) -> Result<()> {
        while !self.eof
            && (self.buf.len() < want
                || memchr::memchr(b'\n', &self.buf[from.min(self.buf.len())..]).is_none())
        {
            let at = self.buf.len();
            let step = match want.saturating_sub(at) {
                0 => 4 << 10,
                missing => missing.clamp(64, 1 << 20),
            };
            // Read into spare room (not zeroed first: the read writes every byte kept).
            self.buf.reserve(step);
            let n = (&mut self.src)
                .take(step as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| Error::io(&self.path, e))?;
            self.eof = n == 0;
            if self.buf.len() > MAX_LINE + from && !self.buf[from..].contains(&b'\n') {
                return Err(self.too_long(self.lines + 1));
            }
        }
        Ok(())
    }

    fn too_long(&self, line: usize) -> Error {
        Error::BadFile {
            path: self.path.clone(),
            reason: format!("line {line}: line longer than {MAX_LINE} bytes"),
        }
    }

    /// Takes the first `n` buffered bytes, counting and hashing them.
    fn take(&mut self, n: usize) -> Vec<u8> {
        self.count(n);
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// Counts and hashes the first `n` buffered bytes as taken.
    fn count(&mut self, n: usize) {
        let bytes = &self.buf[..n];
        self.hasher.update(bytes);
        self.taken += n as u64;
        self.lines += memchr::memchr_iter(b'\n', bytes).count();
    }

    /// The first line, with its newline; None when the file has no whole line yet.
    pub fn header(&mut self) -> Result<Option<Vec<u8>>> {
        self.fill(0, 0)?;
        Ok(memchr::memchr(b'\n', &self.buf).map(|i| self.take(i + 1)))
    }

    /// Takes the bytes up to offset `to` (the part of the file folded before).
    /// It reads a megabyte at a time into the same buffer: an append to a large file
    /// hashes all of it again, and reading it a few kilobytes at a time took most of the
    /// append (~60 ms of a 10,000-row append to a 42 MB file).
    pub fn skip_to(&mut self, to: u64) -> Result<()> {
        while self.taken < to {
            let left = usize::try_from(to - self.taken).unwrap_or(usize::MAX);
            if self.buf.is_empty() {
                self.fill(0, left.min(SKIP_STEP))?;
            }
            let n = left.min(self.buf.len());
            if n == 0 {
                return Err(Error::Changed(self.path.clone()));
            }
            self.count(n);
            self.buf.drain(..n);
        }
        Ok(())
    }

    /// The next chunk of whole lines (about `chunk` bytes; more for one long line), or
    /// None when only an unterminated last line, or nothing, is left.
    pub fn next_lines(&mut self) -> Result<Option<Chunk>> {
        self.fill(0, self.chunk)?;
        let Some(end) = memchr::memrchr(b'\n', &self.buf) else {
            return Ok(None);
        };
        let first_line = self.lines + 1;
        if let Some(at) = first_long_line(&self.buf[..end + 1]) {
            let before = memchr::memchr_iter(b'\n', &self.buf[..at]).count();
            return Err(self.too_long(first_line + before));
        }
        Ok(Some(Chunk {
            bytes: self.take(end + 1),
            first_line,
        }))
    }

    /// The unterminated last line, taken; empty when there is none. Only at the end.
    pub fn rest(&mut self) -> Result<Chunk> {
        self.fill(self.buf.len(), usize::MAX)?;
        if self.buf.len() > MAX_LINE {
            return Err(self.too_long(self.lines + 1));
        }
        let first_line = self.lines + 1;
        let n = self.buf.len();
        Ok(Chunk {
            bytes: self.take(n),
            first_line,
        })
    }

    /// Bytes taken so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// xxh3 of the bytes taken so far.
    pub fn fingerprint(&self) -> u64 {
        self.hasher.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_chunks(text: &[u8], chunk: usize) -> (Vec<u8>, Vec<Vec<u8>>, Lines<&[u8]>) {
        let mut lines = Lines::new(Path::new("t.csv"), text, chunk);
        let header = lines.header().unwrap().unwrap();
        let mut chunks = Vec::new();
        while let Some(c) = lines.next_lines().unwrap() {
            chunks.push(c.bytes);
        }
        (header, chunks, lines)
    }

    /// Chunks are whole lines, together the file, and the fingerprint is that of the
    /// bytes taken.
    #[test]
    fn chunks_are_whole_lines_and_hash_what_was_taken() {
        let mut text = b"h1,h2\n".to_vec();
        for i in 0..50_000 {
            text.extend_from_slice(format!("{i},{}\n", i * 7).as_bytes());
        }
        text.extend_from_slice(b"cut,la");
        let (header, chunks, mut lines) = all_chunks(&text, 64 << 10);
        assert_eq!(header, b"h1,h2\n");
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        let whole = [header, chunks.concat()].concat();
        assert_eq!(whole, text[..text.len() - 6]);
        assert_eq!(lines.fingerprint(), xxhash_rust::xxh3::xxh3_64(&whole));
        let rest = lines.rest().unwrap();
        assert_eq!(
            (rest.bytes.as_slice(), rest.first_line),
            (&b"cut,la"[..], 50_002)
        );
        assert_eq!(lines.fingerprint(), xxhash_rust::xxh3::xxh3_64(&text));
        assert_eq!(lines.taken(), text.len() as u64);
    }

    #[test]
    fn skip_to_starts_an_appended_tail() {
        let text = b"h\n1\n2\n3\n";
        let mut lines = Lines::new(Path::new("t.csv"), &text[..], 1);
        lines.header().unwrap();
        lines.skip_to(4).unwrap();
        let c = lines.next_lines().unwrap().unwrap();
        assert_eq!((c.bytes.as_slice(), c.first_line), (&b"2\n3\n"[..], 3));
        assert!(lines.skip_to(20).is_err(), "past the end");
    }

    /// Skipping a prefix of several read steps counts its lines and hashes it, so the
    /// chunk after it starts at the right line and the fingerprint covers the whole file.
    #[test]
    fn skip_to_over_a_large_prefix_counts_and_hashes_it() {
        let mut text = b"h1,h2\n".to_vec();
        for i in 0..400_000 {
            text.extend_from_slice(format!("{i},{}\n", i * 3).as_bytes());
        }
        let cut = text.len() - 1000;
        let prefix = text[..cut].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        assert!(prefix > 3 * SKIP_STEP);
        let mut lines = Lines::new(Path::new("t.csv"), &text[..], 64 << 10);
        lines.header().unwrap();
        lines.skip_to(prefix as u64).unwrap();
        let lines_before = memchr::memchr_iter(b'\n', &text[..prefix]).count();
        let c = lines.next_lines().unwrap().unwrap();
        assert_eq!(c.first_line, lines_before + 1);
        assert_eq!(c.bytes, &text[prefix..]);
        assert_eq!(lines.fingerprint(), xxhash_rust::xxh3::xxh3_64(&text));
    }

    #[test]
    fn a_line_over_the_cap_fails_before_it_is_buffered_whole() {
        let mut text = b"h\nshort\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        text.push(b'\n');
        let mut lines = Lines::new(Path::new("t.csv"), &text[..], 1 << 10);
        lines.header().unwrap();
        let mut failed = None;
        for _ in 0..10 {
            match lines.next_lines() {
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        assert!(failed.unwrap().contains("line 3: line longer than"));
        assert!(lines.buf.len() <= MAX_LINE + (4 << 10));
    }
}
