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
pub mod price;
pub mod querylog;
pub mod request;
pub mod sort;

pub use output::{Data, OutType, ResultSet, Rows, Value};

/// Rows of a rollup per thread working on them, by default: a long filter search or scan
/// is cut in parts of at least this many rows, done on threads of their own (a thread
/// costs tens of microseconds; this many rows take up to about a millisecond).
pub const PARALLEL_ROWS: usize = 1 << 17;

/// `f` of each part, each on a thread of its own (the first on the calling thread), in
/// the parts' order.
pub(crate) fn on_threads<T: Sync, R: Send>(parts: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some((first, rest)) = parts.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let f = &f;
        let rest: Vec<_> = rest.iter().map(|p| s.spawn(move || f(p))).collect();
        let first = f(first);
        std::iter::once(first)
            .chain(rest.into_iter().map(|h| h.join().expect("a query thread")))
            .collect()
    })
}

/// The cores this process may run on.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
pub use plan::{plan, plan_in, CatalogEntry, Plan, Route};
pub use request::Query;
