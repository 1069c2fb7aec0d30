//! Executing a plan: aggregating rollup rows column by column, or running SQL on the
//! DuckDB table, into typed result columns.
//!
//! Over a rollup: the filters are compiled against the keys (`filter`), each matching
//! row's group is found from its ranked group key (the previous row's group when the key
//! repeats, else a hash lookup), row counts are summed from the count column and the
//! price measures only where a selected aggregate needs them, read off their sparse
//! columns. Groups are ordered by typed keys (ranks for the group columns: a text column
//! by its text's rank, NULL last) and only the first `limit` are sorted fully.

use std::cmp::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::daemon::limits::QueryBudget;
use crate::error::{Error, Result};
use crate::model::schema::{price_to_f64, Column, TimeCol, EVENT_TYPES, PRICE_UNIT};
use crate::query::filter::KeyFilter;
use crate::query::output::{Data, ResultSet, Rows};
use crate::query::plan::{Plan, Route};
use crate::query::request::{Aggregate, Func, Item, Query};
use crate::rollup::{country_names, Key, Measure, RollupRows, NULL_ID, NULL_TIME};
use crate::storage::table::View;

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
        (Route::Rollup(_), Some(rows)) => aggregate_rollup(query, plan.time_range, rows, budget)?,
        (Route::DuckDb { sql, params }, _) => {
            let times: Vec<Option<TimeCol>> = query.select.iter().map(time_shown).collect();
            view.query(sql, params, &plan.types, &times, budget)?
        }
        (Route::Rollup(_), None) => {
            return Err(Error::Internal("rollup route without rollup rows".into()))
        }
    };
    Ok(ResultSet {
        columns: query.labels(),
        types: plan.types.clone(),
        rows,
    })
}

/// The time column whose buckets a select item shows (DuckDB answers them as local
/// minutes).
fn time_shown(item: &Item) -> Option<TimeCol> {
    match item {
        Item::Column(Column::Time(t))
        | Item::Agg(Aggregate {
            func: Func::Min | Func::Max,
            arg: Some(Column::Time(t)),
        }) => Some(*t),
        _ => None,
    }
}

/// Most group-by columns a rollup route handles (4 time columns + 4 dimensions).
const MAX_GROUP: usize = 8;

/// A group's key: the rank of each group-by column's value (see `Ranker`), in group-by
/// order; ranks order as the values do in the answer, NULL last.
type GroupKey = [u64; MAX_GROUP];

/// Ranks of a rollup key's columns, and the way back to the values.
struct Ranker {
    /// Type and country codes → the rank of their text (NULL last).
    type_rank: Vec<u64>,
    country_rank: Vec<u64>,
    /// Ranks → codes.
    type_code: Vec<u16>,
    country_code: Vec<u16>,
    types: Arc<[String]>,
    countries: Arc<[String]>,
}

impl Ranker {
    fn new(countries: Vec<String>) -> Ranker {
        let types: Vec<String> = std::iter::once(String::new())
            .chain(EVENT_TYPES.iter().map(|s| s.to_string()))
            .collect();
        let (type_rank, type_code) = ranks(&types);
        let (country_rank, country_code) = ranks(&countries);
        Ranker {
            type_rank,
            country_rank,
            type_code,
            country_code,
            types: types.into(),
            countries: countries.into(),
        }
    }

    #[inline]
    fn rank(&self, c: Column, k: &Key) -> u64 {
        match c {
            Column::Time(_) if k.time == NULL_TIME => u64::MAX,
            Column::Time(t) => (i64::from(t.bucket(k.time)) - i64::from(i32::MIN)) as u64,
            Column::Type => self.type_rank[k.typ as usize],
            Column::Country => self.country_rank[k.country as usize],
            Column::AdvertiserId => id_rank(k.adv),
            Column::PublisherId => id_rank(k.publ),
            c => unreachable!("{c} is not a rollup column"),
        }
    }

