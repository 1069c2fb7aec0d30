//! Executing a plan: aggregating rollup rows column by column, or running SQL on the
//! DuckDB table, into typed result columns.
//!
//! Over a rollup: the filters are compiled against the keys (`filter`), which finds the
//! runs of matching rows by skipping over the sorted keys; each matching row's group is
//! found from its packed group key (`group`: the previous row's group when the key
//! repeats, else a direct table, a sorted list or a hash map), row counts are summed
//! from the count column and the price measures only where a selected aggregate needs
//! them, read off their sparse columns in the same pass. Groups are ordered by typed
//! keys (the packed key orders the group columns: a text column by its text, NULL last)
//! and only the first `limit` are sorted fully; aggregates the order does not use are
//! computed for the answered groups only. A limited answer led by a grouped time column
//! is scanned bucket by bucket in the answer's order and stops at the limit.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use crate::daemon::limits::QueryBudget;
use crate::error::{Error, Result};
use crate::model::prefetch::prefetch;
use crate::model::schema::{exact_to_f64, price_to_f64, Column, TimeCol, PRICE_UNIT};
use crate::query::filter::{gallop, KeyFilter, SortedKeys};
use crate::query::group::{type_names, Coder, Groups, KeyRuns};
use crate::query::output::{Data, ResultSet, Rows};
use crate::query::plan::{Plan, Route};
use crate::query::request::{Aggregate, Func, Item, Query};
use crate::query::sort::{top_groups, SortKey, Tie};
use crate::query::{cores, on_threads};
use crate::rollup::{
    Countries, Key, Layered, Measure, RollupRows, SparseColumn, NULL_ID, NULL_TIME,
};
use crate::storage::table::View;

