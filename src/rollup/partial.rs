//! One file's partial aggregates: its table rows, sorted by day, folded into sorted rows
//! for every rollup spec.
//!
//! The file's dimension values are coded densely once, in sorted order, so the order of
//! codes is the order of keys. A rollup whose key space for one day (for all-time
//! rollups: for the whole file) is small is aggregated in a flat array of cells indexed by
//! the mixed-radix code of the key: no hashing, no pointers. The cells are computed a
//! column at a time, and the touched ones found in key order from a bitmap. Larger key
//! spaces fall back to a hash map of keys.

use std::ops::Range;

use arrow::array::{Array, AsArray, Date32Array, Decimal128Array, Int32Array, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::Result;
use crate::model::buckets::Buckets;
use crate::model::prefetch;
use crate::model::schema::{type_code, TableCol, TimeCol};
use crate::rollup::{Agg, Countries, Dim, Key, RollupRows, RollupSpec, NULL_ID, NULL_TIME};

/// A file's partial aggregate: one sorted row set per rollup spec, in spec order.
pub type Partial = Vec<RollupRows>;

/// Most cells held at a time (~0.7 MB of aggregates, within a core's cache).
const MAX_CELLS: usize = 1 << 13;
/// How many times `MAX_CELLS` a day's cells may take when its rows cannot be grouped
/// first (~12 MB; beyond, a hash map).
const WIDE: usize = 16;
/// Most groups a day's rows are sorted into when not all cells are held at once.
const MAX_GROUPS: usize = 1 << 20;

/// Where a batch holds the table columns a partial is built from (`Positions::COLUMNS`).
#[derive(Debug, Clone, Copy)]
pub struct Positions([usize; 8]);

impl Positions {
    /// The table columns a partial is built from, in the order `SELECTED` has them.
    pub const COLUMNS: [TableCol; 8] = [
        TableCol::Day,
        TableCol::LocalMinute,
        TableCol::Type,
        TableCol::Country,
        TableCol::AdvertiserId,
        TableCol::PublisherId,
        TableCol::BidPrice,
        TableCol::TotalPrice,
    ];
    /// In a batch of the `events` table's schema (`fold::table_schema`).
    pub const TABLE: Positions = {
        let mut at = [0; 8];
        let mut i = 0;
        while i < at.len() {
            at[i] = Positions::COLUMNS[i].at();
            i += 1;
        }
        Positions(at)
    };
    /// In a batch of `COLUMNS`, in that order (as `select` reads them).
    pub const SELECTED: Positions = Positions([0, 1, 2, 3, 4, 5, 6, 7]);

    /// The SQL select list of `COLUMNS`.
    pub fn select() -> String {
        let names: Vec<String> = Positions::COLUMNS.iter().map(|c| c.select_sql()).collect();
        names.join(", ")
    }

    /// Where the batch holds column `c` (one of `COLUMNS`).
    fn of(&self, c: TableCol) -> usize {
        let i = Positions::COLUMNS.iter().position(|x| *x == c);
        self.0[i.expect("a column partials are built from")]
    }
}

/// Folds table rows, sorted by day (NULL last) as `fold::sort_for_table` leaves them,
/// into a partial for each spec.
/// Country texts get their codes from `countries`.
pub fn build(batch: &RecordBatch, specs: &[RollupSpec], countries: &Countries) -> Result<Partial> {
    build_at(batch, &Positions::TABLE, specs, countries)
}

/// Like `build`, from a batch holding the columns at `at`.
pub fn build_at(
    batch: &RecordBatch,
    at: &Positions,
    specs: &[RollupSpec],
    countries: &Countries,
) -> Result<Partial> {
    let rows = Rows::decode(batch, at, countries)?;
    let days = rows.day_ranges();
    let [bid, total] = rows.priced;
    Ok(specs
        .iter()
        .map(|spec| {
            let cells = Cells::plan(spec, &rows);
            // Each column gets room for all it may hold up front: grown by doubling, a
            // partial's columns were copied to fresh pages time and again.
            let most = cells.as_ref().map_or(rows.len(), |c| {
                rows.len().min(c.slots * c.per_slot * days.len())
            });
            let mut out = RollupRows::with_room(most, most.min(bid), most.min(total));
            match cells {
                Some(cells) => cells.aggregate(&rows, &days, &mut out),
                None => hashed(spec, &rows, &days, &mut out),
            };
            out.shrink_to_fit();
            out
        })
        .collect())
}

/// A dimension's values in the file, coded densely in sorted order.
struct Dense {
    /// Per row, the index of its value in `values`.
    codes: Vec<u32>,
    /// The distinct values, sorted.
    values: Vec<i64>,
}

impl Dense {
    fn new(column: impl Iterator<Item = i64> + Clone) -> Dense {
        // `i64::MAX` (NULL in id keys) sorts last: it gets the slot after the span.
        let (lo, hi) = column
            .clone()
            .filter(|v| *v != i64::MAX)
            .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let span = (i128::from(hi) - i128::from(lo) + 1).max(0) as u128;
        if span > 4 * column.size_hint().0 as u128 + 1024 {
            return Dense::hashed(column);
        }
        // Values within a small span: a table indexed by value gives the codes.
        let span = span as usize;
        let slot = |v: i64| match v {
            i64::MAX => span,
            v => (v - lo) as usize,
        };
        let mut code = vec![u32::MAX; span + 1];
        for v in column.clone() {
            code[slot(v)] = 0;
        }
        let mut values = Vec::new();
        for (at, c) in code.iter_mut().enumerate() {
            if *c == 0 {
                *c = values.len() as u32;
                values.push(if at == span { i64::MAX } else { lo + at as i64 });
            }
        }
        Dense {
            codes: column.map(|v| code[slot(v)]).collect(),
            values,
        }
    }

    /// `new` for values spread too widely for a table.
    fn hashed(column: impl Iterator<Item = i64> + Clone) -> Dense {
        let distinct: FxHashSet<i64> = column.clone().collect();
        let mut values: Vec<i64> = distinct.into_iter().collect();
        values.sort_unstable();
        let index: FxHashMap<i64, u32> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, i as u32))
            .collect();
        Dense {
            codes: column.map(|v| index[&v]).collect(),
            values,
        }
    }
}

