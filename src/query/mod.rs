//! The JSON query language: parse and validate (`request`), choose a route (`plan`,
//! pure), run it (`exec`, with filters compiled against rollup keys in `filter`) and
//! encode the typed result (`output`).

pub mod advise;
pub mod exec;
pub mod explain;
pub mod filter;
pub mod group;
pub mod output;
pub mod plan;
pub mod querylog;
pub mod request;
pub mod sort;

pub use output::{Data, OutType, ResultSet, Rows, Value};
pub use plan::{plan, plan_in, CatalogEntry, Plan, Route};
pub use request::Query;
