//! `advise`: the most costly DuckDB-answered shapes of the query log, each with the
//! smallest rollup that would answer it and that rollup's size, counted from the data.

use crate::daemon::limits::QueryBudget;
use crate::daemon::protocol::{AdviseReply, ShapeAdvice};
use crate::engine::Engine;
use crate::error::Result;
use crate::model::schema::Column;
use crate::query::explain::count;
use crate::query::plan::{check, column_sql, Rejection};
use crate::query::querylog::QueryLog;
use crate::query::Query;
use crate::rollup::{Dim, RollupSpec};
use crate::storage::table::View;

/// Advice on the `limit` most costly DuckDB-answered shapes of `log`.
pub fn advise(
    engine: &Engine,
    log: &QueryLog,
    limit: usize,
    budget: &QueryBudget,
) -> Result<AdviseReply> {
    let snap = engine.snapshot();
    let mut shapes = Vec::new();
    for s in log.shapes().into_iter().filter(|s| s.source == "duckdb") {
        if shapes.len() == limit {
            break;
        }
        // A shape logged under another time zone or version may no longer parse.
        let Ok(query) = Query::parse(&s.query) else {
            continue;
        };
        let (rollup, rollup_rows, reason) = match proposal(&query) {
            Ok(spec) => {
                let rows = match &snap.view {
                    Some(view) => Some(distinct_keys(view, &spec, budget)?),
                    None => None,
                };
                (Some(spec.name()), rows, None)
            }
            Err(why) => (None, None, Some(format!("no rollup can answer it: {why}"))),
        };
        shapes.push(ShapeAdvice {
            p50_us: s.quantile_us(0.5),
            p99_us: s.quantile_us(0.99),
            shape: s.shape,
            query: s.query,
            count: s.count,
            source: s.source,
            total_us: s.total_us,
            rollup,
            rollup_rows,
            reason,
        });
    }
    Ok(AdviseReply { shapes })
}

/// The smallest rollup that answers `query`: exactly its dimensions, at the grain of its
/// finest time column (all time without one); or why no rollup can (the planner's
/// verdict on that spec).
pub fn proposal(query: &Query) -> std::result::Result<RollupSpec, Rejection> {
    let dims: Vec<Dim> = query.key_columns().filter_map(Dim::of).collect();
    let grain = query
        .key_columns()
        .filter_map(|c| match c {
            Column::Time(t) => Some(t),
            _ => None,
        })
        .min();
    let spec = RollupSpec::new(grain, &dims);
    check(&spec, query).map(|()| spec)
}

/// The rows `spec` would have: the distinct keys of the DuckDB table.
fn distinct_keys(view: &View, spec: &RollupSpec, budget: &QueryBudget) -> Result<u64> {
    let keys: Vec<String> = spec
        .grain
        .map(Column::Time)
        .into_iter()
        .chain(spec.dims.iter().map(|d| d.column()))
        .map(column_sql)
        .collect();
    let sql = if keys.is_empty() {
        "SELECT LEAST(COUNT(*), 1) FROM events".to_string()
    } else {
        format!(
            "SELECT COUNT(*) FROM (SELECT DISTINCT {} FROM events)",
            keys.join(", ")
        )
    };
    count(view, &sql, budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proposal_is_the_query_s_own_dimensions_at_its_finest_grain() {
        let q = |text: &str| Query::parse_text(text).unwrap();
        let spec = proposal(&q(
            r#"{"select":["hour",{"SUM":"bid_price"}],"where":[{"col":"publisher_id","op":"eq","val":3},{"col":"day","op":"eq","val":"2024-06-01"}],"group_by":["hour"]}"#,
        ))
        .unwrap();
        assert_eq!(spec.name(), "hour_publisher");
        let all = proposal(&q(r#"{"select":[{"COUNT":"*"}]}"#)).unwrap();
        assert_eq!(all.name(), "all");
        let users = q(r#"{"select":["user_id",{"COUNT":"*"}],"group_by":["user_id"]}"#);
        assert_eq!(
            proposal(&users),
            Err(Rejection::MissingColumn(Column::UserId))
        );
    }
}