/// The key columns and measures of a file's rows: the dimensions decoded once, the
/// time and prices read from the batch's own arrays.
struct Rows<'a> {
    /// Local day of each row (NULL for NULL `ts`).
    day: &'a Date32Array,
    /// Local minute of each row (NULL for NULL `ts`).
    minute: &'a Int32Array,
    /// The row's value of each dimension, in `Dim::ALL` order (type codes, country
    /// codes, advertiser and publisher ids; NULL as in `Key`).
    dims: [Dense; 4],
    /// Each row's full key (every dimension kept), which a rollup's keys are cut from.
    keys: Vec<Key>,
    prices: Prices<'a>,
    /// How many rows have a bid, a total.
    priced: [usize; 2],
}

impl<'a> Rows<'a> {
    /// Asks the CPU to fetch row `i`'s prices and key into the cache.
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        prefetch::prefetch(self.prices.bid.values().get(i));
        prefetch::prefetch(self.prices.total.values().get(i));
        prefetch::prefetch(self.keys.get(i));
    }

    fn decode(batch: &'a RecordBatch, at: &Positions, countries: &Countries) -> Result<Rows<'a>> {
        let n = batch.num_rows();
        let column = |c: TableCol| batch.column(at.of(c));
        let day = column(TableCol::Day).as_primitive::<Date32Type>();
        let minute = column(TableCol::LocalMinute).as_primitive::<Int32Type>();
        let types = column(TableCol::Type).as_string::<i32>();
        let country_text = column(TableCol::Country).as_string::<i32>();
        let adv = column(TableCol::AdvertiserId).as_primitive::<Int32Type>();
        let bid = column(TableCol::BidPrice).as_primitive::<Decimal128Type>();
        let total = column(TableCol::TotalPrice).as_primitive::<Decimal128Type>();
        let publ = column(TableCol::PublisherId).as_primitive::<Int32Type>();
        let id = |a: &arrow::array::Int32Array, i: usize| {
            if a.is_valid(i) {
                i64::from(a.value(i))
            } else {
                NULL_ID
            }
        };
        // Rows come sorted by type and country within a day, so most repeat the row
        // before's text: only a change is looked up.
        let mut local: FxHashMap<&str, u16> = FxHashMap::default();
        let mut country: Vec<u16> = Vec::with_capacity(n);
        let mut last: Option<(&str, u16)> = None;
        for i in 0..n {
            country.push(
                match country_text.is_valid(i).then(|| country_text.value(i)) {
                    None => 0,
                    Some(text) => match last {
                        Some((t, c)) if t == text => c,
                        _ => {
                            let c = match local.get(text) {
                                Some(c) => *c,
                                None => {
                                    let c = countries.code(text)?;
                                    local.insert(text, c);
                                    c
                                }
                            };
                            last = Some((text, c));
                            c
                        }
                    },
                },
            );
        }
        let mut last: Option<(&str, u8)> = None;
        let typ: Vec<u8> = (0..n)
            .map(|i| match types.is_valid(i).then(|| types.value(i)) {
                None => 0,
                Some(text) => match last {
                    Some((t, c)) if t == text => c,
                    _ => {
                        let c = type_code(text).unwrap_or(0);
                        last = Some((text, c));
                        c
                    }
                },
            })
            .collect();
        let keys = (0..n)
            .map(|i| {
                let time = match minute.is_valid(i) {
                    true => minute.value(i),
                    false => NULL_TIME,
                };
                Key::new(time, typ[i], country[i], id(adv, i), id(publ, i))
            })
            .collect();
        Ok(Rows {
            day,
            minute,
            keys,
            dims: [
                Dense::new(typ.iter().map(|t| i64::from(*t))),
                Dense::new(country.iter().map(|c| i64::from(*c))),
                Dense::new((0..n).map(|i| id(adv, i))),
                Dense::new((0..n).map(|i| id(publ, i))),
            ],
            prices: Prices { bid, total },
            priced: [bid, total].map(|a| a.len() - a.null_count()),
        })
    }

    fn len(&self) -> usize {
        self.minute.len()
    }

    /// The rows of each day, in order: (day, first row, end); None is the NULL day.
    fn day_ranges(&self) -> Vec<(Option<i32>, usize, usize)> {
        let mut out: Vec<(Option<i32>, usize, usize)> = Vec::new();
        for (i, d) in self.day.iter().enumerate() {
            match out.last_mut() {
                Some(last) if last.0 == d => last.2 = i + 1,
                _ => out.push((d, i, i + 1)),
            }
        }
        out
    }
}

