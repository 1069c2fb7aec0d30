//! What the engine keeps on disk: the store (registry and partials), the rollup
//! partitions and their manifest, the DuckDB table of raw rows, and the state folder's
//! lock.

pub mod duck;
pub mod lock;
pub mod manifest;
pub mod store;
pub mod table;
