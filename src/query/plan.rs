//! The planner: picks the route of a query. Pure: no I/O, only the query and the catalog.
//!
//! A query goes to the smallest rollup that covers its group-by, filter and selected
//! columns and its aggregates (coarser time grains are derived from finer ones);
//! anything else becomes DuckDB SQL over the `events` table with every value bound as a
//! parameter, never spliced into the text. [`plan_checked`] also gives each rollup's
//! verdict, which `explain` reports: the rules are only here.

use crate::model::schema::{Column, ColumnKind, TimeCol, Zone};
use crate::query::filter::bucket_len;
use crate::query::output::OutType;
use crate::query::price::{self, Bounds};
use crate::query::request::{Aggregate, Filter, Func, Item, Lit, Op, Query};
use crate::rollup::RollupSpec;

/// What the planner knows of one rollup.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub spec: RollupSpec,
    pub rows: u64,
    /// Some of its keys' minima and maxima are being restored after a removal: it cannot
    /// answer MIN or MAX until they are.
    pub extremes_pending: bool,
}

/// A bound SQL parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Where a query is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// From the catalog's rollup at this index.
    Rollup(usize),
    /// From DuckDB: SQL text and its parameters.
    DuckDb { sql: String, params: Vec<Param> },
}

/// A planned query.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub route: Route,
    /// Local-minute bounds every matching row lies in (from the time filters).
    pub time_range: (i32, i32),
    /// The type of each result column.
    pub types: Vec<OutType>,
}

/// Why a rollup cannot answer a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The query selects raw rows; rollups keep aggregates only.
    RawRows,
    /// The query groups by, filters on or selects a column the rollup does not keep.
    MissingColumn(Column),
    /// The query needs a time column finer than the rollup's grain (`None`: all time).
    Grain {
        needs: TimeCol,
        keeps: Option<TimeCol>,
    },
    /// The rollup keeps nothing this aggregate can be computed from.
    Aggregate(String),
    /// The query takes a MIN or MAX the rollup is restoring after a removal.
    ExtremesPending,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::RawRows => {
                f.write_str("the query selects raw rows; rollups keep aggregates")
            }
            Rejection::MissingColumn(c) => write!(f, "no column `{c}`"),
            Rejection::Grain { needs, keeps } => write!(
                f,
                "the query needs `{}`, the rollup keeps {}",
                needs.name(),
                keeps.map_or("all time".to_string(), |g| format!("`{}`", g.name()))
            ),
            Rejection::Aggregate(label) => write!(
                f,
                "{label} cannot be computed from it (it keeps COUNT(*), the prices' \
                 aggregates and COUNT of its key columns)"
            ),
            Rejection::ExtremesPending => {
                f.write_str("its minima and maxima are being restored after a file was removed")
            }
        }
    }
}

/// Plans `query` against the rollups in `catalog`.
pub fn plan(query: &Query, catalog: &[CatalogEntry]) -> Plan {
    plan_checked(query, catalog, Zone::Utc).0
}

/// Plans `query` in time zone `zone` as `plan_checked` does, except that a query no rollup
/// covers whose `ts` filters all span whole time buckets goes to the rollup that covers
/// it with those filters on a time column instead (`ts_as_buckets`), if one does. Gives
/// back the query to execute (rewritten or not) with its plan and verdicts.
pub fn plan_in(
    query: Query,
    catalog: &[CatalogEntry],
    zone: Zone,
) -> (Query, Plan, Vec<Result<(), Rejection>>) {
    let (plan, verdicts) = plan_checked(&query, catalog, zone);
    if let (Route::DuckDb { .. }, Some(buckets)) = (&plan.route, ts_as_buckets(&query, zone)) {
        let (by_bucket, checked) = plan_checked(&buckets, catalog, zone);
        if matches!(by_bucket.route, Route::Rollup(_)) {
            return (buckets, by_bucket, checked);
        }
    }
    (query, plan, verdicts)
}

