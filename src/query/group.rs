//! Groups of a rollup scan: each group-by column's value as a dense code that orders as
//! the answer orders it (a text column by its text, NULL last), the codes of a row packed
//! into one integer in group-by order, and the groups found from that integer.
//!
//! A small code space is a direct table (packed key → group); a larger one starts as a
//! sorted list that rows append to while their keys ascend (the rollup's sort order often
//! is the group order) and becomes a hash map only when a key comes out of order. Groups
//! in a table or a sorted list come out in order without a sort.

use std::ops::Range;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::schema::{Column, TimeCol, EVENT_TYPES};
use crate::rollup::{Key, NULL_ID, NULL_TIME};

/// The most entries of a direct table (4 bytes each).
const DIRECT_MAX: u128 = 1 << 22;

/// Per code the rank of its text among the non-NULL texts, and per rank its code; code 0
/// (NULL) ranks last.
pub fn ranks(names: &[String]) -> (Vec<u32>, Vec<u16>) {
    let mut codes: Vec<u16> = (1..names.len() as u16).collect();
    codes.sort_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
    let mut rank = vec![codes.len() as u32; names.len()];
    for (r, c) in codes.iter().enumerate() {
        rank[*c as usize] = r as u32;
    }
    (rank, codes)
}

/// The event type names by code (code 0, NULL, empty).
pub fn type_names() -> Vec<String> {
    std::iter::once(String::new())
        .chain(EVENT_TYPES.iter().map(|s| s.to_string()))
        .collect()
}

/// How one group-by column's value becomes its code (NULL: the last code).
enum Code {
    /// Buckets of column `col` from the first one (which starts at `base`).
    Time { base: i32, col: TimeCol },
    /// A text column's code → its rank.
    Rank { country: bool, rank: Vec<u32> },
    /// An id from the smallest one.
    Id { publ: bool, min: i64 },
}

impl Code {
    /// Puts each key's code times `radix` in its packed key in `out` (`first`: `out`
    /// holds nothing yet, so the codes are written rather than added), in 64-bit
    /// arithmetic when `narrow` (the whole packed key fits 64 bits), one column at a time
    /// so the loop is the same for every row.
    fn add_to(
        &self,
        keys: &[Key],
        null: u64,
        radix: u128,
        narrow: bool,
        first: bool,
        out: &mut Vec<u128>,
    ) {
        let at = Cells {
            keys,
            radix,
            narrow,
            first,
        };
        match self {
            // The bucket length a constant, its division compiles to a multiply.
            Code::Time { base, col } => match col {
                TimeCol::Minute => at.add(out, |k| {
                    time_code_of::<{ len(TimeCol::Minute) }>(k, *base, null)
                }),
                TimeCol::Hour => at.add(out, |k| {
                    time_code_of::<{ len(TimeCol::Hour) }>(k, *base, null)
                }),
                TimeCol::Day => at.add(out, |k| {
                    time_code_of::<{ len(TimeCol::Day) }>(k, *base, null)
                }),
                TimeCol::Week => at.add(out, |k| {
                    time_code_of::<{ len(TimeCol::Week) }>(k, *base, null)
                }),
            },
            Code::Rank {
                country: false,
                rank,
            } => at.add(out, |k| u64::from(rank[k.typ as usize])),
            Code::Rank {
                country: true,
                rank,
            } => at.add(out, |k| {
                rank.get(k.country as usize).map_or(null, |r| u64::from(*r))
            }),
            Code::Id { publ, min } => at.add(out, |k| match k.id(*publ) {
                NULL_ID => null,
                v => v.wrapping_sub(*min) as u64,
            }),
        }
    }
}

/// The keys a column's codes are put in packed keys for, at the column's radix.
struct Cells<'a> {
    keys: &'a [Key],
    radix: u128,
    narrow: bool,
    /// Whether this is the first column: its codes are written, not added.
    first: bool,
}