/// Answers `query` along `plan` from `rollup` (the planned rollup's rows, when the
/// route is a rollup, and the dictionary of their country codes) or from the DuckDB
/// `view` of the same generation, within `budget` (`too_large` past its row cap; its
/// cancel stops the query).
pub fn execute(
    query: &Query,
    plan: &Plan,
    rollup: Option<(&Layered, &Countries)>,
    view: &View,
    budget: &QueryBudget,
) -> Result<ResultSet> {
    let rows = match (&plan.route, rollup) {
        (Route::Rollup(_), Some(rollup)) => {
            aggregate_rollup(query, plan.time_range, rollup, budget)?
        }
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

/// Running aggregates of the groups, column by column.
#[derive(Default)]
struct Accs {
    /// The rows of each group, when `COUNT(*)` is read (else empty).
    rows: Vec<u64>,
    /// Per price (bid, total), when an aggregate reads it (their minima and maxima only
    /// when `Needs::extremes` says they are read).
    prices: [Vec<Measure>; 2],
    /// Per counted key column (`COUNT(type)`…), the rows where it is not NULL.
    non_null: Vec<Vec<u64>>,
}

impl Accs {
    /// Room for `groups` groups of what `needs` reads.
    fn with_capacity(groups: usize, needs: &Needs) -> Accs {
        let room = |wanted: bool| if wanted { groups } else { 0 };
        Accs {
            rows: Vec::with_capacity(room(needs.rows)),
            prices: needs.prices.map(|wanted| Vec::with_capacity(room(wanted))),
            non_null: vec![Vec::with_capacity(groups); needs.counted.len()],
        }
    }

    /// Room for groups up to `groups`, their aggregates zero.
    fn grow(&mut self, groups: usize, needs: &Needs) {
        if needs.rows {
            self.rows.resize(groups, 0);
        }
        for (p, wanted) in self.prices.iter_mut().zip(needs.prices) {
            if wanted {
                p.resize(groups, Measure::default());
            }
        }
        for n in &mut self.non_null {
            n.resize(groups, 0);
        }
    }

    fn push(&mut self, needs: &Needs) {
        if needs.rows {
            self.rows.push(0);
        }
        for (p, wanted) in self.prices.iter_mut().zip(needs.prices) {
            if wanted {
                p.push(Measure::default());
            }
        }
        for n in &mut self.non_null {
            n.push(0);
        }
    }
}

/// What the select list reads of the rollup.
struct Needs {
    /// Whether rows are counted (`COUNT(*)`).
    rows: bool,
    /// Whether the bid and the total measures are read.
    prices: [bool; 2],
    /// Whether their smallest and largest values are (else only counts and sums are kept).
    extremes: [bool; 2],
    /// Key columns counted by `COUNT(col)`.
    counted: Vec<Column>,
}

impl Needs {
    fn of(query: &Query) -> Needs {
        let mut needs = Needs {
            rows: false,
            prices: [false; 2],
            extremes: [false; 2],
            counted: Vec::new(),
        };
        for item in &query.select {
            let Item::Agg(Aggregate { func, arg }) = item else {
                continue;
            };
            let Some(c) = arg else {
                needs.rows = true;
                continue;
            };
            match price_index(Some(*c)) {
                Some(p) => {
                    needs.prices[p] = true;
                    needs.extremes[p] |= matches!(func, Func::Min | Func::Max);
                }
                None if !needs.counted.contains(c) => needs.counted.push(*c),
                None => {}
            }
        }
        needs
    }

    /// Adds measure `m` of price `p` to `acc`: only its count and sum when the extremes
    /// are not read.
    #[inline(always)]
    fn add(&self, p: usize, acc: &mut Measure, m: &Measure) {
        if self.extremes[p] {
            acc.merge(m);
        } else {
            acc.n += m.n;
            acc.sum += m.sum;
        }
    }
}

/// Answered groups from which the answer's columns are built on threads of their own.
const PARALLEL_GROUPS: usize = 1 << 16;

/// How many measures ahead of the one summed a scan asks for: the sums are read in order
/// but a block's loops take turns over several arrays, and the hardware's own fetching
/// ahead falls behind (parts of the top 500k answer by spend ~5% faster).
const SUMS_AHEAD: usize = 64;

/// Rows between two checks of the cancel while scanning.
const CANCEL_CHECK_ROWS: usize = 1 << 16;

/// What a scan found: the groups and their aggregates.
struct Scanned {
    coder: Coder,
    groups: Groups,
    accs: Accs,
}

/// Aggregates a rollup's rows into the query's result (ordered and limited);
/// `too_large` when more groups than the row cap would be answered.
fn aggregate_rollup(
    query: &Query,
    range: (i32, i32),
    (rollup, countries): (&Layered, &Countries),
    budget: &QueryBudget,
) -> Result<Rows> {
    let needs = Needs::of(query);
    let countries: Arc<[String]> = countries.names().into();
    let found = match rollup.parts().as_slice() {
        [rows] => {
            let selected = select(query, range, rows, &countries, budget)?;
            match leading_time(query) {
                Some(lead) => scan_leading(query, lead, &selected, &needs, rows, budget)?,
                None => {
                    let coder = selected.coder(query, rows, &selected.runs)?;
                    let alone = !query.group_by.is_empty() && query.order_by.is_empty();
                    if alone && row_per_group(&coder, rows, &selected.runs) {
                        return answer_rows(query, &selected, rows, budget);
                    }
                    let chunks = vec![selected.runs.clone()];
                    scan(coder, chunks, usize::MAX, &needs, rows, budget)?
                }
            }
        }
        layers => scan_layers(query, range, layers, &countries, &needs, budget)?,
    };
    answer(query, found, &needs, &countries, budget)
}

/// Groups the matching rows of a rollup's layers (its merged rows, then the rows laid
/// over them): one coder over all of them, each layer scanned as a rollup of its own, and
/// the groups of the later layers summed into the first's.
fn scan_layers(
    query: &Query,
    range: (i32, i32),
    layers: &[&RollupRows],
    countries: &Arc<[String]>,
    needs: &Needs,
    budget: &QueryBudget,
) -> Result<Scanned> {
    let selected = (layers.iter())
        .map(|rows| select(query, range, rows, countries, budget))
        .collect::<Result<Vec<_>>>()?;
    let over: Vec<KeyRuns<'_>> = (layers.iter().zip(&selected))
        .map(|(rows, s)| (rows.keys(), s.runs.as_slice()))
        .collect();
    let ids = [0, 1].map(|i| {
        (selected.iter().filter_map(|s| s.ids[i])).reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    });
    let coder = Coder::new(&query.group_by, &over, ids, countries)?;
    let mut layers = layers.iter().zip(&selected);
    let (rows, first) = layers.next().expect("a rollup has rows");
    let chunks = vec![first.runs.clone()];
    let Scanned {
        coder,
        groups,
        accs,
    } = scan(coder, chunks, usize::MAX, needs, rows, budget)?;
    let mut whole = (groups, accs);
    for (rows, s) in layers {
        let chunks = vec![s.runs.clone()];
        let part = fold_chunks(&coder, chunks, usize::MAX, needs, rows, budget)?;
        absorb(&mut whole, part, needs);
    }
    let (groups, accs) = whole;
    Ok(Scanned {
        coder,
        groups,
        accs,
    })
}

/// The query's answer from the groups a scan found: ordered, limited, a column per
/// select item.
fn answer(
    query: &Query,
    mut found: Scanned,
    needs: &Needs,
    countries: &Arc<[String]>,
    budget: &QueryBudget,
) -> Result<Rows> {
    if query.group_by.is_empty() && found.groups.is_empty() {
        found.groups.find(0, &Key::default());
        found.accs.push(needs);
    }
    let (groups, accs) = (&found.groups, &found.accs);
    budget.limits.check_rows(groups.len(), query.limit)?;
    budget.cancel.check()?;
    // Aggregates the order depends on, over every group; the others only for the answer.
    let aggs: Vec<Option<Data>> = query
        .select
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Item::Agg(a) if query.order_by.iter().any(|k| k.item == i) => {
                Some(aggregate_column(a, accs, needs, None))
            }
            _ => None,
        })
        .collect();
    let order = order(query, groups, &found.coder, &aggs);
    // The answered groups' keys, gathered once for every group-by column (on every core
    // when they are many: each is a read from anywhere in the groups).
    let many = order.len() >= PARALLEL_GROUPS;
    let value = |g: &u32| groups.values[*g as usize];
    let values: Vec<Key> = match (query.group_by.is_empty(), many) {
        (true, _) => Vec::new(),
        (false, true) => order.par_iter().map(value).collect(),
        (false, false) => order.iter().map(value).collect(),
    };
    let column = |(item, agg): (&Item, Option<Data>)| match (item, agg) {
        (Item::Column(c), _) => group_column(*c, values.iter().copied(), countries),
        (Item::Agg(_), Some(data)) => data.gather(&order),
        (Item::Agg(a), None) => aggregate_column(a, accs, needs, Some(&order)),
    };
    let columns = match many {
        false => query.select.iter().zip(aggs).map(column).collect(),
        true => query.select.par_iter().zip(aggs).map(column).collect(),
    };
    Ok(Rows::new(columns))
}