/// The query with each `ts` filter as a filter on the coarsest time column whose buckets
/// it spans whole, when every `ts` filter is a `between` from the first millisecond of a
/// bucket to the last of one; `None` otherwise. In UTC only: there a row's local minute
/// is its epoch minute, so the two filters hold for the same rows (a zone's changes of
/// offset would map one local bucket to two spans of `ts`).
fn ts_as_buckets(query: &Query, zone: Zone) -> Option<Query> {
    if zone != Zone::Utc || !query.filters.iter().any(|f| f.col == Column::Ts) {
        return None;
    }
    let mut out = query.clone();
    for f in out.filters.iter_mut().filter(|f| f.col == Column::Ts) {
        *f = ts_span_as_buckets(f)?;
    }
    Some(out)
}

/// A `ts` `between` spanning whole buckets as a `between` on the coarsest time column
/// (day, hour, minute) whose buckets it spans.
fn ts_span_as_buckets(f: &Filter) -> Option<Filter> {
    const MINUTE_MS: i64 = 60_000;
    let (Op::Between, [Lit::Int(lo), Lit::Int(hi)]) = (f.op, f.lits.as_slice()) else {
        return None;
    };
    let end = hi.checked_add(1)?;
    if lo >= &end || lo.rem_euclid(MINUTE_MS) != 0 || end.rem_euclid(MINUTE_MS) != 0 {
        return None;
    }
    let first = i32::try_from(lo.div_euclid(MINUTE_MS)).ok()?;
    let after = i32::try_from(end.div_euclid(MINUTE_MS)).ok()?;
    let t = [TimeCol::Day, TimeCol::Hour, TimeCol::Minute]
        .into_iter()
        .find(|t| t.bucket(first) == first && t.bucket(after) == after)?;
    Some(Filter {
        col: Column::Time(t),
        op: Op::Between,
        lits: vec![Lit::Time(first), Lit::Time(t.bucket(after - 1))],
    })
}

/// Plans `query` (its local times in `zone`), and gives each rollup's verdict (in catalog
/// order): `Ok` for those that cover it (the smallest is chosen), else why not.
pub fn plan_checked(
    query: &Query,
    catalog: &[CatalogEntry],
    zone: Zone,
) -> (Plan, Vec<Result<(), Rejection>>) {
    let verdicts: Vec<_> = catalog
        .iter()
        .map(|e| {
            check(&e.spec, query).and_then(|()| match e.extremes_pending && takes_extremes(query) {
                true => Err(Rejection::ExtremesPending),
                false => Ok(()),
            })
        })
        .collect();
    let route = catalog
        .iter()
        .zip(&verdicts)
        .enumerate()
        .filter(|(_, (_, v))| v.is_ok())
        .min_by_key(|(i, (e, _))| (e.rows, *i))
        .map(|(i, _)| Route::Rollup(i))
        .unwrap_or_else(|| {
            let (sql, params) = sql(query, zone);
            Route::DuckDb { sql, params }
        });
    let plan = Plan {
        route,
        time_range: time_range(&query.filters),
        types: query.select.iter().map(out_type).collect(),
    };
    (plan, verdicts)
}

/// Whether `spec` can answer `query` exactly.
pub fn covers(spec: &RollupSpec, query: &Query) -> bool {
    check(spec, query).is_ok()
}

/// `Ok` if `spec` can answer `query` exactly, else the first reason it cannot.
pub fn check(spec: &RollupSpec, query: &Query) -> Result<(), Rejection> {
    if !query.is_aggregate() {
        return Err(Rejection::RawRows);
    }
    if let Some(c) = query.key_columns().find(|c| !spec.covers(*c)) {
        return Err(match c {
            Column::Time(needs) => Rejection::Grain {
                needs,
                keeps: spec.grain,
            },
            c => Rejection::MissingColumn(c),
        });
    }
    for item in &query.select {
        if let Item::Agg(a) = item {
            if !aggregate_covered(spec, a) {
                return Err(Rejection::Aggregate(a.label()));
            }
        }
    }
    Ok(())
}