/// A rollup laid out as a flat array of cells: (time slot within a day, then each kept
/// dimension's dense code) in mixed radix, which is key order.
///
/// When that array would not fit in a core's cache and the rollup has one slot a day,
/// the rows of a day are taken grouped by the first `outer` kept dimensions (a counting
/// sort) and only the cells of one group are held at a time.
struct Cells<'a> {
    spec: &'a RollupSpec,
    /// Time slots per day (1440 minutes, 24 hours, 1 day); 1 for all-time rollups.
    slots: usize,
    /// Minutes per time slot.
    slot_minutes: i32,
    /// Kept dimensions (indexes into `Rows::dims`) and their cardinalities.
    dims: Vec<(usize, usize)>,
    /// Cells per time slot.
    per_slot: usize,
    /// How many leading kept dimensions rows are grouped by first.
    outer: usize,
    /// Cells per group (per day when `outer` is 0).
    width: usize,
}

impl<'a> Cells<'a> {
    /// The layout of `spec` over `rows`, or None if its key space is too large (or its
    /// grain spans days) to aggregate directly.
    fn plan(spec: &'a RollupSpec, rows: &Rows) -> Option<Cells<'a>> {
        Cells::plan_within(spec, rows, MAX_CELLS)
    }

    /// `plan` holding at most `max_cells` cells at a time.
    fn plan_within(spec: &'a RollupSpec, rows: &Rows, max_cells: usize) -> Option<Cells<'a>> {
        let (slots, slot_minutes): (usize, i32) = match spec.grain {
            None => (1, 0),
            Some(TimeCol::Minute) => (1440, 1),
            Some(TimeCol::Hour) => (24, 60),
            Some(TimeCol::Day) => (1, 1440),
            Some(TimeCol::Week) => return None,
        };
        let dims: Vec<(usize, usize)> = Dim::ALL
            .iter()
            .enumerate()
            .filter(|(_, d)| spec.has(**d))
            .map(|(i, _)| (i, rows.dims[i].values.len().max(1)))
            .collect();
        let per_slot = dims
            .iter()
            .try_fold(1usize, |acc, (_, card)| acc.checked_mul(*card))?;
        // The fewest leading dimensions to group by for the cells of a group to fit. Rows
        // of a time slot cannot be grouped first: then a day's cells are held whole while
        // they are not far too many.
        let mut width = slots.checked_mul(per_slot)?;
        let mut outer = 0;
        while width > max_cells && slots == 1 && outer + 1 < dims.len() {
            width /= dims[outer].1;
            outer += 1;
        }
        let fits = width <= WIDE * max_cells && per_slot / width <= MAX_GROUPS;
        fits.then_some(Cells {
            spec,
            slots,
            slot_minutes,
            dims,
            per_slot,
            outer,
            width,
        })
    }

    /// The cells of rows `range` within their groups (within their day when `outer` is
    /// 0) into `cells`, and their groups into `groups`: a column at a time, in loops
    /// over plain slices.
    fn cells_of(&self, rows: &Rows, range: Range<usize>, day_start: Option<i32>, at: &mut Places) {
        let (cells, groups) = (&mut at.cells, &mut at.groups);
        cells.clear();
        let minutes = &rows.minute.values()[range.clone()];
        // Divisions by constants, which compile to multiplications.
        match (day_start, self.slot_minutes) {
            (Some(start), 1) => cells.extend(minutes.iter().map(|m| (m - start) as u32)),
            (Some(start), 60) => cells.extend(minutes.iter().map(|m| ((m - start) / 60) as u32)),
            _ => cells.resize(range.len(), 0),
        }
        groups.clear();
        groups.resize(range.len(), 0);
        let (outer, inner) = self.dims.split_at(self.outer);
        for (column, dims) in [(cells, inner), (groups, outer)] {
            for &(d, card) in dims {
                let codes = &rows.dims[d].codes[range.clone()];
                for (c, code) in column.iter_mut().zip(codes) {
                    *c = *c * card as u32 + code;
                }
            }
        }
    }

    /// Appends the rollup's rows to `out`.
    fn aggregate(&self, rows: &Rows, days: &[(Option<i32>, usize, usize)], out: &mut RollupRows) {
        let mut cells = Scratch::new(self.width);
        let mut at = Places::default();
        let keep = self.spec.projection();
        let key = |i| keep.key(&rows.keys[i]);
        let all = [(None, 0, rows.len())];
        let ranges = match self.spec.grain {
            None => &all[..],
            Some(_) => days,
        };
        for &(day, from, to) in ranges {
            self.cells_of(rows, from..to, day.map(|d| d * 1440), &mut at);
            let visit = |j: usize| Visit {
                cell: at.cells[j],
                row: (from + j) as u32,
            };
            if self.outer == 0 {
                cells.fold((0..to - from).map(visit), &rows.prices, key, out);
                continue;
            }
            // The day's rows grouped by a counting sort. Grouped by type and country,
            // the table's order within a day, a group's rows come in runs and are read
            // where they are; grouped by an id, they are spread over the day (or the
            // file), so each is copied out with its cell.
            let groups = self.per_slot / self.width;
            let group = |j: usize| at.groups[j] as usize;
            if (self.dims[..self.outer].iter()).all(|(d, _)| Dim::ALL[*d] <= Dim::Country) {
                let by_group = Buckets::sort(0..to - from, groups, group);
                for g in 0..groups {
                    let members = by_group.of(g).iter();
                    cells.fold(members.map(|j| visit(*j as usize)), &rows.prices, key, out);
                }
            } else {
                let by_group =
                    Buckets::sort_items(groups, (0..to - from).map(|j| (group(j), visit(j))));
                for g in 0..groups {
                    let visits = by_group.of(g);
                    // The rows are spread over the day: each is fetched well before its
                    // turn, or every visit waits for its prices and key in turn.
                    let ahead = visits
                        .iter()
                        .skip(prefetch::AHEAD)
                        .map(Some)
                        .chain(std::iter::repeat(None));
                    let visits = visits.iter().zip(ahead).map(|(v, next)| {
                        if let Some(next) = next {
                            rows.prefetch(next.row as usize);
                        }
                        *v
                    });
                    cells.fold(visits, &rows.prices, key, out);
                }
            }
        }
    }
}

/// Where a day's rows go: each row's cell within its group, and its group.
#[derive(Default)]
struct Places {
    cells: Vec<u32>,
    groups: Vec<u32>,
}

/// A row as the direct aggregation takes it: its cell and where it is.
#[derive(Debug, Clone, Copy, Default)]
struct Visit {
    cell: u32,
    row: u32,
}

/// The cells of one group (or day), which of them rows touched, and each touched
/// cell's key (made from the first row that touched it).
struct Scratch {
    aggs: Vec<Agg>,
    keys: Vec<Key>,
    /// A bit per cell: the touched ones, found in key order without sorting them.
    touched: Vec<u64>,
}

impl Scratch {
    fn new(cells: usize) -> Scratch {
        Scratch {
            aggs: vec![Agg::default(); cells],
            keys: vec![Key::default(); cells],
            touched: vec![0; cells.div_ceil(64)],
        }
    }

    /// Adds `visits` (of rows with `prices`) to their cells, then appends the touched
    /// cells to `out` in key order (the key of each made by `key` from a row in it) and
    /// clears them.
    #[inline]
    fn fold(
        &mut self,
        visits: impl Iterator<Item = Visit>,
        prices: &Prices,
        key: impl Fn(usize) -> Key,
        out: &mut RollupRows,
    ) {
        for v in visits {
            let c = v.cell as usize;
            let agg = &mut self.aggs[c];
            if agg.rows == 0 {
                self.keys[c] = key(v.row as usize);
                self.touched[c / 64] |= 1 << (c % 64);
            }
            add(agg, prices.of(v.row as usize));
        }
        for (w, word) in self.touched.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let c = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out.push(self.keys[c], &self.aggs[c]);
                self.aggs[c] = Agg::default();
            }
        }
    }
}