/// Group-by column `c` of the answer, read off a key of each group.
fn group_column(c: Column, keys: impl Iterator<Item = Key>, countries: &Arc<[String]>) -> Data {
    match c {
        Column::Time(t) => Data::Time(
            t,
            keys.map(|k| match k.time {
                NULL_TIME => NULL_TIME,
                m => t.bucket(m),
            })
            .collect(),
        ),
        Column::Type => Data::Code(
            type_names().into(),
            keys.map(|k| u16::from(k.typ)).collect(),
        ),
        Column::Country => Data::Code(countries.clone(), keys.map(|k| k.country).collect()),
        Column::AdvertiserId | Column::PublisherId => {
            let publ = c == Column::PublisherId;
            Data::Int(
                keys.map(|k| match k.id(publ) {
                    NULL_ID => None,
                    v => Some(v),
                })
                .collect(),
            )
        }
        c => unreachable!("{c} is not a rollup column"),
    }
}

/// The rows of a rollup a query reads.
struct Selected {
    /// Runs of matching rows, ascending.
    runs: Vec<Range<usize>>,
    /// Bounds of their advertiser and publisher ids (`None`: no id).
    ids: [Option<(i64, i64)>; 2],
    countries: Arc<[String]>,
}

impl Selected {
    fn matched(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }

    /// The coder of the query's groups over the rows `runs` (ascending).
    fn coder(&self, query: &Query, rollup: &RollupRows, runs: &[Range<usize>]) -> Result<Coder> {
        let over = [(rollup.keys(), runs)];
        Coder::new(&query.group_by, &over, self.ids, &self.countries)
    }
}

/// Whether every row of `runs` is a group of its own, the rows already in the groups'
/// order (their packed keys strictly ascend; most queries fail this at their second row).
fn row_per_group(coder: &Coder, rollup: &RollupRows, runs: &[Range<usize>]) -> bool {
    let (keys, _, _) = rollup.columns();
    let mut packed = Vec::with_capacity(BLOCK_ROWS);
    let mut last = None;
    for block in runs.iter().flat_map(|r| blocks(r.clone())) {
        coder.pack(&keys[block], &mut packed);
        for &key in &packed {
            if last.is_some_and(|l| l >= key) {
                return false;
            }
            last = Some(key);
        }
    }
    true
}

/// Rows whose packed keys are computed together: their keys and groups stay in cache.
const BLOCK_ROWS: usize = 1024;

/// `rows` cut into blocks of at most `BLOCK_ROWS`.
fn blocks(rows: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    rows.clone()
        .step_by(BLOCK_ROWS)
        .map(move |start| start..(start + BLOCK_ROWS).min(rows.end))
}

