//! rollupd: a file-watching incremental rollup daemon for folders of ad-event CSVs.
//!
//! Files are folded (`fold`) into per-file partial aggregates that merge into rollups
//! (`rollup`), published as Arrow IPC partitions (`manifest`); raw rows go to a DuckDB
//! table (`table`). Queries in a small JSON language (`query`) are answered from the
//! smallest covering rollup, or from DuckDB. `engine` ties these together over a state
//! folder. The daemon (`daemon`) keeps it up to date with a watched folder (`watch`,
//! `ingest`) and serves queries on a Unix socket (`server`, `connection`, `cmd`,
//! `protocol`) within the caps of `limits`; `client` is the other end.

pub mod advise;
pub mod changes;
pub mod client;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod error;
pub mod explain;
pub mod failpoint;
pub mod fastcsv;
pub mod fold;
pub mod gen;
pub mod ingest;
pub mod limits;
pub mod lines;
pub mod lock;
pub mod manifest;
pub mod partial;
pub mod protocol;
pub mod query;
pub mod querylog;
pub mod regular;
pub mod rollup;
pub mod schema;
pub mod server;
pub mod service;
pub mod store;
pub mod subscribe;
pub mod table;
pub mod watch;

pub use engine::{Answer, Engine, EngineOptions};
pub use error::{Error, Result};