impl Cells<'_> {
    /// Adds `code(key) * radix` to each packed key of `out`, or for the first column
    /// fills `out` with them.
    #[inline(always)]
    fn add(&self, out: &mut Vec<u128>, code: impl Fn(&Key) -> u64) {
        match (self.narrow, self.first) {
            (true, true) => {
                let radix = self.radix as u64;
                out.extend(self.keys.iter().map(|k| u128::from(code(k) * radix)));
            }
            (false, true) => {
                out.extend(self.keys.iter().map(|k| u128::from(code(k)) * self.radix));
            }
            (true, false) => {
                let radix = self.radix as u64;
                let cells = out.iter_mut().zip(self.keys);
                cells.for_each(|(o, k)| *o += u128::from(code(k) * radix));
            }
            (false, false) => {
                let cells = out.iter_mut().zip(self.keys);
                cells.for_each(|(o, k)| *o += u128::from(code(k)) * self.radix);
            }
        }
    }
}

/// The code of key `k`'s time bucket: buckets of `LEN` minutes from `base`.
#[inline(always)]
fn time_code_of<const LEN: u32>(k: &Key, base: i32, null: u64) -> u64 {
    match k.time {
        NULL_TIME => null,
        t => u64::from(t.abs_diff(base) / LEN),
    }
}

/// The minutes of a bucket of `t`.
const fn len(t: TimeCol) -> u32 {
    crate::query::filter::bucket_len(t) as u32
}

/// Rows of a rollup's keys: the keys and runs of positions among them.
pub type KeyRuns<'a> = (&'a [Key], &'a [Range<usize>]);

/// Packs the group-by columns of a key into one integer that orders groups as the answer
/// does (group-by columns in order, each ascending, NULL last).
pub struct Coder {
    codes: Vec<(Code, u64, u128)>,
    /// Distinct packed keys possible.
    pub space: u128,
    /// How many leading rollup key columns (time, type, country, advertiser, publisher)
    /// decide the packed key: rows that agree on them are in one group.
    pub lead: usize,
}

impl Coder {
    /// The coder of `group` over the rows `runs` of `keys`, for each `(keys, runs)` of
    /// `over` (their values bound the codes; `ids`, when given, bounds the advertiser and
    /// the publisher ids among them, so that many rows need not be read for it);
    /// `too_large` if the codes cannot be packed in 128 bits.
    pub fn new(
        group: &[Column],
        over: &[KeyRuns<'_>],
        ids: [Option<(i64, i64)>; 2],
        countries: &[String],
    ) -> Result<Coder> {
        let mut cols: Vec<(Code, u64)> = Vec::with_capacity(group.len());
        let mut lead = 0;
        for c in group {
            // The column's code, and its place in a rollup key's sort order.
            let (col, at) = match *c {
                Column::Time(t) => (time_code(t, over), 0),
                Column::Type => (rank_code(false, &type_names()), 1),
                Column::Country => (rank_code(true, countries), 2),
                Column::AdvertiserId => (id_code(false, over, ids[0]), 3),
                Column::PublisherId => (id_code(true, over, ids[1]), 4),
                c => unreachable!("{c} is not a rollup column"),
            };
            lead = lead.max(at + 1);
            cols.push(col);
        }
        let mut space: u128 = 1;
        let mut codes = Vec::with_capacity(cols.len());
        for (code, card) in cols.into_iter().rev() {
            codes.push((code, card - 1, space));
            space = space.checked_mul(u128::from(card)).ok_or_else(|| {
                Error::TooLarge(
                    "the group-by columns take too many distinct values to group together; \
                     group by fewer columns"
                        .into(),
                )
            })?;
        }
        codes.reverse();
        Ok(Coder { codes, space, lead })
    }

    /// How group-by column `slot` sits in a packed key.
    pub fn weight(&self, slot: usize) -> Weight {
        let (_, null, radix) = &self.codes[slot];
        Weight {
            radix: *radix,
            null: u128::from(*null),
        }
    }

    /// The packed keys of `keys` into `out` (replacing what it held).
    pub fn pack(&self, keys: &[Key], out: &mut Vec<u128>) {
        out.clear();
        if self.codes.is_empty() {
            return out.resize(keys.len(), 0);
        }
        let narrow = self.space <= u128::from(u64::MAX);
        for (i, (code, null, radix)) in self.codes.iter().enumerate() {
            code.add_to(keys, *null, *radix, narrow, i == 0, out);
        }
    }
}

/// A text column's code: its rank among the column's texts.
fn rank_code(country: bool, names: &[String]) -> (Code, u64) {
    let (rank, _) = ranks(names);
    let card = rank.len() as u64;
    (Code::Rank { country, rank }, card)
}

/// A time column's code: buckets from the first one among the rows, NULL after the last.
fn time_code(t: TimeCol, over: &[KeyRuns<'_>]) -> (Code, u64) {
    let first = (over.iter())
        .filter_map(|(keys, runs)| runs.first().map(|r| keys[r.start].time))
        .min();
    let last = (over.iter())
        .filter_map(|(keys, runs)| {
            runs.iter().rev().find_map(|r| {
                let non_null = keys[r.clone()].partition_point(|k| k.time != NULL_TIME);
                (non_null > 0).then(|| keys[r.start + non_null - 1].time)
            })
        })
        .max();
    // Buckets are `len(t)` minutes apart, so a bucket's index from the first is the
    // distance from its start divided by that (every row is at or after the first).
    match (first, last) {
        (Some(first), Some(last)) if first != NULL_TIME => {
            let base = t.bucket(first);
            let card = u64::from(last.abs_diff(base) / len(t)) + 2;
            (Code::Time { base, col: t }, card)
        }
        _ => (Code::Time { base: 0, col: t }, 1),
    }
}

/// Rows from which an id column's code is taken from known bounds of its ids rather than
/// from reading every row.
const BOUNDED_ROWS: usize = 1 << 14;

/// An id column's code: offsets from the smallest id (ids are 32-bit, so they span less
/// than 2^32). The smallest and largest id are `bounds` when known and the rows are
/// many, else read from the rows.
fn id_code(publ: bool, over: &[KeyRuns<'_>], bounds: Option<(i64, i64)>) -> (Code, u64) {
    let rows = over
        .iter()
        .flat_map(|(keys, runs)| runs.iter().map(|r| &keys[r.clone()]));
    let many = rows.clone().map(<[Key]>::len).sum::<usize>() > BOUNDED_ROWS;
    let (min, max) = match bounds.filter(|_| many) {
        Some(bounds) => bounds,
        None => rows
            .flatten()
            .map(|k| k.id(publ))
            .filter(|v| *v != NULL_ID)
            .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v))),
    };
    if min > max {
        return (Code::Id { publ, min: 0 }, 1);
    }
    (Code::Id { publ, min }, max.abs_diff(min) + 2)
}