/// Finds the matching rows of the query's time range (`countries`: the rollup's country
/// codes' names).
fn select(
    query: &Query,
    range: (i32, i32),
    rollup: &RollupRows,
    countries: &Arc<[String]>,
    budget: &QueryBudget,
) -> Result<Selected> {
    let filter = KeyFilter::compile(&query.filters, countries);
    // All-time rollups (time 0) never get time filters, so their range is everything.
    let rows = if range.0 > range.1 {
        0..0
    } else {
        rollup.time_range(range.0, range.1)
    };
    let keys = SortedKeys {
        keys: rollup.keys(),
        samples: rollup.samples(),
    };
    let listed = (filter.narrow_id(rollup.ids(), rows.len()))
        .and_then(|publ| filter.runs_by_id(keys.keys, rows.clone(), rollup.by_id(publ), publ));
    let runs = listed.unwrap_or_else(|| filter.runs(keys, rows, budget.limits.parallel_rows));
    budget.cancel.check()?;
    let ids = [false, true].map(|publ| filter.id_bounds(publ, rollup.ids().of(publ)));
    Ok(Selected {
        runs,
        ids,
        countries: countries.clone(),
    })
}

/// The answer when each matching row is a group of its own, in order: the first `limit`
/// rows, their aggregates read straight off the rollup's columns.
fn answer_rows(
    query: &Query,
    selected: &Selected,
    rollup: &RollupRows,
    budget: &QueryBudget,
) -> Result<Rows> {
    budget.limits.check_rows(selected.matched(), query.limit)?;
    let limit = query.limit.map_or(usize::MAX, |l| l as usize);
    let rows: Vec<u32> = (selected.runs.iter().flat_map(Range::clone))
        .take(limit)
        .map(|r| r as u32)
        .collect();
    budget.cancel.check()?;
    let (keys, counts, prices) = rollup.columns();
    let count = |c: Option<Column>| {
        let n = |r: &u32| {
            let r = *r as usize;
            match c {
                Some(c) if is_null(c, &keys[r]) => 0,
                _ => counts[r],
            }
        };
        Data::Int(rows.iter().map(|r| Some(n(r) as i64)).collect())
    };
    let columns = query.select.iter().map(|item| match item {
        Item::Column(c) => {
            let keys = rows.iter().map(|&r| keys[r as usize]);
            group_column(*c, keys, &selected.countries)
        }
        Item::Agg(a) => match (a.arg, price_index(a.arg)) {
            (_, Some(p)) => price_column(a.func, measures_at(prices[p], &rows)),
            (arg, None) => count(arg),
        },
    });
    Ok(Rows::new(columns.collect()))
}

/// Which price (bid, total) a column is, if it is one.
fn price_index(c: Option<Column>) -> Option<usize> {
    match c {
        Some(Column::BidPrice) => Some(0),
        Some(Column::TotalPrice) => Some(1),
        _ => None,
    }
}

/// The measures of a sparse price column at rows `rows` (ascending): `None` where a row
/// has none.
fn measures_at<'a>(
    column: SparseColumn<'a>,
    rows: &'a [u32],
) -> impl Iterator<Item = Option<Measure>> + 'a {
    let (at, mut j) = (column.at, 0);
    rows.iter().map(move |&r| {
        j = gallop(at, j, at.len(), |&a| a < r);
        at.get(j).filter(|&&a| a == r).map(|_| column.get(j))
    })
}

/// A limited answer led by a time column (`lead`: the column, its direction, the limit):
/// the selected rows cut at that column's buckets, in the answer's order, and scanned
/// from the first bucket on with a coder of the buckets taken: one, then four times as
/// many each time until they hold `limit` groups (or are all the buckets). Groups never
/// span buckets, so later buckets only hold groups that come after these.
fn scan_leading(
    query: &Query,
    (t, desc, limit): (TimeCol, bool, usize),
    selected: &Selected,
    needs: &Needs,
    rollup: &RollupRows,
    budget: &QueryBudget,
) -> Result<Scanned> {
    let (keys, _, _) = rollup.columns();
    let chunks = by_bucket(keys, selected.runs.clone(), t, desc);
    let mut take = 1;
    loop {
        let taken = take.min(chunks.len());
        let mut runs = chunks[..taken].concat();
        runs.sort_unstable_by_key(|r| r.start);
        let coder = selected.coder(query, rollup, &runs)?;
        let found = scan(
            coder,
            chunks[..taken].to_vec(),
            limit,
            needs,
            rollup,
            budget,
        )?;
        if found.groups.len() >= limit || taken == chunks.len() {
            return Ok(found);
        }
        take *= 4;
    }
}