    /// The result column of group-by column `c` from its ranks.
    fn column(&self, c: Column, ranks: impl Iterator<Item = u64>) -> Data {
        let code = |table: &[u16], r: u64| if r == u64::MAX { 0 } else { table[r as usize] };
        match c {
            Column::Time(t) => Data::Time(
                t,
                ranks
                    .map(|r| match r {
                        u64::MAX => NULL_TIME,
                        r => (r as i64 + i64::from(i32::MIN)) as i32,
                    })
                    .collect(),
            ),
            Column::Type => Data::Code(
                self.types.clone(),
                ranks.map(|r| code(&self.type_code, r)).collect(),
            ),
            Column::Country => Data::Code(
                self.countries.clone(),
                ranks.map(|r| code(&self.country_code, r)).collect(),
            ),
            _ => Data::Int(
                ranks
                    .map(|r| match (r ^ (1 << 63)) as i64 {
                        NULL_ID => None,
                        v => Some(v),
                    })
                    .collect(),
            ),
        }
    }
}

/// Ids rank as signed integers; `NULL_ID` (the largest) ranks last.
#[inline]
fn id_rank(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Per code the rank of its text among the non-NULL texts (code 0, NULL, ranks last),
/// and per rank its code.
fn ranks(names: &[String]) -> (Vec<u64>, Vec<u16>) {
    let mut codes: Vec<u16> = (1..names.len() as u16).collect();
    codes.sort_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
    let mut rank = vec![u64::MAX; names.len()];
    for (r, c) in codes.iter().enumerate() {
        rank[*c as usize] = r as u64;
    }
    (rank, codes)
}

/// Running aggregates of the groups, column by column.
#[derive(Default)]
struct Accs {
    keys: Vec<GroupKey>,
    rows: Vec<u64>,
    /// Per price (bid, total), when an aggregate reads it.
    prices: [Vec<Measure>; 2],
    /// Per counted key column (`COUNT(type)`…), the rows where it is not NULL.
    non_null: Vec<Vec<u64>>,
}

impl Accs {
    fn push(&mut self, key: GroupKey, prices: [bool; 2], counted: usize) -> u32 {
        self.keys.push(key);
        self.rows.push(0);
        for (p, wanted) in self.prices.iter_mut().zip(prices) {
            if wanted {
                p.push(Measure::default());
            }
        }
        debug_assert_eq!(self.non_null.len(), counted);
        for n in &mut self.non_null {
            n.push(0);
        }
        (self.keys.len() - 1) as u32
    }
}

/// What the select list reads of the rollup.
struct Needs {
    /// Whether the bid and the total measures are read.
    prices: [bool; 2],
    /// Key columns counted by `COUNT(col)`.
    counted: Vec<Column>,
}

impl Needs {
    fn of(query: &Query) -> Needs {
        let mut needs = Needs {
            prices: [false; 2],
            counted: Vec::new(),
        };
        for item in &query.select {
            match item {
                Item::Agg(Aggregate {
                    arg: Some(Column::BidPrice),
                    ..
                }) => needs.prices[0] = true,
                Item::Agg(Aggregate {
                    arg: Some(Column::TotalPrice),
                    ..
                }) => needs.prices[1] = true,
                Item::Agg(Aggregate { arg: Some(c), .. }) if !needs.counted.contains(c) => {
                    needs.counted.push(*c)
                }
                _ => {}
            }
        }
        needs
    }
}

/// Rows between two checks of the cancel while scanning.
const CANCEL_CHECK_ROWS: usize = 1 << 16;

/// Aggregates rollup rows into the query's result (ordered and limited); `too_large`
/// when more groups than the row cap would be answered.
fn aggregate_rollup(
    query: &Query,
    range: (i32, i32),
    rollup: &RollupRows,
    budget: &QueryBudget,
) -> Result<Rows> {
    let ranker = Ranker::new(country_names());
    let filter = KeyFilter::compile(&query.filters, &ranker.countries);
    // All-time rollups (time 0) never get time filters, so their range is everything.
    let rows = if range.0 > range.1 {
        0..0
    } else {
        rollup.time_range(range.0, range.1)
    };
    let needs = Needs::of(query);
    let mut accs = scan(query, &filter, &ranker, &needs, rollup, rows, budget)?;
    if query.group_by.is_empty() && accs.keys.is_empty() {
        accs.push([0; MAX_GROUP], needs.prices, needs.counted.len());
    }
    budget.limits.check_rows(accs.keys.len(), query.limit)?;
    budget.cancel.check()?;
    let aggs: Vec<Option<Data>> = query
        .select
        .iter()
        .map(|item| match item {
            Item::Agg(a) => Some(aggregate_column(a, &accs, &needs)),
            Item::Column(_) => None,
        })
        .collect();
    let order = order(query, &accs.keys, &aggs);
    let columns = query
        .select
        .iter()
        .zip(aggs)
        .map(|(item, agg)| match (item, agg) {
            (Item::Column(c), _) => {
                let slot = query
                    .group_by
                    .iter()
                    .position(|g| g == c)
                    .expect("validated");
                ranker.column(*c, order.iter().map(|&g| accs.keys[g as usize][slot]))
            }
            (Item::Agg(_), Some(data)) => data.gather(&order),
            (Item::Agg(_), None) => unreachable!("every aggregate has its column"),
        })
        .collect();
    Ok(Rows::new(columns))
}

/// Groups the matching rows of `rows` and sums their counts and the measures `needs`.
fn scan(
    query: &Query,
    filter: &KeyFilter,
    ranker: &Ranker,
    needs: &Needs,
    rollup: &RollupRows,
    rows: std::ops::Range<usize>,
    budget: &QueryBudget,
) -> Result<Accs> {
    let (keys, counts, prices) = rollup.columns();
    let group = &query.group_by;
    let mut accs = Accs {
        non_null: vec![Vec::new(); needs.counted.len()],
        ..Accs::default()
    };
    let mut index: FxHashMap<GroupKey, u32> = FxHashMap::default();
    let mut last: Option<(GroupKey, u32)> = None;
    let any_price = needs.prices.iter().any(|p| *p);
    // The group of each row of the range (u32::MAX: filtered out), for the measures.
    let mut row_group: Vec<u32> = Vec::new();
    if any_price {
        row_group.resize(rows.len(), u32::MAX);
    }
    for (n, i) in rows.clone().enumerate() {
        if n % CANCEL_CHECK_ROWS == 0 {
            budget.cancel.check()?;
        }
        let k = &keys[i];
        if !filter.matches(k) {
            continue;
        }
        let mut key = [0u64; MAX_GROUP];
        for (slot, c) in key.iter_mut().zip(group) {
            *slot = ranker.rank(*c, k);
        }
        let g = match last {
            Some((prev, g)) if prev == key => g,
            _ => *index
                .entry(key)
                .or_insert_with(|| accs.push(key, needs.prices, needs.counted.len())),
        };
        last = Some((key, g));
        accs.rows[g as usize] += counts[i];
        for (c, non_null) in needs.counted.iter().zip(&mut accs.non_null) {
            if !is_null(*c, k) {
                non_null[g as usize] += counts[i];
            }
        }
        if any_price {
            row_group[n] = g;
        }
    }
    for ((at, values), (acc, wanted)) in prices.iter().zip(accs.prices.iter_mut().zip(needs.prices))
    {
        if !wanted {
            continue;
        }
        let from = at.partition_point(|&a| (a as usize) < rows.start);
        let to = at.partition_point(|&a| (a as usize) < rows.end);
        for (a, m) in at[from..to].iter().zip(&values[from..to]) {
            let g = row_group[*a as usize - rows.start];
            if g != u32::MAX {
                acc[g as usize].merge(m);
            }
        }
    }
    Ok(accs)
}

fn is_null(c: Column, k: &Key) -> bool {
    match c {
        Column::Time(_) => k.time == NULL_TIME,
        Column::Type => k.typ == 0,
        Column::Country => k.country == 0,
        Column::AdvertiserId => k.adv == NULL_ID,
        Column::PublisherId => k.publ == NULL_ID,
        c => unreachable!("COUNT({c}) is not answered from rollups"),
    }
}

/// The column of aggregate `a` over the groups, in group order.
fn aggregate_column(a: &Aggregate, accs: &Accs, needs: &Needs) -> Data {
    let count = |v: &[u64]| Data::Int(v.iter().map(|n| Some(*n as i64)).collect());
    let m = match a.arg {
        None => return count(&accs.rows),
        Some(Column::BidPrice) => &accs.prices[0],
        Some(Column::TotalPrice) => &accs.prices[1],
        Some(c) => {
            let i = needs.counted.iter().position(|x| *x == c).expect("counted");
            return count(&accs.non_null[i]);
        }
    };
    let of =
        |f: fn(&Measure) -> f64| Data::Float(m.iter().map(|m| (m.n > 0).then(|| f(m))).collect());
    match a.func {
        Func::Count => Data::Int(m.iter().map(|m| Some(m.n as i64)).collect()),
        Func::Sum => of(|m| price_to_f64(m.sum)),
        Func::Avg => of(|m| m.sum as f64 / m.n as f64 / PRICE_UNIT),
        Func::Min => of(|m| price_to_f64(m.min.into())),
        Func::Max => of(|m| price_to_f64(m.max.into())),
    }
}

/// The answer's groups in order (order_by keys, then the group-by columns ascending,
/// NULLs last), cut to the query's limit. Group keys are unique, so the order is total.
fn order(query: &Query, keys: &[GroupKey], aggs: &[Option<Data>]) -> Vec<u32> {
    let n = keys.len();
    let limit = query.limit.map_or(n, |l| l.min(n as u64) as usize);
    let mut order: Vec<u32> = (0..n as u32).collect();
    if query.order_by.is_empty() {
        if !keys.is_sorted() {
            top(&mut order, limit, |a, b| {
                keys[*a as usize].cmp(&keys[*b as usize])
            });
        }
        order.truncate(limit);
        return order;
    }
    let group = &query.group_by;
    // The first order key as one integer per group, so most comparisons are one compare.
    let first = query.order_by[0];
    let lead: Vec<u128> = match (&query.select[first.item], &aggs[first.item]) {
        (_, Some(data)) => (0..n).map(|g| data.sort_key(g, first.desc)).collect(),
        (Item::Column(c), None) => {
            let slot = group.iter().position(|g| g == c).expect("validated");
            keys.iter().map(|k| rank_key(k[slot], first.desc)).collect()
        }
        (Item::Agg(_), None) => unreachable!("every aggregate has its column"),
    };
    let cmp = |a: &u32, b: &u32| {
        let (x, y) = (*a as usize, *b as usize);
        let o = lead[x].cmp(&lead[y]);
        if o != Ordering::Equal {
            return o;
        }
        for k in &query.order_by {
            let o = match (&query.select[k.item], &aggs[k.item]) {
                (_, Some(data)) => data.compare(x, y, k.desc),
                (Item::Column(c), None) => {
                    let slot = group.iter().position(|g| g == c).expect("validated");
                    rank_order(keys[x][slot], keys[y][slot], k.desc)
                }
                (Item::Agg(_), None) => unreachable!("every aggregate has its column"),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        keys[x].cmp(&keys[y])
    };
    top(&mut order, limit, cmp);
    order.truncate(limit);
    order
}

/// A rank as an integer ordering as `rank_order` does.
fn rank_key(r: u64, desc: bool) -> u128 {
    match r {
        u64::MAX => u128::MAX,
        r if desc => u128::from(!r),
        r => u128::from(r),
    }
}

/// Ranks in a direction, the NULL rank (`u64::MAX`) last either way.
fn rank_order(a: u64, b: u64, desc: bool) -> Ordering {
    match (a == u64::MAX, b == u64::MAX) {
        (false, false) if desc => b.cmp(&a),
        _ => a.cmp(&b),
    }
}

/// Puts the first `k` of `v` in order at its front.
fn top(v: &mut [u32], k: usize, cmp: impl Fn(&u32, &u32) -> Ordering) {
    if k == 0 {
        return;
    }
    if k < v.len() / 2 {
        v.select_nth_unstable_by(k - 1, &cmp);
        v[..k].sort_unstable_by(cmp);
    } else {
        v.sort_unstable_by(cmp);
    }
}
