//! `explain`: where a query would be answered, what it reads, and why each other rollup
//! was not chosen, from the planner's own verdicts (the rules live only in the planner).

use serde_json::Value as Json;

use crate::daemon::limits::QueryBudget;
use crate::daemon::protocol::{ExplainReply, Reason, ReasonKind, RollupVerdict};
use crate::engine::Engine;
use crate::error::Result;
use crate::query::output::{Data, OutType};
use crate::query::plan::{plan_in, Rejection};
use crate::query::{Query, Route};
use crate::storage::table::View;

/// Explains `json` against the published generation, within `budget` (the same caps as
/// the query; counting the DuckDB table's rows is its only work).
pub fn explain(engine: &Engine, json: &Json, budget: &QueryBudget) -> Result<ExplainReply> {
    budget.limits.check_request(json)?;
    let query = Query::parse(json)?;
    let snap = engine.snapshot();
    let (_, plan, verdicts) = plan_in(query, &snap.catalog, snap.zone);
    let chosen = match &plan.route {
        Route::Rollup(i) => Some(*i),
        Route::DuckDb { .. } => None,
    };
    let (lo, hi) = plan.time_range;
    let (rows_scanned, sql) = match &plan.route {
        Route::Rollup(i) => (snap.rollups[*i].rows_in(lo, hi) as u64, None),
        Route::DuckDb { sql, .. } => (table_rows(snap.view.as_deref(), budget)?, Some(sql.clone())),
    };
    let chosen_rows = chosen.map(|i| snap.catalog[i].rows);
    let rollups = snap
        .catalog
        .iter()
        .zip(verdicts)
        .enumerate()
        .map(|(i, (entry, verdict))| {
            let reason = match (verdict, chosen_rows) {
                (Err(r), _) => Some(reason(&r)),
                (Ok(()), Some(rows)) if chosen != Some(i) => Some(Reason {
                    kind: ReasonKind::Larger,
                    message: format!(
                        "covers the query, but has {} rows; the chosen one has {rows}",
                        entry.rows
                    ),
                }),
                (Ok(()), _) => None,
            };
            RollupVerdict {
                name: entry.spec.name(),
                rows: entry.rows,
                chosen: chosen == Some(i),
                reason,
            }
        })
        .collect();
    Ok(ExplainReply {
        source: chosen.map_or("duckdb".into(), |i| {
            format!("rollup:{}", snap.catalog[i].spec.name())
        }),
        rollup: chosen.map(|i| snap.catalog[i].spec.name()),
        rows_scanned,
        sql,
        generation: snap.generation(),
        rollups,
    })
}

fn reason(r: &Rejection) -> Reason {
    let kind = match r {
        Rejection::RawRows => ReasonKind::RawRows,
        Rejection::MissingColumn(_) => ReasonKind::MissingColumn,
        Rejection::Grain { .. } => ReasonKind::Grain,
        Rejection::Aggregate(_) => ReasonKind::Aggregate,
        Rejection::ExtremesPending => ReasonKind::ExtremesPending,
    };
    Reason {
        kind,
        message: r.to_string(),
    }
}

/// Rows of the DuckDB table in a generation's view (none before the first publish).
fn table_rows(view: Option<&View>, budget: &QueryBudget) -> Result<u64> {
    let Some(view) = view else {
        return Ok(0);
    };
    count(view, "SELECT COUNT(*) FROM events", budget)
}

/// The one number a counting statement answers.
pub fn count(view: &View, sql: &str, budget: &QueryBudget) -> Result<u64> {
    let rows = view.query(sql, &[], &[OutType::Int], &[None], budget)?;
    Ok(match rows.columns().first() {
        Some(Data::Int(cells)) => cells.first().copied().flatten().unwrap_or(0) as u64,
        _ => 0,
    })
}
