//! The query log: per query shape (what a query selects, filters on and groups by, not
//! its values) how often it ran, where it was last answered, and how long it took.
//!
//! Kept in memory, written to `querylog.json` in the state folder (temp file, fsync,
//! rename) periodically when it changed and at shutdown, and read back at start, so the
//! statistics outlive restarts. `advise` reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::query::request::Item;
use crate::query::Query;
use crate::storage::manifest::write_atomic;

/// The log's file in the state folder.
pub const FILE: &str = "querylog.json";
/// Latency samples kept per shape (the latest ones).
const SAMPLES: usize = 256;
/// Shapes kept; a new shape beyond them replaces the least used one.
const MAX_SHAPES: usize = 1000;

/// What the log knows of one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeStats {
    /// The shape, e.g. `select day, SUM(bid_price) where type group by day`.
    pub shape: String,
    /// The latest query of this shape.
    pub query: Json,
    pub count: u64,
    /// Where the latest was answered (`rollup:<name>` or `duckdb`).
    pub source: String,
    /// Time spent on all of them, in microseconds.
    pub total_us: u64,
    /// The latest latencies, in microseconds (a ring of `SAMPLES`).
    samples: Vec<u64>,
}

impl ShapeStats {
    /// The latency at quantile `q` (0–1) of the kept samples, in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or(0)
    }
}

/// The shape of a query: its select items, the columns it filters on, its group-by.
pub fn shape(query: &Query) -> String {
    let mut out = format!("select {}", query.labels().join(", "));
    let mut filtered: Vec<String> = query.filters.iter().map(|f| f.col.to_string()).collect();
    filtered.dedup();
    if !filtered.is_empty() {
        out += &format!(" where {}", filtered.join(", "));
    }
    if !query.group_by.is_empty() {
        let groups: Vec<String> = query.group_by.iter().map(|c| c.to_string()).collect();
        out += &format!(" group by {}", groups.join(", "));
    }
    if !query.select.iter().any(|i| matches!(i, Item::Agg(_))) && query.group_by.is_empty() {
        out += " (raw rows)";
    }
    out
}

/// The log of one state folder.
#[derive(Debug)]
pub struct QueryLog {
    path: PathBuf,
    shapes: Mutex<HashMap<String, ShapeStats>>,
    dirty: AtomicBool,
}

impl QueryLog {
    /// The log saved in `state`, or an empty one (a file that does not parse is logged and
    /// started over).
    pub fn open(state: &Path) -> QueryLog {
        let path = state.join(FILE);
        let shapes: Vec<ShapeStats> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: not a query log ({e}); starting over", path.display());
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        QueryLog {
            path,
            shapes: Mutex::new(shapes.into_iter().map(|s| (s.shape.clone(), s)).collect()),
            dirty: AtomicBool::new(false),
        }
    }

    /// Counts one answered query (`json` is valid: it was just answered).
    pub fn record(&self, json: &Json, source: &str, elapsed: Duration) {
        let Ok(query) = Query::parse(json) else {
            return;
        };
        let key = shape(&query);
        let us = elapsed.as_micros() as u64;
        let mut shapes = self.shapes.lock().expect("query log lock");
        if !shapes.contains_key(&key) && shapes.len() >= MAX_SHAPES {
            let least = shapes
                .values()
                .min_by_key(|s| s.count)
                .map(|s| s.shape.clone());
            shapes.remove(&least.expect("a full log has shapes"));
        }
        let s = shapes.entry(key.clone()).or_insert_with(|| ShapeStats {
            shape: key,
            query: Json::Null,
            count: 0,
            source: String::new(),
            total_us: 0,
            samples: Vec::new(),
        });
        if s.samples.len() < SAMPLES {
            s.samples.push(us);
        } else {
            s.samples[(s.count % SAMPLES as u64) as usize] = us;
        }
        s.count += 1;
        s.total_us += us;
        s.query = json.clone();
        s.source = source.to_string();
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Every shape, most costly (total time) first.
    pub fn shapes(&self) -> Vec<ShapeStats> {
        let mut all: Vec<_> = self
            .shapes
            .lock()
            .expect("query log lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| b.total_us.cmp(&a.total_us).then(a.shape.cmp(&b.shape)));
        all
    }

    /// Writes the log if it changed since it was last written.
    pub fn save(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.shapes())
            .map_err(|e| Error::Internal(format!("encoding the query log: {e}")))?;
        write_atomic(&self.path, &bytes).inspect_err(|_| self.dirty.store(true, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_ignore_values_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = QueryLog::open(dir.path());
        let q = |country: &str| {
            serde_json::json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"],
                "where": [{"col": "country", "op": "eq", "val": country}]})
        };
        for (i, c) in ["US", "JP", "FR"].iter().enumerate() {
            log.record(&q(c), "duckdb", Duration::from_micros(100 * (i as u64 + 1)));
        }
        log.save().unwrap();
        let again = QueryLog::open(dir.path()).shapes();
        assert_eq!(again, log.shapes());
        let s = &again[0];
        assert_eq!(s.shape, "select day, COUNT(*) where country group by day");
        assert_eq!((s.count, s.total_us), (3, 600));
        assert_eq!((s.quantile_us(0.5), s.quantile_us(0.99)), (200, 300));
        assert_eq!(s.query["where"][0]["val"], "FR");
    }
}