/// Groups the rows of `chunks` (in order, stopping after the chunk that brings `enough`
/// groups) and sums their counts and the measures `needs`. Without a stop, many rows
/// are cut in parts folded on threads of their own, whose groups are then summed.
fn scan(
    coder: Coder,
    chunks: Vec<Vec<Range<usize>>>,
    enough: usize,
    needs: &Needs,
    rollup: &RollupRows,
    budget: &QueryBudget,
) -> Result<Scanned> {
    let matched: usize = chunks.iter().flatten().map(|r| r.len()).sum();
    let parts = match enough {
        usize::MAX => (matched / budget.limits.parallel_rows.max(1)).min(cores()),
        _ => 1,
    };
    let (groups, accs) = if parts < 2 {
        fold_chunks(&coder, chunks, enough, needs, rollup, budget)?
    } else {
        let runs: Vec<Range<usize>> = chunks.into_iter().flatten().collect();
        let cuts = cut_runs(&runs, matched.div_ceil(parts));
        let fold = |runs: &Vec<Range<usize>>| {
            fold_chunks(&coder, vec![runs.clone()], enough, needs, rollup, budget)
        };
        let mut folded = on_threads(&cuts, fold).into_iter();
        let mut whole = folded.next().expect("a part")?;
        for part in folded {
            absorb(&mut whole, part?, needs);
        }
        whole
    };
    Ok(Scanned {
        coder,
        groups,
        accs,
    })
}

/// `runs` (ascending) cut into parts of `rows` rows (the last one shorter).
fn cut_runs(runs: &[Range<usize>], rows: usize) -> Vec<Vec<Range<usize>>> {
    let mut parts = vec![Vec::new()];
    let mut room = rows;
    for run in runs {
        let mut run = run.clone();
        while !run.is_empty() {
            if room == 0 {
                parts.push(Vec::new());
                room = rows;
            }
            let take = run.len().min(room);
            parts
                .last_mut()
                .expect("a part")
                .push(run.start..run.start + take);
            run.start += take;
            room -= take;
        }
    }
    parts
}

/// Adds the groups and aggregates of `part` to `whole`'s.
fn absorb(whole: &mut (Groups, Accs), part: (Groups, Accs), needs: &Needs) {
    let ((groups, accs), (part_groups, part_accs)) = (whole, part);
    let (keys, values) = (&part_groups.keys, &part_groups.values);
    let mut found = Vec::with_capacity(keys.len());
    if groups.find_direct(keys, values, &mut found) {
        accs.grow(groups.len(), needs);
    } else {
        for (key, value) in keys.iter().zip(values) {
            let (to, new) = groups.find(*key, value);
            if new {
                accs.push(needs);
            }
            found.push(to);
        }
    }
    for (&to, n) in found.iter().zip(&part_accs.rows) {
        accs.rows[to as usize] += n;
    }
    for (whole_n, part_n) in accs.non_null.iter_mut().zip(&part_accs.non_null) {
        for (&to, n) in found.iter().zip(part_n) {
            whole_n[to as usize] += n;
        }
    }
    for (i, (p, part_p)) in accs.prices.iter_mut().zip(&part_accs.prices).enumerate() {
        for (&to, m) in found.iter().zip(part_p) {
            needs.add(i, &mut p[to as usize], m);
        }
    }
}

/// Groups the rows of `chunks` on the calling thread (see `scan`).
fn fold_chunks(
    coder: &Coder,
    chunks: Vec<Vec<Range<usize>>>,
    enough: usize,
    needs: &Needs,
    rollup: &RollupRows,
    budget: &QueryBudget,
) -> Result<(Groups, Accs)> {
    let matched = chunks.iter().flatten().map(|r| r.len()).sum();
    let groups = Groups::new(coder, matched);
    let accs = Accs::with_capacity(groups.capacity(), needs);
    let mut fold = Fold {
        coder,
        needs,
        rollup,
        groups,
        accs,
        cursors: [0; 2],
        last: None,
        packed: Vec::with_capacity(BLOCK_ROWS),
        found: Vec::with_capacity(BLOCK_ROWS),
    };
    let mut seen = 0;
    for chunk in chunks {
        for run in chunk {
            if seen / CANCEL_CHECK_ROWS != (seen + run.len()) / CANCEL_CHECK_ROWS {
                budget.cancel.check()?;
            }
            seen += run.len();
            fold.run(run);
        }
        // Groups of later buckets all come after these in the answer.
        if fold.groups.len() >= enough {
            break;
        }
    }
    Ok((fold.groups, fold.accs))
}

