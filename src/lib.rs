//! rollupd: a file-watching incremental rollup daemon for folders of ad-event CSVs.
//!
//! The source is grouped by layer, and data flows one way through them: files are
//! found and folded (`ingest`) into table rows and per-file partial aggregates that merge
//! into rollups (`rollup`); the store, the rollup partitions and the DuckDB table keep
//! them on disk (`storage`); `engine` ties these together over a state folder and
//! publishes snapshots; queries in a small JSON language (`query`) are answered from the
//! smallest covering rollup, or from DuckDB. The daemon (`daemon`) keeps the state up to
//! date with a watched folder and serves queries on a Unix socket; `app` holds
//! configuration, the service definitions, the demo and sample data. `model` is the
//! input's schema, shared by all.

pub mod app;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod model;
pub mod query;
pub mod rollup;
pub mod storage;

pub use engine::{Answer, Engine, EngineOptions};
pub use error::{Error, Result};