/// Whether the query takes a MIN or MAX of a price (what a rollup restoring its extremes
/// cannot answer).
fn takes_extremes(query: &Query) -> bool {
    query.select.iter().any(|item| {
        matches!(item, Item::Agg(a) if matches!(a.func, Func::Min | Func::Max)
            && matches!(a.arg, Some(Column::BidPrice | Column::TotalPrice)))
    })
}

fn aggregate_covered(spec: &RollupSpec, a: &Aggregate) -> bool {
    match a.arg {
        None => true,
        Some(Column::BidPrice | Column::TotalPrice) => true,
        Some(c) => a.func == Func::Count && spec.covers(c),
    }
}

/// The result type of a select item.
pub fn out_type(item: &Item) -> OutType {
    let of_column = |c: Column| match c.kind() {
        ColumnKind::Int => OutType::Int,
        ColumnKind::Price => OutType::Float,
        ColumnKind::Text | ColumnKind::Uuid | ColumnKind::Time(_) => OutType::Text,
    };
    match item {
        Item::Column(c) => of_column(*c),
        Item::Agg(a) => match (a.func, a.arg) {
            (Func::Count, _) => OutType::Int,
            (Func::Avg, _) => OutType::Float,
            (Func::Sum, Some(c)) if c.kind() == ColumnKind::Int => OutType::BigInt,
            (Func::Sum, _) => OutType::Float,
            (Func::Min | Func::Max, Some(c)) => of_column(c),
            (Func::Min | Func::Max, None) => OutType::Int,
        },
    }
}

/// The local-minute range every row passing the time filters lies in.
pub fn time_range(filters: &[Filter]) -> (i32, i32) {
    let (mut lo, mut hi) = (i64::from(i32::MIN), i64::from(i32::MAX));
    for f in filters {
        let Column::Time(t) = f.col else { continue };
        let len = bucket_len(t);
        let v: Vec<i64> = f
            .lits
            .iter()
            .map(|l| match l {
                Lit::Time(m) => i64::from(*m),
                _ => unreachable!("time filters carry time literals"),
            })
            .collect();
        let (a, b) = match f.op {
            Op::Eq => (v[0], v[0] + len - 1),
            Op::Between => (v[0], v[1] + len - 1),
            Op::In => (
                *v.iter().min().expect("non-empty"),
                v.iter().max().expect("non-empty") + len - 1,
            ),
            Op::Gte => (v[0], i64::MAX),
            Op::Gt => (v[0] + 1, i64::MAX),
            Op::Lte => (i64::MIN, v[0] + len - 1),
            Op::Lt => (i64::MIN, v[0] + len - 2),
            Op::Neq => continue,
        };
        lo = lo.max(a);
        hi = hi.min(b);
    }
    let clamp = |x: i64| x.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    (clamp(lo), clamp(hi))
}

/// The SQL expression of a column over the `events` table.
pub fn column_sql(c: Column) -> String {
    const M: &str = "local_minute";
    match c {
        Column::Ts => "ts".into(),
        Column::Type => "\"type\"".into(),
        Column::AuctionId => "CAST(auction_id AS VARCHAR)".into(),
        Column::AdvertiserId => "advertiser_id".into(),
        Column::PublisherId => "publisher_id".into(),
        Column::BidPrice => "CAST(bid_price AS DOUBLE)".into(),
        Column::UserId => "user_id".into(),
        Column::TotalPrice => "CAST(total_price AS DOUBLE)".into(),
        Column::Country => "country".into(),
        Column::Time(TimeCol::Minute) => M.into(),
        Column::Time(TimeCol::Hour) => format!("({M} - ((({M} % 60) + 60) % 60))"),
        Column::Time(TimeCol::Day) => format!("({M} - ((({M} % 1440) + 1440) % 1440))"),
        // The Monday of the week: 1970-01-01 (day 0) was a Thursday.
        Column::Time(TimeCol::Week) => {
            let day = format!("(({M} - ((({M} % 1440) + 1440) % 1440)) // 1440)");
            format!("(({day} - ((({day} + 3) % 7) + 7) % 7) * 1440)")
        }
    }
}