/// A scan's running state: the groups found and their aggregates.
struct Fold<'a> {
    coder: &'a Coder,
    needs: &'a Needs,
    rollup: &'a RollupRows,
    groups: Groups,
    accs: Accs,
    /// Per price, the next of its sparse measures to look at.
    cursors: [usize; 2],
    /// The last row's packed key and group.
    last: Option<(u128, u32)>,
    /// The packed keys and the groups of a block's rows.
    packed: Vec<u128>,
    found: Vec<u32>,
}

impl Fold<'_> {
    /// Adds the rows of `run` (all matching) to their groups.
    fn run(&mut self, run: Range<usize>) {
        let (_, _, prices) = self.rollup.columns();
        for ((cursor, SparseColumn { at, .. }), wanted) in
            self.cursors.iter_mut().zip(&prices).zip(self.needs.prices)
        {
            if wanted {
                // The cursor holds while every measure before it is before the run
                // (runs ascend, except a descending time-led scan's chunks).
                let before = |c: usize| c == 0 || (at[c - 1] as usize) < run.start;
                let from = if before(*cursor) { *cursor } else { 0 };
                *cursor = gallop(at, from, at.len(), |&a| (a as usize) < run.start);
            }
        }
        let (keys, _, _) = self.rollup.columns();
        if same_lead(&keys[run.start], &keys[run.end - 1], self.coder.lead) {
            return self.one_group(run);
        }
        for block in blocks(run) {
            self.group(block.clone());
            self.sum(block);
        }
    }

    /// The group of a row with packed key `key` and rollup key `value`, made if new.
    #[inline]
    fn group_of(&mut self, key: u128, value: &Key) -> u32 {
        let g = match self.last {
            Some((prev, g)) if prev == key => g,
            _ => {
                let (g, new) = self.groups.find(key, value);
                if new {
                    self.accs.push(self.needs);
                }
                g
            }
        };
        self.last = Some((key, g));
        g
    }

    /// Adds the rows of `run`, which all fall in one group (its rows agree on the key
    /// columns that decide the group), to that group: one lookup, then plain sums.
    fn one_group(&mut self, run: Range<usize>) {
        let (keys, counts, prices) = self.rollup.columns();
        self.coder
            .pack(&keys[run.start..run.start + 1], &mut self.packed);
        let g = self.group_of(self.packed[0], &keys[run.start]) as usize;
        let accs = &mut self.accs;
        if self.needs.rows {
            accs.rows[g] += counts[run.clone()].iter().sum::<u64>();
        }
        for (c, non_null) in self.needs.counted.iter().zip(&mut accs.non_null) {
            let rows = counts[run.clone()].iter().zip(&keys[run.clone()]);
            non_null[g] += rows
                .filter(|(_, k)| !is_null(*c, k))
                .map(|(n, _)| n)
                .sum::<u64>();
        }
        for p in (0..2).filter(|p| self.needs.prices[*p]) {
            let (column, cursor) = (prices[p], &mut self.cursors[p]);
            let at = column.at;
            let end = gallop(at, *cursor, at.len(), |&a| (a as usize) < run.end);
            let mut sum = Measure::default();
            match self.needs.extremes[p] {
                true => (*cursor..end).for_each(|j| sum.merge(&column.get(j))),
                false => column.sums[*cursor..end]
                    .iter()
                    .for_each(|s| sum.add_summed(s)),
            }
            self.needs.add(p, &mut accs.prices[p][g], &sum);
            *cursor = end;
        }
    }

    /// Finds the groups of the rows `block` (into `found`), making the new ones.
    fn group(&mut self, block: Range<usize>) {
        let (keys, _, _) = self.rollup.columns();
        self.coder.pack(&keys[block.clone()], &mut self.packed);
        let values = &keys[block.clone()];
        if self
            .groups
            .find_direct(&self.packed, values, &mut self.found)
        {
            self.accs.grow(self.groups.len(), self.needs);
            return;
        }
        self.found.clear();
        for (i, value) in block.clone().zip(&keys[block.clone()]) {
            let g = self.group_of(self.packed[i - block.start], value);
            self.found.push(g);
        }
    }

    /// Adds the counts and the measures of the rows `block` to their groups (`found`).
    fn sum(&mut self, block: Range<usize>) {
        let (keys, counts, prices) = self.rollup.columns();
        let (found, accs) = (&self.found, &mut self.accs);
        if self.needs.rows {
            for (&g, &n) in found.iter().zip(&counts[block.clone()]) {
                accs.rows[g as usize] += n;
            }
        }
        for (c, non_null) in self.needs.counted.iter().zip(&mut accs.non_null) {
            let rows = found
                .iter()
                .zip(&counts[block.clone()])
                .zip(&keys[block.clone()]);
            for ((&g, &n), k) in rows {
                if !is_null(*c, k) {
                    non_null[g as usize] += n;
                }
            }
        }
        for p in (0..2).filter(|p| self.needs.prices[*p]) {
            let (column, cursor) = (prices[p], &mut self.cursors[p]);
            let end = gallop(column.at, *cursor, column.at.len(), |&a| {
                (a as usize) < block.end
            });
            let at = &column.at[*cursor..end];
            let (sums, found) = (&mut accs.prices[p], &found[..block.len()]);
            let group = |a: u32| found[a as usize - block.start] as usize;
            match self.needs.extremes[p] {
                true => (at.iter().zip(*cursor..end))
                    .for_each(|(&a, j)| sums[group(a)].merge(&column.get(j))),
                false => {
                    let ahead = *cursor + SUMS_AHEAD;
                    for (i, (&a, s)) in at.iter().zip(&column.sums[*cursor..end]).enumerate() {
                        prefetch(column.sums.get(ahead + i));
                        sums[group(a)].add_summed(s);
                    }
                }
            }
            *cursor = end;
        }
    }
}

