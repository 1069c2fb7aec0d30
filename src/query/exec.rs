//! Executing a plan: aggregating rollup rows, or running SQL on the DuckDB table, then
//! ordering, limiting and formatting the result.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;

use crate::error::Result;
use crate::limits::{QueryBudget, QueryLimits};
use crate::query::output::{ResultSet, Value};
use crate::query::plan::{Plan, Route};
use crate::query::request::{Aggregate, Filter, Func, Item, Lit, Op, Query};
use crate::rollup::{country_name, country_names, Agg, Key, RollupRows, NULL_ID, NULL_TIME};
use crate::schema::{price_to_f64, type_name, Column, TimeCol, EVENT_TYPES};
use crate::table::View;

/// Answers `query` along `plan` from `rollup` (the planned rollup's rows, when the
/// route is a rollup) or from the DuckDB `view` of the same generation, within `budget`
/// (`too_large` past its row cap; its cancel stops the query).
pub fn execute(
    query: &Query,
    plan: &Plan,
    rollup: Option<&RollupRows>,
    view: &View,
    budget: &QueryBudget,
) -> Result<ResultSet> {
    let rows = match (&plan.route, rollup) {
        (Route::Rollup(_), Some(rows)) => {
            aggregate_rollup(query, plan.time_range, rows, &budget.limits)?
        }
        (Route::DuckDb { sql, params }, _) => {
            let mut rows = view.query(sql, params, budget)?;
            format_times(query, &mut rows);
            rows
        }
        (Route::Rollup(_), None) => {
            return Err(crate::error::Error::Internal(
                "rollup route without rollup rows".into(),
            ))
        }
    };
    Ok(ResultSet {
        columns: query.labels(),
        types: plan.types.clone(),
        rows,
    })
}

/// DuckDB returns time columns as local minutes; turn them into canonical text.
fn format_times(query: &Query, rows: &mut [Vec<Value>]) {
    for (i, item) in query.select.iter().enumerate() {
        let t = match item {
            Item::Column(Column::Time(t)) => *t,
            Item::Agg(Aggregate {
                func: Func::Min | Func::Max,
                arg: Some(Column::Time(t)),
            }) => *t,
            _ => continue,
        };
        for row in rows.iter_mut() {
            if let Value::Int(m) = row[i] {
                row[i] = Value::Text(t.format(m as i32));
            }
        }
    }
}

/// A compiled predicate on rollup keys.
enum Pred {
    Time(TimeCol, Op, Vec<i32>),
    /// Truth per type code (index 0 = NULL, always false).
    Type([bool; 5]),
    /// Truth per country code.
    Country(Vec<bool>),
    Adv(Op, Vec<i64>),
    Publ(Op, Vec<i64>),
}

