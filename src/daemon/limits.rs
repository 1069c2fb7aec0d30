//! What one query may cost: caps on its request (select list, `in` lists) and its answer
//! (rows, bytes), a time limit, and cancelling it when its time is up or its client left.
//!
//! Every cap is a setting of the config file; the error a cap raises names the setting, so
//! the user knows what to change. DuckDB-answered queries are stopped with DuckDB's
//! interrupt; rollup-answered ones check for cancellation between their steps (they are
//! bounded by the rollup's size).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duckdb::InterruptHandle;
use serde_json::Value as Json;

use crate::error::{Error, Result};

/// Caps on one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Rows an answer may have (`max_answer_rows`).
    pub max_answer_rows: u64,
    /// Bytes an encoded answer may have (`max_answer_bytes`).
    pub max_answer_bytes: u64,
    /// Items of `select` (`max_select_items`).
    pub max_select_items: usize,
    /// Values of one `in` list (`max_in_values`).
    pub max_in_values: usize,
    /// How long a query may run (`query_timeout_ms`).
    pub query_timeout: Duration,
    /// Rows of a rollup per thread when a query searches or scans many (not a setting:
    /// tests make it small so that small data takes the threaded paths).
    pub parallel_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_answer_rows: 1_000_000,
            max_answer_bytes: 256 << 20,
            max_select_items: 100,
            max_in_values: 10_000,
            query_timeout: Duration::from_secs(30),
            parallel_rows: crate::query::PARALLEL_ROWS,
        }
    }
}