/// Whether keys `a` and `b` agree on their first `lead` columns (in sort order).
#[inline]
fn same_lead(a: &Key, b: &Key, lead: usize) -> bool {
    let cols: [bool; 5] = [
        a.time == b.time,
        a.typ == b.typ,
        a.country == b.country,
        a.id(false) == b.id(false),
        a.id(true) == b.id(true),
    ];
    cols[..lead].iter().all(|same| *same)
}

/// For a limited answer whose order starts with a time column it groups by: the column,
/// its direction and the limit. Its groups then come bucket by bucket, so the scan can
/// stop after the buckets that hold the first `limit` groups.
fn leading_time(query: &Query) -> Option<(TimeCol, bool, usize)> {
    let limit = usize::try_from(query.limit?).ok()?;
    let (col, desc) = match query.order_by.first() {
        Some(k) => match query.select[k.item] {
            Item::Column(c) => (c, k.desc),
            Item::Agg(_) => return None,
        },
        None => (*query.group_by.first()?, false),
    };
    match col {
        Column::Time(t) => Some((t, desc, limit)),
        _ => None,
    }
}

/// `runs` (sorted by time) cut at the buckets of `t`, a chunk per bucket, in the
/// answer's order of buckets (NULL last either way).
fn by_bucket(
    keys: &[Key],
    runs: Vec<Range<usize>>,
    t: TimeCol,
    desc: bool,
) -> Vec<Vec<Range<usize>>> {
    let mut chunks: Vec<(i32, Vec<Range<usize>>)> = Vec::new();
    for run in runs {
        let mut i = run.start;
        while i < run.end {
            let b = match keys[i].time {
                NULL_TIME => NULL_TIME,
                m => t.bucket(m),
            };
            let next = b.saturating_add(crate::query::filter::bucket_len(t) as i32);
            let end = match b {
                NULL_TIME => run.end,
                _ => i + keys[i..run.end].partition_point(|k| k.time < next),
            };
            match chunks.last_mut() {
                Some((last, chunk)) if *last == b => chunk.push(i..end),
                _ => chunks.push((b, std::iter::once(i..end).collect())),
            }
            i = end;
        }
    }
    if desc {
        let nulls = chunks.last().is_some_and(|(b, _)| *b == NULL_TIME) as usize;
        let len = chunks.len();
        chunks[..len - nulls].reverse();
    }
    chunks.into_iter().map(|(_, c)| c).collect()
}

fn is_null(c: Column, k: &Key) -> bool {
    match c {
        Column::Time(_) => k.time == NULL_TIME,
        Column::Type => k.typ == 0,
        Column::Country => k.country == 0,
        Column::AdvertiserId => k.id(false) == NULL_ID,
        Column::PublisherId => k.id(true) == NULL_ID,
        c => unreachable!("COUNT({c}) is not answered from rollups"),
    }
}