/// The bid and total prices of rows, as the batch holds them.
struct Prices<'a> {
    bid: &'a Decimal128Array,
    total: &'a Decimal128Array,
}

impl Prices<'_> {
    /// Row `i`'s bid and total in 10⁻⁹ units (precision 18 at parse time: each fits an
    /// i64), `NO_PRICE` for NULL.
    #[inline(always)]
    fn of(&self, i: usize) -> [i64; 2] {
        [price(self.bid, i), price(self.total, i)]
    }
}

#[inline(always)]
fn price(a: &Decimal128Array, i: usize) -> i64 {
    match a.is_valid(i) {
        true => a.value(i) as i64,
        false => NO_PRICE,
    }
}

/// No price: prices are DECIMAL(18, 9), so no value is this.
const NO_PRICE: i64 = i64::MIN;

/// Adds a row with `prices` (bid, total; `NO_PRICE` for NULL) to `agg`.
#[inline]
fn add(agg: &mut Agg, prices: [i64; 2]) {
    agg.rows += 1;
    if prices[0] != NO_PRICE {
        agg.bid.add(prices[0]);
    }
    if prices[1] != NO_PRICE {
        agg.total.add(prices[1]);
    }
}

/// Hash aggregation, for weekly rollups and key spaces too large for `Cells`, appending
/// the rollup's rows to `out`: one map per day for rollups of a day or finer (their keys
/// never span days), one for the file otherwise.
fn hashed(
    spec: &RollupSpec,
    rows: &Rows,
    days: &[(Option<i32>, usize, usize)],
    out: &mut RollupRows,
) {
    let daily = spec.grain.is_some_and(|g| g <= TimeCol::Day);
    let most = match daily {
        true => days
            .iter()
            .map(|(_, from, to)| to - from)
            .max()
            .unwrap_or(0),
        false => rows.len(),
    };
    let mut groups = Groups {
        keys: Vec::with_capacity(most),
        aggs: Vec::with_capacity(most),
        ..Groups::default()
    };
    let keep = spec.projection();
    for &(_, from, to) in days {
        for i in from..to {
            add(groups.slot(keep.key(&rows.keys[i])), rows.prices.of(i));
        }
        if daily {
            groups.drain_sorted(out);
        }
    }
    groups.drain_sorted(out);
}