/// One group-by column's place in a packed key.
#[derive(Debug, Clone, Copy)]
pub struct Weight {
    radix: u128,
    /// The column's NULL code (its largest).
    pub null: u128,
}

impl Weight {
    /// The column's code in packed key `key` (in 64-bit arithmetic when it fits).
    #[inline]
    pub fn code(&self, key: u128) -> u128 {
        match (u64::try_from(key), u64::try_from(self.radix)) {
            (Ok(k), Ok(r)) => u128::from(k / r % (self.null as u64 + 1)),
            _ => key / self.radix % (self.null + 1),
        }
    }

    /// An integer ordering the column's codes in a direction, NULL last either way.
    pub fn sort_key(&self, key: u128, desc: bool) -> u128 {
        match self.code(key) {
            c if c == self.null => u128::MAX,
            c if desc => self.null - 1 - c,
            c => c,
        }
    }
}

/// How a packed key finds its group.
enum Index {
    /// Packed key → group + 1 (0: none yet).
    Direct(Vec<u32>),
    /// Groups were created in ascending key order (their keys are sorted).
    Sorted,
    Hash(FxHashMap<u128, u32>),
}

/// The groups found so far: their packed keys and a rollup key of each.
pub struct Groups {
    pub keys: Vec<u128>,
    /// A rollup key of each group (its group-by values are read from it: a copy, as the
    /// groups' rows lie all over the rollup).
    pub values: Vec<Key>,
    index: Index,
    space: u128,
}