fn aggregate_sql(a: &Aggregate) -> String {
    let Some(c) = a.arg else {
        return "COUNT(*)".into();
    };
    let raw = match c {
        Column::BidPrice | Column::TotalPrice | Column::AuctionId => c.name().to_string(),
        _ => column_sql(c),
    };
    match (a.func, c.kind()) {
        (Func::Count, _) => format!("COUNT({raw})"),
        (Func::Sum | Func::Min | Func::Max, ColumnKind::Price) => {
            format!("CAST({}({raw}) AS DOUBLE)", a.func.name())
        }
        (Func::Avg, _) => format!("AVG({raw})"),
        (Func::Min | Func::Max, ColumnKind::Uuid) => {
            format!("CAST({}({raw}) AS VARCHAR)", a.func.name())
        }
        (f, _) => format!("{}({raw})", f.name()),
    }
}

fn param(l: &Lit) -> Param {
    match l {
        Lit::Int(i) => Param::Int(*i),
        Lit::Float(f) => Param::Float(*f),
        Lit::Text(s) => Param::Text(s.clone()),
        Lit::Time(m) => Param::Int(i64::from(*m)),
        Lit::Uuid(u) => Param::Text(uuid_text(u)),
    }
}

/// Canonical lowercase UUID text.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// For a filter on `ts` or a time column, bounds on the `day` column (the local day of
/// `zone`) that every row it takes is within, so they never leave out a row the filter
/// takes. A `ts` bound's day in UTC, widened by a day each way in other zones (the instants
/// of a local day lie within its UTC day and the days either side); a time column's
/// bucket bounds (local minutes) the days of the first minute of the lowest bucket and the
/// last minute of the highest. The table's rows lie in day order within each file and
/// the day column is run-length coded, so DuckDB skips the row groups and vectors of
/// other days and reads the filtered column only for rows of the days left.
fn day_bounds_sql(f: &Filter, zone: Zone, params: &mut Vec<Param>) -> Vec<String> {
    let values: Vec<i64> = f
        .lits
        .iter()
        .filter_map(|l| match l {
            Lit::Int(v) => Some(*v),
            Lit::Time(m) => Some(i64::from(*m)),
            _ => None,
        })
        .collect();
    let (lo, hi) = match (f.op, values.iter().min(), values.iter().max()) {
        (Op::Between | Op::Eq | Op::In, Some(lo), Some(hi)) => (Some(*lo), Some(*hi)),
        (Op::Gt | Op::Gte, Some(lo), _) => (Some(*lo), None),
        (Op::Lt | Op::Lte, _, Some(hi)) => (None, Some(*hi)),
        _ => (None, None),
    };
    let (lo, hi) = match f.col {
        Column::Ts => {
            let widen = match zone {
                Zone::Utc => 0,
                Zone::Named(_) => 1,
            };
            let day = |ms: i64, widen: i64| ms.div_euclid(MS_PER_DAY) + widen;
            (lo.map(|ms| day(ms, -widen)), hi.map(|ms| day(ms, widen)))
        }
        Column::Time(t) => {
            let day = |m: i64| m.div_euclid(bucket_len(TimeCol::Day));
            (lo.map(day), hi.map(|m| day(m + bucket_len(t) - 1)))
        }
        _ => return Vec::new(),
    };
    let mut preds = Vec::new();
    for (day, sym) in [(lo, ">="), (hi, "<=")] {
        // Days far outside any data are left out: they bound nothing, and could be
        // outside DuckDB's dates.
        if let Some(day) = day.filter(|d| d.abs() <= FAR_DAYS) {
            preds.push(format!("day {sym} DATE '1970-01-01' + CAST(? AS INTEGER)"));
            params.push(Param::Int(day));
        }
    }
    preds
}

/// Days from 1970 beyond which a bound is not carried over to `day`.
const FAR_DAYS: i64 = 1_000_000;

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