/// The column of aggregate `a` over groups `only` (in that order), or over every group.
fn aggregate_column(a: &Aggregate, accs: &Accs, needs: &Needs, only: Option<&[u32]>) -> Data {
    fn cells<T, U>(v: &[T], only: Option<&[u32]>, f: impl Fn(&T) -> U) -> Vec<U> {
        match only {
            Some(groups) => groups.iter().map(|&g| f(&v[g as usize])).collect(),
            None => v.iter().map(f).collect(),
        }
    }
    let count = |v: &[u64]| Data::Int(cells(v, only, |n| Some(*n as i64)));
    let m = match (a.arg, price_index(a.arg)) {
        (None, _) => return count(&accs.rows),
        (_, Some(p)) => &accs.prices[p],
        (Some(c), None) => {
            let i = needs.counted.iter().position(|x| *x == c).expect("counted");
            return count(&accs.non_null[i]);
        }
    };
    match only {
        Some(groups) => price_column(a.func, groups.iter().map(|&g| Some(m[g as usize]))),
        None => price_column(a.func, m.iter().copied().map(Some)),
    }
}

/// The column of `func` over price measures (`None`: no price there).
fn price_column(func: Func, measures: impl Iterator<Item = Option<Measure>>) -> Data {
    let f: fn(&Measure) -> f64 = match func {
        Func::Count => {
            let n = |m: Option<Measure>| Some(m.map_or(0, |m| m.n as i64));
            return Data::Int(measures.map(n).collect());
        }
        Func::Sum => |m| price_to_f64(m.sum),
        Func::Avg => |m| exact_to_f64(m.sum) / m.n as f64 / PRICE_UNIT,
        Func::Min => |m| price_to_f64(m.min.into()),
        Func::Max => |m| price_to_f64(m.max.into()),
    };
    let cell = |m: Option<Measure>| m.filter(|m| m.n > 0).map(|m| f(&m));
    Data::Float(measures.map(cell).collect())
}

/// The answer's groups in order (order_by keys, then the group-by columns ascending,
/// NULLs last), cut to the query's limit. Packed keys are unique, so the order is total.
fn order(query: &Query, groups: &Groups, coder: &Coder, aggs: &[Option<Data>]) -> Vec<u32> {
    let n = groups.len();
    let limit = query.limit.map_or(n, |l| l.min(n as u64) as usize);
    let keys = &groups.keys;
    let in_order = || groups.in_order();
    let by_packed = Tie::Keys {
        keys,
        in_order: &in_order,
    };
    if query.order_by.is_empty() {
        return match groups.in_order() {
            Some(mut order) => {
                order.truncate(limit);
                order
            }
            None => top_groups(n, &[&|g| keys[g as usize]], limit, by_packed),
        };
    }
    // Each order key as an integer per group.
    let sort_keys: Vec<Box<dyn Fn(u32) -> u128 + Sync + '_>> = (query.order_by.iter())
        .map(|k| -> Box<dyn Fn(u32) -> u128 + Sync + '_> {
            match &aggs[k.item] {
                Some(data) => Box::new(move |g| data.sort_key(g as usize, k.desc)),
                None => {
                    let weight = coder.weight(group_slot(query, k.item));
                    Box::new(move |g| weight.sort_key(keys[g as usize], k.desc))
                }
            }
        })
        .collect();
    let sort_keys: Vec<SortKey<'_>> = sort_keys.iter().map(|f| f.as_ref()).collect();
    if (query.order_by.iter()).all(|k| aggs[k.item].as_ref().is_none_or(Data::keyed)) {
        return top_groups(n, &sort_keys, limit, by_packed);
    }
    // Text columns order by their texts: groups whose first keys tie are ordered by
    // every key, then by their packed keys.
    let by_every_key = |x: u32, y: u32| {
        let (x, y) = (x as usize, y as usize);
        for k in &query.order_by {
            let o = match &aggs[k.item] {
                Some(data) => data.compare(x, y, k.desc),
                None => {
                    let weight = coder.weight(group_slot(query, k.item));
                    let (a, b) = (keys[x], keys[y]);
                    weight.sort_key(a, k.desc).cmp(&weight.sort_key(b, k.desc))
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        keys[x].cmp(&keys[y])
    };
    top_groups(n, &sort_keys[..1], limit, Tie::By(&by_every_key))
}

/// The group-by position of select item `item` (a plain column).
fn group_slot(query: &Query, item: usize) -> usize {
    let Item::Column(c) = &query.select[item] else {
        unreachable!("aggregates have their own columns")
    };
    query
        .group_by
        .iter()
        .position(|g| g == c)
        .expect("validated")
}