impl Groups {
    /// Groups of `coder`'s keys over `matched` rows.
    pub fn new(coder: &Coder, matched: usize) -> Groups {
        let direct = coder.space <= DIRECT_MAX && coder.space <= 8 * matched as u128 + 1024;
        let room = coder.space.min(matched as u128).min(DIRECT_MAX) as usize;
        Groups {
            keys: Vec::with_capacity(room),
            values: Vec::with_capacity(room),
            index: if direct {
                Index::Direct(vec![0; coder.space as usize])
            } else {
                Index::Sorted
            },
            space: coder.space,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// How many groups there is room for without growing.
    pub fn capacity(&self) -> usize {
        self.keys.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The group of packed key `key` (of rollup key `value`), and whether it is new. A
    /// direct table's lookup is inlined into the scan; the other indexes are not.
    #[inline(always)]
    pub fn find(&mut self, key: u128, value: &Key) -> (u32, bool) {
        if let Index::Direct(table) = &mut self.index {
            let slot = &mut table[key as usize];
            if *slot != 0 {
                return (*slot - 1, false);
            }
            let next = self.keys.len() as u32;
            *slot = next + 1;
            self.keys.push(key);
            self.values.push(*value);
            return (next, true);
        }
        self.find_indexed(key, value)
    }

    /// The groups of packed keys `packed` (of rollup keys `values`) into `found`, making
    /// the new ones; whether the index is a direct table (else nothing was done: find
    /// them one by one).
    #[inline]
    pub fn find_direct(&mut self, packed: &[u128], values: &[Key], found: &mut Vec<u32>) -> bool {
        let Index::Direct(table) = &mut self.index else {
            return false;
        };
        found.clear();
        for (&key, value) in packed.iter().zip(values) {
            let slot = &mut table[key as usize];
            if *slot == 0 {
                self.keys.push(key);
                self.values.push(*value);
                *slot = self.keys.len() as u32;
            }
            found.push(*slot - 1);
        }
        true
    }

    /// `find` through a sorted list or a hash map.
    #[inline(never)]
    fn find_indexed(&mut self, key: u128, value: &Key) -> (u32, bool) {
        let next = self.keys.len() as u32;
        let found = match &mut self.index {
            Index::Direct(_) => unreachable!("found by `find`"),
            Index::Sorted => match self.keys.last() {
                None => None,
                Some(last) if key > *last => None,
                Some(_) => match self.keys.binary_search(&key) {
                    Ok(g) => Some(g as u32),
                    Err(_) => {
                        let map = self.keys.iter().enumerate().map(|(g, k)| (*k, g as u32));
                        let mut map: FxHashMap<u128, u32> = map.collect();
                        map.insert(key, next);
                        self.index = Index::Hash(map);
                        None
                    }
                },
            },
            Index::Hash(map) => match map.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(next);
                    None
                }
            },
        };
        match found {
            Some(g) => (g, false),
            None => {
                self.keys.push(key);
                self.values.push(*value);
                (next, true)
            }
        }
    }

    /// Every group, in packed-key order when that comes without a sort; `None` when the
    /// groups must be sorted.
    pub fn in_order(&self) -> Option<Vec<u32>> {
        match &self.index {
            Index::Sorted => Some((0..self.keys.len() as u32).collect()),
            Index::Direct(table) if self.space <= 16 * self.keys.len() as u128 + 1024 => {
                Some(table.iter().filter(|g| **g != 0).map(|g| g - 1).collect())
            }
            Index::Direct(_) | Index::Hash(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(time: i32, typ: u8, adv: i64) -> Key {
        Key::new(time, typ, 0, adv, 0)
    }

    /// Packed keys order as the group-by columns do, NULLs last, and every way of
    /// indexing finds the same groups.
    #[test]
    fn packed_keys_order_and_find_groups() {
        let keys = vec![
            key(0, 2, 5),
            key(60, 1, NULL_ID),
            key(60, 3, 7),
            key(120, 0, 5),
            key(NULL_TIME, 2, i32::MAX as i64),
        ];
        let runs = vec![Range {
            start: 0,
            end: keys.len(),
        }];
        let group = [
            Column::AdvertiserId,
            Column::Time(TimeCol::Hour),
            Column::Type,
        ];
        let coder = Coder::new(&group, &[(&keys, &runs)], [None; 2], &[]).unwrap();
        let mut packed = Vec::new();
        coder.pack(&keys, &mut packed);
        let mut by_key: Vec<usize> = (0..keys.len()).collect();
        by_key.sort_by_key(|i| packed[*i]);
        assert_eq!(by_key, vec![0, 3, 2, 4, 1]);
        for matched in [0, 1 << 30] {
            let mut groups = Groups::new(&coder, matched);
            let rows = packed.iter().zip(&keys);
            for (row, (key, value)) in rows.clone().chain(rows).enumerate() {
                let (g, new) = groups.find(*key, value);
                assert_eq!((g as usize, new), (row % keys.len(), row < keys.len()));
            }
        }
    }
}
