//! One file's partial aggregates: its table rows, sorted by day, folded into sorted rows
//! for every rollup spec.
//!
//! The file's dimension values are coded densely once, in sorted order, so the order of
//! codes is the order of keys. A rollup whose key space for one day (for all-time
//! rollups: for the whole file) is small is aggregated in a flat array of cells indexed by
//! the mixed-radix code of the key: no hashing, no pointers. Its touched cells are then
//! sorted and emitted in key order. Larger key spaces fall back to a hash map of keys.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::Result;
use crate::model::schema::{type_code, TableCol, TimeCol};
use crate::rollup::{Agg, Countries, Dim, Key, RollupRows, RollupSpec, NULL_ID, NULL_TIME};

/// A file's partial aggregate: one sorted row set per rollup spec, in spec order.
pub type Partial = Vec<RollupRows>;

/// Most cells a rollup is aggregated in directly (~23 MB of aggregates).
const MAX_CELLS: usize = 1 << 18;

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
        let names: Vec<String> = Positions::COLUMNS.iter().map(|c| c.sql_name()).collect();
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
    Ok(specs
        .iter()
        .map(|spec| {
            let mut part = match Cells::plan(spec, &rows) {
                Some(cells) => cells.aggregate(&rows, &days),
                None => hashed(spec, &rows, &days),
            };
            part.shrink_to_fit();
            part
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

/// The key columns and measures of a file's rows, decoded once.
struct Rows {
    /// Local day of each row; None for NULL `ts`.
    day: Vec<Option<i32>>,
    /// Local minute of each row; `NULL_TIME` for NULL `ts`.
    minute: Vec<i32>,
    /// The row's value of each dimension, in `Dim::ALL` order (type codes, country
    /// codes, advertiser and publisher ids; NULL as in `Key`).
    dims: [Dense; 4],
    bid: Vec<Option<i64>>,
    total: Vec<Option<i64>>,
}

impl Rows {
    fn decode(batch: &RecordBatch, at: &Positions, countries: &Countries) -> Result<Rows> {
        let n = batch.num_rows();
        let column = |c: TableCol| batch.column(at.of(c));
        let day = column(TableCol::Day).as_primitive::<Date32Type>();
        let minute = column(TableCol::LocalMinute).as_primitive::<Int32Type>();
        let types = column(TableCol::Type).as_string::<i32>();
        let country_text = column(TableCol::Country).as_string::<i32>();
        let adv = column(TableCol::AdvertiserId).as_primitive::<Int32Type>();
        let publ = column(TableCol::PublisherId).as_primitive::<Int32Type>();
        let price = |a: &arrow::array::Decimal128Array| -> Vec<Option<i64>> {
            // Precision 18 at parse time guarantees the value fits an i64.
            (0..n)
                .map(|i| a.is_valid(i).then(|| a.value(i) as i64))
                .collect()
        };
        let id = |a: &arrow::array::Int32Array, i: usize| {
            if a.is_valid(i) {
                i64::from(a.value(i))
            } else {
                NULL_ID
            }
        };
        let mut local: FxHashMap<&str, u16> = FxHashMap::default();
        let mut country = Vec::with_capacity(n);
        for i in 0..n {
            country.push(if country_text.is_valid(i) {
                let text = country_text.value(i);
                match local.get(text) {
                    Some(c) => i64::from(*c),
                    None => {
                        let c = countries.code(text)?;
                        local.insert(text, c);
                        i64::from(c)
                    }
                }
            } else {
                0
            });
        }
        let typ = (0..n).map(|i| {
            if types.is_valid(i) {
                i64::from(type_code(types.value(i)).unwrap_or(0))
            } else {
                0
            }
        });
        Ok(Rows {
            day: (0..n)
                .map(|i| day.is_valid(i).then(|| day.value(i)))
                .collect(),
            minute: (0..n)
                .map(|i| {
                    if minute.is_valid(i) {
                        minute.value(i)
                    } else {
                        NULL_TIME
                    }
                })
                .collect(),
            dims: [
                Dense::new(typ),
                Dense::new(country.iter().copied()),
                Dense::new((0..n).map(|i| id(adv, i))),
                Dense::new((0..n).map(|i| id(publ, i))),
            ],
            bid: price(column(TableCol::BidPrice).as_primitive::<Decimal128Type>()),
            total: price(column(TableCol::TotalPrice).as_primitive::<Decimal128Type>()),
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
                Some(last) if last.0 == *d => last.2 = i + 1,
                _ => out.push((*d, i, i + 1)),
            }
        }
        out
    }

    #[inline]
    fn add(&self, agg: &mut Agg, i: usize) {
        agg.rows += 1;
        if let Some(v) = self.bid[i] {
            agg.bid.add(v);
        }
        if let Some(v) = self.total[i] {
            agg.total.add(v);
        }
    }

    /// The full key of row `i` (every dimension kept).
    fn key(&self, i: usize) -> Key {
        let value = |d: usize| self.dims[d].values[self.dims[d].codes[i] as usize];
        Key {
            time: self.minute[i],
            typ: value(0) as u8,
            country: value(1) as u16,
            adv: value(2),
            publ: value(3),
        }
    }
}

/// A rollup laid out as a flat array of cells: (time slot within a day, then each kept
/// dimension's dense code) in mixed radix, which is key order.
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
}

impl<'a> Cells<'a> {
    /// The layout of `spec` over `rows`, or None if its key space is too large (or its
    /// grain spans days) to aggregate directly.
    fn plan(spec: &'a RollupSpec, rows: &Rows) -> Option<Cells<'a>> {
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
        (slots.checked_mul(per_slot)? <= MAX_CELLS).then_some(Cells {
            spec,
            slots,
            slot_minutes,
            dims,
            per_slot,
        })
    }

    #[inline]
    fn cell(&self, rows: &Rows, i: usize, day_start: Option<i32>) -> usize {
        let slot = match day_start {
            Some(start) if self.slot_minutes > 0 => {
                ((rows.minute[i] - start) / self.slot_minutes) as usize
            }
            _ => 0,
        };
        self.dims.iter().fold(slot, |acc, (d, card)| {
            acc * card + rows.dims[*d].codes[i] as usize
        })
    }

    /// The key of `cell`; `day_start` is None for the NULL day (and all-time rollups).
    fn key(&self, rows: &Rows, mut cell: usize, day_start: Option<i32>) -> Key {
        let mut key = Key::default();
        for (d, card) in self.dims.iter().rev() {
            let value = rows.dims[*d].values[cell % card];
            cell /= card;
            match Dim::ALL[*d] {
                Dim::Type => key.typ = value as u8,
                Dim::Country => key.country = value as u16,
                Dim::Advertiser => key.adv = value,
                Dim::Publisher => key.publ = value,
            }
        }
        key.time = match (self.spec.grain, day_start) {
            (None, _) => 0,
            (Some(_), None) => NULL_TIME,
            (Some(_), Some(start)) => start + cell as i32 * self.slot_minutes,
        };
        key
    }

    fn aggregate(&self, rows: &Rows, days: &[(Option<i32>, usize, usize)]) -> RollupRows {
        let mut aggs = vec![Agg::default(); self.slots * self.per_slot];
        let mut touched: Vec<u32> = Vec::new();
        let mut out = RollupRows::default();
        let mut drain = |touched: &mut Vec<u32>, aggs: &mut [Agg], day_start| {
            touched.sort_unstable();
            for c in touched.drain(..) {
                let c = c as usize;
                out.push(self.key(rows, c, day_start), &aggs[c]);
                aggs[c] = Agg::default();
            }
        };
        if self.spec.grain.is_none() {
            for i in 0..rows.len() {
                let c = self.cell(rows, i, None);
                if aggs[c].rows == 0 {
                    touched.push(c as u32);
                }
                rows.add(&mut aggs[c], i);
            }
            drain(&mut touched, &mut aggs, None);
        } else {
            for &(day, from, to) in days {
                let start = day.map(|d| d * 1440);
                for i in from..to {
                    let c = self.cell(rows, i, start);
                    if aggs[c].rows == 0 {
                        touched.push(c as u32);
                    }
                    rows.add(&mut aggs[c], i);
                }
                drain(&mut touched, &mut aggs, start);
            }
        }
        out
    }
}

/// Hash aggregation, for key spaces too large for `Cells`: one map per day for rollups
/// of a day or finer (their keys never span days), one for the file otherwise.
fn hashed(spec: &RollupSpec, rows: &Rows, days: &[(Option<i32>, usize, usize)]) -> RollupRows {
    let daily = spec.grain.is_some_and(|g| g <= TimeCol::Day);
    let mut groups = Groups::default();
    let mut out = RollupRows::default();
    for &(_, from, to) in days {
        for i in from..to {
            rows.add(groups.slot(spec.key(&rows.key(i))), i);
        }
        if daily {
            groups.drain_sorted(&mut out);
        }
    }
    groups.drain_sorted(&mut out);
    out
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
            let want = hashed(spec, &rows, &days);
            if let Some(cells) = Cells::plan(spec, &rows) {
                assert_eq!(cells.aggregate(&rows, &days), want, "{}", spec.name());
            }
            let total: u64 = want.iter().map(|r| r.1.rows).sum();
            assert_eq!(total, rows.len() as u64, "{}", spec.name());
        }
    }
}