fn filter_sql(f: &Filter, params: &mut Vec<Param>) -> String {
    if f.col.kind() == ColumnKind::Price {
        if let Some(b) = price::bounds(f.op, &f.lits) {
            return price_sql(f.col.name(), b, params);
        }
    }
    let (lhs, ph) = match f.col {
        Column::AuctionId => ("auction_id".to_string(), "CAST(? AS UUID)"),
        c => (column_sql(c), "?"),
    };
    params.extend(f.lits.iter().map(param));
    match f.op {
        Op::Between => format!("{lhs} BETWEEN {ph} AND {ph}"),
        Op::In => format!("{lhs} IN ({})", vec![ph; f.lits.len()].join(", ")),
        op => {
            let sym = match op {
                Op::Eq => "=",
                Op::Neq => "<>",
                Op::Lt => "<",
                Op::Lte => "<=",
                Op::Gt => ">",
                Op::Gte => ">=",
                Op::Between | Op::In => unreachable!(),
            };
            format!("{lhs} {sym} {ph}")
        }
    }
}

/// A price filter's bounds on the price column `col` (`price::bounds`): compared with the
/// column as it is stored, so DuckDB checks them in its scan. The bounds are bound as the
/// decimals' text (a parameter compared with the column takes its type).
fn price_sql(col: &str, bounds: Bounds, params: &mut Vec<Param>) -> String {
    let mut bind = |n: i64| params.push(Param::Text(price::decimal_text(n)));
    match bounds {
        Bounds::AtLeast(lo) => {
            bind(lo);
            format!("{col} >= ?")
        }
        Bounds::AtMost(hi) => {
            bind(hi);
            format!("{col} <= ?")
        }
        Bounds::Between(lo, hi) => {
            bind(lo);
            bind(hi);
            format!("{col} BETWEEN ? AND ?")
        }
        Bounds::Nothing => "FALSE".to_string(),
    }
}

