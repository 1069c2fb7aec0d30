//! The data model: the input's columns, their types, the derived time columns and the
//! time zone they are computed in.

pub mod arrays;
pub mod buckets;
pub mod codes;
pub mod prefetch;
pub mod schema;