impl QueryLimits {
    /// Checks the parts of a JSON query whose size is capped, before it is parsed:
    /// `too_large` naming the cap when one is over.
    pub fn check_request(&self, query: &Json) -> Result<()> {
        if let Some(Json::Array(items)) = query.get("select") {
            if items.len() > self.max_select_items {
                return Err(Error::TooLarge(format!(
                    "select has {} items; at most {} are allowed (max_select_items)",
                    items.len(),
                    self.max_select_items
                )));
            }
        }
        let Some(Json::Array(filters)) = query.get("where") else {
            return Ok(());
        };
        for (i, f) in filters.iter().enumerate() {
            if let Some(Json::Array(values)) = f.get("val") {
                if values.len() > self.max_in_values {
                    return Err(Error::TooLarge(format!(
                        "where[{i}] lists {} values; at most {} are allowed (max_in_values)",
                        values.len(),
                        self.max_in_values
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks that an answer of `groups` rows, cut to the query's `limit`, fits the row cap.
    pub fn check_rows(&self, groups: usize, limit: Option<u64>) -> Result<()> {
        let rows = limit.map_or(groups as u64, |l| l.min(groups as u64));
        if rows > self.max_answer_rows {
            return Err(self.too_many_rows());
        }
        Ok(())
    }

    /// The error of an answer over the row cap.
    pub fn too_many_rows(&self) -> Error {
        Error::TooLarge(format!(
            "the answer has more than {} rows (max_answer_rows); add filters or a limit",
            self.max_answer_rows
        ))
    }

    /// The error of an answer over the byte cap.
    pub fn too_many_bytes(&self) -> Error {
        Error::TooLarge(format!(
            "the answer is larger than {} bytes (max_answer_bytes); add filters or a limit",
            self.max_answer_bytes
        ))
    }
}

/// An in-memory writer that fails once more than `cap` bytes are written to it, so an
/// answer over the byte cap is never encoded whole.
pub struct CappedWriter {
    pub buf: Vec<u8>,
    cap: usize,
}

impl CappedWriter {
    pub fn new(cap: u64) -> CappedWriter {
        CappedWriter::with_room(cap, 0)
    }

    /// A writer with room for `expected` bytes (at most the cap) from the start, so a
    /// large answer is not copied as its buffer grows.
    pub fn with_room(cap: u64, expected: usize) -> CappedWriter {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        CappedWriter {
            buf: Vec::with_capacity(expected.min(cap)),
            cap,
        }
    }
}

impl Write for CappedWriter {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    /// Encoders write a token at a time: one check and one copy each, inlined.
    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.buf.len() + data.len() > self.cap {
            return Err(std::io::Error::other("over the byte cap"));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a query was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its time was up.
    Timeout,
    /// Its client went away.
    Abandoned,
}

/// A query's cancellation: cheap to clone, shared by the task running the query and the
/// one watching its time and its client. Cancelling interrupts the DuckDB statements it
/// runs; the query's own steps check it.
#[derive(Clone, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Default)]
struct CancelState {
    /// 0 while running, else `Stop` + 1.
    stop: AtomicU8,
    /// How long the query could run, for the timeout's message.
    timeout: Mutex<Duration>,
    running: Mutex<Vec<Arc<InterruptHandle>>>,
}

impl Cancel {
    /// A token that reports a timeout of `timeout` when cancelled for its time.
    pub fn with_timeout(timeout: Duration) -> Cancel {
        let c = Cancel::default();
        *c.0.timeout.lock().expect("cancel lock") = timeout;
        c
    }

    /// Stops the query (the first reason given wins) and interrupts its DuckDB statements.
    pub fn cancel(&self, why: Stop) {
        let code = match why {
            Stop::Timeout => 1,
            Stop::Abandoned => 2,
        };
        let _ = self
            .0
            .stop
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.interrupt();
    }

    /// Interrupts the DuckDB statements running now (again, should one have just begun).
    pub fn interrupt(&self) {
        for handle in self.0.running.lock().expect("cancel lock").iter() {
            handle.interrupt();
        }
    }

    /// Why the query was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        match self.0.stop.load(Ordering::SeqCst) {
            0 => None,
            1 => Some(Stop::Timeout),
            _ => Some(Stop::Abandoned),
        }
    }

    /// `Ok` while the query may go on; otherwise the error that says why it stopped.
    pub fn check(&self) -> Result<()> {
        match self.stopped() {
            None => Ok(()),
            Some(Stop::Abandoned) => Err(Error::Abandoned),
            Some(Stop::Timeout) => Err(Error::Timeout(format!(
                "the query ran longer than {} ms (query_timeout_ms, or the request's timeout_ms) \
                 and was stopped",
                self.0.timeout.lock().expect("cancel lock").as_millis()
            ))),
        }
    }

    /// Runs `f` (a DuckDB statement on the connection of `handle`) so that cancelling
    /// interrupts it; an error of `f` after a cancel becomes the cancel's error.
    pub fn interruptible<R>(
        &self,
        handle: Arc<InterruptHandle>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        self.0
            .running
            .lock()
            .expect("cancel lock")
            .push(handle.clone());
        let result = self.check().and_then(|()| f());
        self.0
            .running
            .lock()
            .expect("cancel lock")
            .retain(|h| !Arc::ptr_eq(h, &handle));
        match result {
            Err(e) => Err(self.check().err().unwrap_or(e)),
            ok => ok,
        }
    }
}

/// What a query may use: its caps and its cancellation.
#[derive(Clone, Default)]
pub struct QueryBudget {
    pub limits: QueryLimits,
    pub cancel: Cancel,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_name_their_setting() {
        let limits = QueryLimits {
            max_select_items: 2,
            max_in_values: 3,
            ..QueryLimits::default()
        };
        let select = serde_json::json!({"select": ["day", "type", "country"]});
        let e = limits.check_request(&select).unwrap_err();
        assert!(e.to_string().contains("max_select_items"), "{e}");
        let within = serde_json::json!({"select": ["day"], "where": [
            {"col": "day", "op": "between", "val": ["2024-01-01", "2024-02-01"]}]});
        limits.check_request(&within).unwrap();
        let in_list = serde_json::json!({"select": ["day"], "where": [
            {"col": "advertiser_id", "op": "in", "val": [1, 2, 3, 4]}]});
        let e = limits.check_request(&in_list).unwrap_err();
        assert!(e.to_string().contains("where[0]") && e.to_string().contains("max_in_values"));
        assert!(limits.check_rows(2_000_000, Some(10)).is_ok());
        assert!(limits.check_rows(2_000_000, None).is_err());
    }

    #[test]
    fn the_capped_writer_stops_at_its_cap() {
        let mut w = CappedWriter::new(4);
        assert!(w.write_all(b"abcd").is_ok());
        assert!(w.write_all(b"e").is_err());
    }

    #[test]
    fn the_first_reason_to_stop_wins() {
        let c = Cancel::with_timeout(Duration::from_millis(5));
        assert!(c.check().is_ok());
        c.cancel(Stop::Timeout);
        c.cancel(Stop::Abandoned);
        assert_eq!(c.stopped(), Some(Stop::Timeout));
        assert!(matches!(c.check(), Err(Error::Timeout(m)) if m.contains("5 ms")));
    }
}