/// DuckDB SQL for a query (its local times in `zone`) with its bound parameters.
pub fn sql(query: &Query, zone: Zone) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let select: Vec<String> = query
        .select
        .iter()
        .map(|item| match item {
            Item::Column(c) => column_sql(*c),
            Item::Agg(a) => aggregate_sql(a),
        })
        .collect();
    let mut sql = format!("SELECT {} FROM events", select.join(", "));
    if !query.filters.is_empty() {
        let mut preds: Vec<String> = query
            .filters
            .iter()
            .map(|f| filter_sql(f, &mut params))
            .collect();
        preds.extend(
            query
                .filters
                .iter()
                .flat_map(|f| day_bounds_sql(f, zone, &mut params)),
        );
        sql.push_str(" WHERE ");
        sql.push_str(&preds.join(" AND "));
    }
    let aggregate = query.is_aggregate();
    if aggregate && !query.group_by.is_empty() {
        let groups: Vec<String> = query.group_by.iter().map(|c| column_sql(*c)).collect();
        sql.push_str(" GROUP BY ");
        sql.push_str(&groups.join(", "));
    }
    let mut order: Vec<String> = query
        .order_by
        .iter()
        .map(|k| {
            format!(
                "{} {} NULLS LAST",
                k.item + 1,
                if k.desc { "DESC" } else { "ASC" }
            )
        })
        .collect();
    if aggregate {
        order.extend(
            query
                .group_by
                .iter()
                .map(|c| format!("{} ASC NULLS LAST", column_sql(*c))),
        );
    } else {
        order.extend((1..=select.len()).map(|i| format!("{i} ASC NULLS LAST")));
    }
    if !order.is_empty() {
        sql.push_str(" ORDER BY ");
        sql.push_str(&order.join(", "));
    }
    if let Some(n) = query.limit {
        sql.push_str(" LIMIT ?");
        params.push(Param::Int(i64::try_from(n).unwrap_or(i64::MAX)));
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::default_specs;

    /// A filter on `ts` also bounds `day`: by the days of its bounds in UTC, by a day more
    /// each way in another zone, binding the days in the order of the text; far bounds
    /// and `<>` add nothing.
    #[test]
    fn ts_filters_bound_the_day_column() {
        let day = 19_875_i64;
        let at = |ms: i64| day * MS_PER_DAY + ms;
        // Each filter, and its day bounds in UTC (a lower bound is widened down, an upper
        // one up, in another zone).
        let cases = [
            (
                format!(r#"["between", [{}, {}]]"#, at(30_000), at(3_630_000)),
                vec![(day, -1), (day, 1)],
            ),
            (format!(r#"["gte", {}]"#, at(-1)), vec![(day - 1, -1)]),
            (format!(r#"["lt", {}]"#, at(0)), vec![(day, 1)]),
            (
                format!(r#"["in", [{}, {}]]"#, at(5 * MS_PER_DAY), at(0)),
                vec![(day, -1), (day + 5, 1)],
            ),
            (format!(r#"["neq", {}]"#, at(0)), vec![]),
            (r#"["gte", -9000000000000000000]"#.to_string(), vec![]),
        ];
        let new_york = Zone::parse("America/New_York").unwrap();
        for (filter, days) in cases {
            let (op, val): (String, serde_json::Value) = serde_json::from_str(&filter).unwrap();
            let q = Query::parse(&serde_json::json!({
                "select": [{"COUNT": "*"}],
                "where": [{"col": "ts", "op": op, "val": val}, {"col": "type", "op": "eq", "val": "click"}],
            }))
            .unwrap();
            for (zone, widen) in [(Zone::Utc, 0), (new_york, 1)] {
                let (text, params) = sql(&q, zone);
                assert_eq!(text.matches("day ").count(), days.len(), "{text}");
                let bound: Vec<Param> = (days.iter())
                    .map(|(d, dir)| Param::Int(d + dir * widen))
                    .collect();
                assert_eq!(params[params.len() - bound.len()..], bound, "{filter}");
            }
        }
    }

    /// A filter on a time column bounds the `day` column around every row it takes, for
    /// every bucket, comparison and literal (on a bucket's start or not).
    #[test]
    fn time_filters_bound_the_day_column_around_every_row_they_take() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(43);
        let ops = [
            Op::Eq,
            Op::Neq,
            Op::Gt,
            Op::Gte,
            Op::Lt,
            Op::Lte,
            Op::Between,
            Op::In,
        ];
        for _ in 0..400 {
            let t =
                [TimeCol::Minute, TimeCol::Hour, TimeCol::Day, TimeCol::Week][rng.gen_range(0..4)];
            let op = ops[rng.gen_range(0..ops.len())];
            let base = 28_000_000 + rng.gen_range(0..100_000);
            let mut values: Vec<i32> = (0..3)
                .map(|_| match rng.gen_bool(0.5) {
                    true => t.bucket(base + rng.gen_range(0..30_000)),
                    false => base + rng.gen_range(0..30_000),
                })
                .collect();
            values.sort_unstable();
            let lits: Vec<Lit> = match op {
                Op::Between => values[..2].iter().map(|m| Lit::Time(*m)).collect(),
                Op::In => values.iter().map(|m| Lit::Time(*m)).collect(),
                _ => vec![Lit::Time(values[0])],
            };
            let f = Filter {
                col: Column::Time(t),
                op,
                lits,
            };
            let mut params = Vec::new();
            let preds = day_bounds_sql(&f, Zone::Utc, &mut params);
            let (mut lo, mut hi) = (i64::MIN, i64::MAX);
            for (pred, param) in preds.iter().zip(&params) {
                let Param::Int(day) = param else {
                    panic!("{param:?}")
                };
                match pred.contains(">=") {
                    true => lo = *day,
                    false => hi = *day,
                }
            }
            for x in base - 20_000..base + 50_000 {
                let b = t.bucket(x);
                let v = &values;
                let takes = match op {
                    Op::Eq => b == v[0],
                    Op::Neq => b != v[0],
                    Op::Gt => b > v[0],
                    Op::Gte => b >= v[0],
                    Op::Lt => b < v[0],
                    Op::Lte => b <= v[0],
                    Op::Between => b >= v[0] && b <= v[1],
                    Op::In => v.contains(&b),
                };
                let day = i64::from(x.div_euclid(1440));
                if takes {
                    assert!(lo <= day && day <= hi, "{t:?} {op:?} {v:?}: {x} on {day}");
                }
            }
        }
    }

    /// The default set with row counts of the order seen at bench scale.
    fn catalog() -> Vec<CatalogEntry> {
        let rows = [
            1_400_000, 300_000, 17_000, 1_200_000, 5_000_000, 6_600, 40_000, 30_000, 700_000,
        ];
        default_specs()
            .into_iter()
            .zip(rows)
            .map(|(spec, rows)| CatalogEntry {
                spec,
                rows,
                extremes_pending: false,
            })
            .collect()
    }

    fn route(q: &str) -> String {
        route_in(q, Zone::Utc).1
    }

    /// The filters `plan_in` runs `q` with in `zone`, and its route.
    fn route_in(q: &str, zone: Zone) -> (Vec<Filter>, String) {
        let cat = catalog();
        let (query, plan, _) = plan_in(Query::parse_text(q).unwrap(), &cat, zone);
        let route = match plan.route {
            Route::Rollup(i) => cat[i].spec.name(),
            Route::DuckDb { .. } => "duckdb".into(),
        };
        (query.filters, route)
    }

    /// A `ts` span of whole buckets is a span of a time column when a rollup then answers
    /// it (in UTC only); any other `ts` filter stays with DuckDB.
    #[test]
    fn ts_spans_of_whole_buckets_go_to_rollups() {
        let q = |lo: i64, hi: i64| {
            format!(
                r#"{{"select":["country",{{"COUNT":"*"}},{{"SUM":"bid_price"}}],
                    "where":[{{"col":"ts","op":"between","val":[{lo},{hi}]}}],
                    "group_by":["country"]}}"#
            )
        };
        let hour = 1_717_243_200_000; // 2024-06-01 12:00 UTC
        let bucket = |t: TimeCol, lo: i32, hi: i32| Filter {
            col: Column::Time(t),
            op: Op::Between,
            lits: vec![Lit::Time(lo), Lit::Time(hi)],
        };
        let m = (hour / 60_000) as i32;
        let (filters, r) = route_in(&q(hour, hour + 3_600_000 - 1), Zone::Utc);
        assert_eq!(r, "hour_type_country");
        assert_eq!(filters, vec![bucket(TimeCol::Hour, m, m)]);
        let day = hour - 12 * 3_600_000;
        let (filters, r) = route_in(&q(day, day + 2 * 86_400_000 - 1), Zone::Utc);
        assert_eq!(r, "day_type_country");
        assert_eq!(filters, vec![bucket(TimeCol::Day, m - 720, m + 720)]);
        let q5 = r#"{"select":[{"COUNT":"*"}],"where":[{"col":"ts","op":"between","val":[1717243200000,1717243499999]},{"col":"type","op":"eq","val":"click"}]}"#;
        assert_eq!(route_in(q5, Zone::Utc).1, "minute_type");
        // Not whole minutes, or whole minutes that no rollup with countries holds.
        for (lo, hi) in [
            (hour, hour + 3_600_000),
            (hour + 1, hour + 3_600_000 - 1),
            (hour, hour + 59_999),
        ] {
            let (filters, r) = route_in(&q(lo, hi), Zone::Utc);
            assert_eq!(r, "duckdb", "{lo} {hi}");
            assert_eq!(filters[0].col, Column::Ts);
        }
        let paris = Zone::parse("Europe/Paris").unwrap();
        assert_eq!(route_in(&q(hour, hour + 3_599_999), paris).1, "duckdb");
    }

    #[test]
    fn reference_queries_use_rollups() {
        assert_eq!(
            route(
                r#"{"select":["day",{"SUM":"bid_price"}],"where":[{"col":"type","op":"eq","val":"impression"}],"group_by":["day"]}"#
            ),
            "day_type_country"
        );
        assert_eq!(
            route(
                r#"{"select":["publisher_id",{"SUM":"bid_price"}],"where":[{"col":"type","op":"eq","val":"impression"},{"col":"country","op":"eq","val":"JP"},{"col":"day","op":"between","val":["2024-10-20","2024-10-23"]}],"group_by":["publisher_id"]}"#
            ),
            "day_type_country_publisher"
        );
        assert_eq!(
            route(
                r#"{"select":["country",{"AVG":"total_price"}],"where":[{"col":"type","op":"eq","val":"purchase"}],"group_by":["country"],"order_by":[{"col":"AVG(total_price)","dir":"desc"}]}"#
            ),
            "day_type_country"
        );
        assert_eq!(
            route(
                r#"{"select":["advertiser_id","type",{"COUNT":"*"}],"group_by":["advertiser_id","type"],"order_by":[{"col":"COUNT(*)","dir":"desc"}]}"#
            ),
            "all_type_advertiser"
        );
        assert_eq!(
            route(
                r#"{"select":["minute",{"SUM":"bid_price"}],"where":[{"col":"type","op":"eq","val":"impression"},{"col":"day","op":"eq","val":"2024-06-01"}],"group_by":["minute"],"order_by":[{"col":"minute","dir":"asc"}]}"#
            ),
            "minute_type"
        );
    }

    #[test]
    fn uncovered_queries_go_to_duckdb_with_bound_values() {
        let q = Query::parse_text(
            r#"{"select":["user_id",{"COUNT":"*"}],"where":[{"col":"country","op":"in","val":["US","JP"]}],"group_by":["user_id"],"limit":5}"#,
        )
        .unwrap();
        let p = plan(&q, &catalog());
        let Route::DuckDb { sql, params } = p.route else {
            panic!("expected duckdb")
        };
        assert!(!sql.contains("US") && !sql.contains("JP"));
        assert_eq!(
            params,
            vec![
                Param::Text("US".into()),
                Param::Text("JP".into()),
                Param::Int(5)
            ]
        );
        assert_eq!(route(r#"{"select":["ts"],"limit":3}"#), "duckdb");
        assert_eq!(
            route(r#"{"select":[{"MIN":"advertiser_id"}],"group_by":["type"]}"#),
            "duckdb"
        );
    }

    #[test]
    fn each_rollup_says_why_it_cannot_answer() {
        let q = Query::parse_text(
            r#"{"select":["hour","advertiser_id",{"COUNT":"*"}],"group_by":["hour","advertiser_id"]}"#,
        )
        .unwrap();
        let cat = catalog();
        let (p, verdicts) = plan_checked(&q, &cat, Zone::Utc);
        assert!(matches!(p.route, Route::DuckDb { .. }));
        let by_name = |n: &str| {
            let i = cat.iter().position(|e| e.spec.name() == n).unwrap();
            verdicts[i].clone().unwrap_err()
        };
        assert_eq!(
            by_name("day_type_advertiser"),
            Rejection::Grain {
                needs: TimeCol::Hour,
                keeps: Some(TimeCol::Day)
            }
        );
        assert_eq!(
            by_name("hour_type_country"),
            Rejection::MissingColumn(Column::AdvertiserId)
        );
        let raw = Query::parse_text(r#"{"select":["ts"],"limit":1}"#).unwrap();
        assert_eq!(check(&cat[0].spec, &raw), Err(Rejection::RawRows));
        let min = Query::parse_text(r#"{"select":[{"MIN":"advertiser_id"}]}"#).unwrap();
        let e = check(&cat[5].spec, &min).unwrap_err();
        assert!(matches!(e, Rejection::Aggregate(_)));
        assert!(e.to_string().contains("MIN(advertiser_id)"), "{e}");
    }

    #[test]
    fn time_ranges_bound_rows() {
        let q = Query::parse_text(
            r#"{"select":[{"COUNT":"*"}],"where":[{"col":"day","op":"between","val":["1970-01-02","1970-01-03"]},{"col":"hour","op":"lt","val":"1970-01-03 01:00:00"}]}"#,
        )
        .unwrap();
        assert_eq!(time_range(&q.filters), (1440, 2 * 1440 + 60 + 58));
    }
}
