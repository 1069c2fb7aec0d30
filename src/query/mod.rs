//! The JSON query language: parse and validate (`request`), choose a route (`plan`,
//! pure), run it (`exec`) and encode the result (`output`).

pub mod exec;
pub mod output;
pub mod plan;
pub mod request;

pub use output::{OutType, ResultSet, Value};
pub use plan::{plan, CatalogEntry, Plan, Route};
pub use request::Query;