impl Pred {
    fn compile(f: &Filter) -> Pred {
        let ints = || -> Vec<i64> {
            f.lits
                .iter()
                .map(|l| match l {
                    Lit::Int(i) => *i,
                    _ => unreachable!("id filters carry integers"),
                })
                .collect()
        };
        let texts: Vec<&str> = f
            .lits
            .iter()
            .filter_map(|l| match l {
                Lit::Text(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        match f.col {
            Column::Time(t) => Pred::Time(
                t,
                f.op,
                in_set(
                    f.op,
                    f.lits
                        .iter()
                        .map(|l| match l {
                            Lit::Time(m) => *m,
                            _ => unreachable!("time filters carry times"),
                        })
                        .collect(),
                ),
            ),
            Column::Type => {
                let texts = in_set(f.op, texts);
                let mut table = [false; 5];
                for (i, name) in EVENT_TYPES.iter().enumerate() {
                    table[i + 1] = f.op.eval(name, &texts);
                }
                Pred::Type(table)
            }
            Column::Country => {
                let texts = in_set(f.op, texts);
                Pred::Country(
                    country_names()
                        .iter()
                        .enumerate()
                        .map(|(code, name)| code != 0 && f.op.eval(&name.as_str(), &texts))
                        .collect(),
                )
            }
            Column::AdvertiserId => Pred::Adv(f.op, in_set(f.op, ints())),
            Column::PublisherId => Pred::Publ(f.op, in_set(f.op, ints())),
            c => unreachable!("planner never routes a filter on {c} to a rollup"),
        }
    }

    #[inline]
    fn matches(&self, k: &Key) -> bool {
        match self {
            Pred::Time(t, op, lits) => k.time != NULL_TIME && op.eval(&t.bucket(k.time), lits),
            Pred::Type(table) => table[k.typ as usize],
            Pred::Country(table) => table.get(k.country as usize).copied().unwrap_or(false),
            Pred::Adv(op, lits) => k.adv != NULL_ID && op.eval(&k.adv, lits),
            Pred::Publ(op, lits) => k.publ != NULL_ID && op.eval(&k.publ, lits),
        }
    }
}

/// The literals of `op` as `Op::eval` takes them: an `in` list sorted, without repeats.
fn in_set<T: Ord>(op: Op, mut lits: Vec<T>) -> Vec<T> {
    if op == Op::In {
        lits.sort_unstable();
        lits.dedup();
    }
    lits
}

/// Most group-by columns a rollup route handles (4 time columns + 4 dimensions).
const MAX_GROUP: usize = 8;

/// The value of a group-by column in a key; NULL as the key's sentinel.
#[inline]
fn group_value(c: Column, k: &Key) -> i64 {
    match c {
        Column::Time(_) if k.time == NULL_TIME => NULL_TIME as i64,
        Column::Time(t) => t.bucket(k.time) as i64,
        Column::Type => k.typ as i64,
        Column::Country => k.country as i64,
        Column::AdvertiserId => k.adv,
        Column::PublisherId => k.publ,
        c => unreachable!("{c} is not a rollup column"),
    }
}

fn decode(c: Column, v: i64) -> Value {
    match c {
        Column::Time(_) if v == NULL_TIME as i64 => Value::Null,
        Column::Time(t) => Value::Text(t.format(v as i32)),
        Column::Type | Column::Country if v == 0 => Value::Null,
        Column::Type => Value::Text(type_name(v as u8).to_string()),
        Column::Country => Value::Text(country_name(v as u16)),
        _ if v == NULL_ID => Value::Null,
        _ => Value::Int(v.into()),
    }
}

/// Running aggregates of one group: the merged rollup aggregates plus, per countable
/// key column (time, type, country, advertiser, publisher), rows where it is not NULL.
#[derive(Default, Clone, Copy)]
struct Acc {
    agg: Agg,
    non_null: [u64; 5],
}

fn countable_slot(c: Column) -> usize {
    match c {
        Column::Time(_) => 0,
        Column::Type => 1,
        Column::Country => 2,
        Column::AdvertiserId => 3,
        Column::PublisherId => 4,
        c => unreachable!("COUNT({c}) is not answered from rollups"),
    }
}

fn aggregate_value(a: &Aggregate, acc: &Acc) -> Value {
    let m = match a.arg {
        None => return Value::Int(acc.agg.rows.into()),
        Some(Column::BidPrice) => &acc.agg.bid,
        Some(Column::TotalPrice) => &acc.agg.total,
        Some(c) => return Value::Int(acc.non_null[countable_slot(c)].into()),
    };
    match a.func {
        Func::Count => Value::Int(m.n.into()),
        _ if m.n == 0 => Value::Null,
        Func::Sum => Value::Float(price_to_f64(m.sum)),
        Func::Avg => Value::Float(m.sum as f64 / m.n as f64 / crate::schema::PRICE_UNIT),
        Func::Min => Value::Float(price_to_f64(m.min.into())),
        Func::Max => Value::Float(price_to_f64(m.max.into())),
    }
}

/// Aggregates rollup rows into the query's result rows (ordered and limited); `too_large`
/// when more groups than the row cap would be answered.
fn aggregate_rollup(
    query: &Query,
    range: (i32, i32),
    rollup: &RollupRows,
    limits: &QueryLimits,
) -> Result<Vec<Vec<Value>>> {
    let preds: Vec<Pred> = query.filters.iter().map(Pred::compile).collect();
    // All-time rollups (time 0) never get time filters, so their range is everything.
    let rows = if range.0 > range.1 {
        0..0
    } else {
        rollup.time_range(range.0, range.1)
    };
    let group = &query.group_by;
    debug_assert!(group.len() <= MAX_GROUP);
    let counted: Vec<Column> = query
        .select
        .iter()
        .filter_map(|i| match i {
            Item::Agg(Aggregate {
                func: Func::Count,
                arg: Some(c),
            }) if !matches!(c, Column::BidPrice | Column::TotalPrice) => Some(*c),
            _ => None,
        })
        .collect();
    let mut groups: FxHashMap<[i64; MAX_GROUP], Acc> = FxHashMap::default();
    for (k, agg) in rollup.range(rows) {
        if !preds.iter().all(|p| p.matches(&k)) {
            continue;
        }
        let mut g = [0i64; MAX_GROUP];
        for (slot, c) in g.iter_mut().zip(group) {
            *slot = group_value(*c, &k);
        }
        let acc = groups.entry(g).or_default();
        acc.agg.merge(&agg);
        for c in &counted {
            if decode_is_some(*c, &k) {
                acc.non_null[countable_slot(*c)] += agg.rows;
            }
        }
    }
    if group.is_empty() && groups.is_empty() {
        groups.insert([0; MAX_GROUP], Acc::default());
    }
    limits.check_rows(groups.len(), query.limit)?;
    let mut out: Vec<(Vec<Value>, Vec<Value>)> = groups
        .into_iter()
        .map(|(g, acc)| {
            let keys: Vec<Value> = group.iter().zip(g).map(|(c, v)| decode(*c, v)).collect();
            let row = query
                .select
                .iter()
                .map(|item| match item {
                    Item::Column(c) => {
                        keys[group.iter().position(|x| x == c).expect("validated")].clone()
                    }
                    Item::Agg(a) => aggregate_value(a, &acc),
                })
                .collect();
            (row, keys)
        })
        .collect();
    // Group keys are unique, so the order is total and an unstable sort is exact.
    out.sort_unstable_by(|a, b| compare(query, a, b));
    if let Some(n) = query.limit {
        out.truncate(n as usize);
    }
    Ok(out.into_iter().map(|(row, _)| row).collect())
}

fn decode_is_some(c: Column, k: &Key) -> bool {
    match c {
        Column::Time(_) => k.time != NULL_TIME,
        Column::Type => k.typ != 0,
        Column::Country => k.country != 0,
        Column::AdvertiserId => k.adv != NULL_ID,
        Column::PublisherId => k.publ != NULL_ID,
        _ => false,
    }
}

/// Result order: order_by keys, then group-by columns ascending; NULLs last.
fn compare(query: &Query, a: &(Vec<Value>, Vec<Value>), b: &(Vec<Value>, Vec<Value>)) -> Ordering {
    for k in &query.order_by {
        let o = a.0[k.item].order(&b.0[k.item], k.desc);
        if o != Ordering::Equal {
            return o;
        }
    }
    for (x, y) in a.1.iter().zip(&b.1) {
        let o = x.order(y, false);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}