/// Hash aggregation with small hash entries: the map holds an index into dense vectors
/// of keys and aggregates, so growing and probing move 28 bytes, not a whole aggregate.
#[derive(Default)]
struct Groups {
    index: FxHashMap<Key, u32>,
    keys: Vec<Key>,
    aggs: Vec<Agg>,
}

impl Groups {
    #[inline]
    fn slot(&mut self, key: Key) -> &mut Agg {
        let next = self.aggs.len() as u32;
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.keys.push(key);
            self.aggs.push(Agg::default());
        }
        &mut self.aggs[i as usize]
    }

    /// Appends the groups, sorted by key, to `out` and empties the map.
    fn drain_sorted(&mut self, out: &mut RollupRows) {
        self.index.clear();
        let mut order: Vec<(Key, u32)> = self
            .keys
            .drain(..)
            .enumerate()
            .map(|(i, k)| (k, i as u32))
            .collect();
        order.sort_unstable_by_key(|e| e.0);
        for (k, i) in order {
            out.push(k, &self.aggs[i as usize]);
        }
        self.aggs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes follow the values' order, whether found by table or by hash, NULL ids last.
    #[test]
    fn dense_codes_sort_as_values() {
        for column in [
            vec![5, -3, 5, 7, -3, NULL_ID, 0],
            vec![NULL_ID, NULL_ID],
            vec![i64::MIN, 3, i64::MAX - 1, 3, NULL_ID],
            vec![],
        ] {
            let dense = Dense::new(column.iter().copied());
            let mut want = column.clone();
            want.sort_unstable();
            want.dedup();
            assert_eq!(dense.values, want);
            let back: Vec<i64> = dense
                .codes
                .iter()
                .map(|c| dense.values[*c as usize])
                .collect();
            assert_eq!(back, column);
        }
    }
    use crate::model::schema::Zone;
    use crate::rollup::default_specs;

    /// The direct and the hashed aggregation agree, for every default rollup and a
    /// weekly one, on rows with NULLs in every key column.
    #[test]
    fn cells_and_hash_agree() {
        let mut text = crate::app::gen::sample_file(3_000, 5);
        text.extend_from_slice(b",serve,,,,,,,\n");
        text.extend_from_slice(b"1717249500000,,,7,,0.5,,,\n");
        text.extend_from_slice(b"1717249500000,purchase,,,9,,,1.25,ZZ\n");
        let countries = Countries::default();
        let with = crate::ingest::fold::FoldWith {
            zone: Zone::Utc,
            specs: &[],
            countries: &countries,
        };
        let folded = crate::ingest::fold::fold_bytes(
            std::path::Path::new("t.csv"),
            &text,
            0,
            (0, 0),
            with,
            0,
        )
        .unwrap();
        let rows = Rows::decode(&folded.table, &Positions::TABLE, &countries).unwrap();
        let days = rows.day_ranges();
        let mut specs = default_specs();
        specs.push(RollupSpec::new(Some(TimeCol::Week), &[Dim::Country]));
        for spec in &specs {
            let mut want = RollupRows::default();
            hashed(spec, &rows, &days, &mut want);
            // Every layout that fits: the whole key space, and (with few cells allowed)
            // cells of one outer value at a time.
            for most in [MAX_CELLS, 64] {
                if let Some(cells) = Cells::plan_within(spec, &rows, most) {
                    let mut got = RollupRows::default();
                    cells.aggregate(&rows, &days, &mut got);
                    assert_eq!(got, want, "{} in {most} cells", spec.name());
                }
            }
            let total: u64 = want.iter().map(|r| r.1.rows).sum();
            assert_eq!(total, rows.len() as u64, "{}", spec.name());
        }
    }
}
