//! Rollups: which aggregates are kept (specs), their keys and exact aggregate values,
//! and the merge that combines per-file partials into a rollup.
//!
//! A rollup is a time grain (or all time) plus some of type, country, advertiser_id and
//! publisher_id. Per key it keeps the row count and, for bid_price and total_price, the
//! non-NULL count, exact sum, min and max. All arithmetic is on integers, so merging
//! partials in any order gives bit-identical rollups.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::{Column, TimeCol};

/// A grouping dimension a rollup can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    Type,
    Country,
    Advertiser,
    Publisher,
}

impl Dim {
    pub const ALL: [Dim; 4] = [Dim::Type, Dim::Country, Dim::Advertiser, Dim::Publisher];

    /// The query column this dimension holds.
    pub fn column(self) -> Column {
        match self {
            Dim::Type => Column::Type,
            Dim::Country => Column::Country,
            Dim::Advertiser => Column::AdvertiserId,
            Dim::Publisher => Column::PublisherId,
        }
    }

    /// The dimension holding `column`, if any.
    pub fn of(column: Column) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.column() == column)
    }

    fn short(self) -> &'static str {
        match self {
            Dim::Type => "type",
            Dim::Country => "country",
            Dim::Advertiser => "advertiser",
            Dim::Publisher => "publisher",
        }
    }
}

/// What one rollup keeps: a time grain (None = all time) and a set of dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RollupSpec {
    pub grain: Option<TimeCol>,
    pub dims: Vec<Dim>,
}

impl RollupSpec {
    pub fn new(grain: Option<TimeCol>, dims: &[Dim]) -> Self {
        let mut dims = dims.to_vec();
        dims.sort();
        dims.dedup();
        RollupSpec { grain, dims }
    }

    /// The rollup's name, e.g. `day_type_country`; `all_...` when it has no time grain.
    pub fn name(&self) -> String {
        let mut name = self.grain.map_or("all", TimeCol::name).to_string();
        for d in &self.dims {
            name.push('_');
            name.push_str(d.short());
        }
        name
    }

    /// The spec a name like `day_type_country` or `all_advertiser_publisher` stands for
    /// (dimensions in any order).
    pub fn from_name(name: &str) -> std::result::Result<RollupSpec, String> {
        let mut parts = name.split('_');
        let grain = match parts.next().unwrap_or_default() {
            "all" => None,
            "minute" => Some(TimeCol::Minute),
            "hour" => Some(TimeCol::Hour),
            "day" => Some(TimeCol::Day),
            "week" => Some(TimeCol::Week),
            other => {
                return Err(format!(
                    "rollup {name:?}: {other:?} is not a grain (minute, hour, day, week or all)"
                ))
            }
        };
        let dims = parts
            .map(|p| {
                Dim::ALL.into_iter().find(|d| d.short() == p).ok_or_else(|| {
                    format!(
                        "rollup {name:?}: {p:?} is not a dimension (type, country, advertiser or publisher)"
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RollupSpec::new(grain, &dims))
    }

    pub fn has(&self, dim: Dim) -> bool {
        self.dims.contains(&dim)
    }

    /// Whether this rollup can produce `column` as a group-by or filter column.
    pub fn covers(&self, column: Column) -> bool {
        match column {
            Column::Time(t) => self.grain.is_some_and(|g| g <= t),
            c => Dim::of(c).is_some_and(|d| self.has(d)),
        }
    }

    /// The key of a row with these column values under this rollup.
    #[inline]
    pub fn key(&self, row: &Key) -> Key {
        Key {
            time: match self.grain {
                None => 0,
                Some(_) if row.time == NULL_TIME => NULL_TIME,
                Some(g) => g.bucket(row.time),
            },
            typ: if self.has(Dim::Type) { row.typ } else { 0 },
            country: if self.has(Dim::Country) {
                row.country
            } else {
                0
            },
            adv: if self.has(Dim::Advertiser) {
                row.adv
            } else {
                0
            },
            publ: if self.has(Dim::Publisher) {
                row.publ
            } else {
                0
            },
        }
    }
}

/// The default rollup set: covers the five reference queries and the common shapes
/// (see the README for what each answers and its size at bench scale).
pub fn default_specs() -> Vec<RollupSpec> {
    use Dim::*;
    use TimeCol::*;
    vec![
        RollupSpec::new(Some(Minute), &[Type]),
        RollupSpec::new(Some(Hour), &[Type, Country]),
        RollupSpec::new(Some(Day), &[Type, Country]),
        RollupSpec::new(Some(Day), &[Type, Advertiser]),
        RollupSpec::new(Some(Day), &[Type, Country, Publisher]),
        RollupSpec::new(None, &[Type, Advertiser]),
        RollupSpec::new(None, &[Type, Country, Advertiser]),
        RollupSpec::new(None, &[Type, Country, Publisher]),
        RollupSpec::new(None, &[Advertiser, Publisher]),
    ]
}

/// NULL in a time key (sorts last).
pub const NULL_TIME: i32 = i32::MAX;
/// NULL in an id key (sorts last).
pub const NULL_ID: i64 = i64::MAX;

/// A rollup key. Dimensions a rollup does not keep are 0; NULLs are the `NULL_*`
/// sentinels (0 for type and country codes). Ordered by time first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key {
    /// Local minutes of the bucket start (0 for all-time rollups).
    pub time: i32,
    /// Event type code (see `schema::type_code`), 0 = NULL.
    pub typ: u8,
    /// Country code (see `countries`), 0 = NULL.
    pub country: u16,
    pub adv: i64,
    pub publ: i64,
}

/// Exact aggregates of one price column: non-NULL count, sum, min, max in 10^-9 units.
/// Packed to 8-byte alignment (the i128 would otherwise pad every rollup row to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, packed(8))]
pub struct Measure {
    pub n: u64,
    pub sum: i128,
    pub min: i64,
    pub max: i64,
}

impl Measure {
    #[inline]
    pub fn add(&mut self, v: i64) {
        if self.n == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.n += 1;
        self.sum += v as i128;
    }

    #[inline]
    pub fn merge(&mut self, o: &Measure) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

impl Measure {
    /// Takes out a contribution; min and max are left for the caller to recompute
    /// (see `RollupRows::combine`).
    #[inline]
    fn sub(&mut self, o: &Measure) {
        self.n -= o.n;
        self.sum -= o.sum;
        if self.n == 0 {
            *self = Measure::default();
        }
    }

    /// Whether taking out `o` may change this measure's min or max.
    #[inline]
    fn extremes_touched_by(&self, o: &Measure) -> bool {
        o.n > 0 && self.n > o.n && (o.min == self.min || o.max == self.max)
    }

    /// Min and max only, from another contribution.
    #[inline]
    fn merge_extremes(&mut self, o: &Measure) {
        if o.n == 0 {
            return;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// The aggregates kept per rollup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agg {
    pub rows: u64,
    pub bid: Measure,
    pub total: Measure,
}

impl Agg {
    #[inline]
    pub fn merge(&mut self, o: &Agg) {
        self.rows += o.rows;
        self.bid.merge(&o.bid);
        self.total.merge(&o.total);
    }
}

/// Min and max of the two price columns over some rows, in 10⁻⁹ units; None where the
/// rows hold no value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extremes {
    pub bid: Option<(i64, i64)>,
    pub total: Option<(i64, i64)>,
}

/// One rollup's rows, sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RollupRows(pub Vec<(Key, Agg)>);

impl RollupRows {
    /// Sorts a hash map of keys into rows.
    pub fn from_map(map: FxHashMap<Key, Agg>) -> Self {
        let mut rows: Vec<(Key, Agg)> = map.into_iter().collect();
        rows.sort_unstable_by_key(|r| r.0);
        RollupRows(rows)
    }

    /// Merges sorted rows into one sorted set (a linear merge).
    pub fn merge(&self, other: &RollupRows) -> RollupRows {
        let (a, b) = (&self.0, &other.0);
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Less => {
                    out.push(a[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(b[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let mut agg = a[i].1;
                    agg.merge(&b[j].1);
                    out.push((a[i].0, agg));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        RollupRows(out)
    }

    /// `self` plus `add` minus `sub` (each sorted). Sums and counts are exact; keys whose
    /// min or max may have come from `sub` are returned, and the caller recomputes their
    /// extremes from the remaining partials with `recompute_extremes`.
    pub fn combine(&self, add: &RollupRows, sub: &RollupRows) -> (RollupRows, Vec<Key>) {
        match (add.is_empty(), sub.is_empty()) {
            (true, true) => (self.clone(), Vec::new()),
            (false, true) => (self.merge(add), Vec::new()),
            (true, false) => subtract(&self.0, sub),
            (false, false) => subtract(&self.merge(add).0, sub),
        }
    }

    /// Positions of the `affected` keys (sorted, all present).
    fn positions(&self, affected: &[Key]) -> Vec<usize> {
        affected
            .iter()
            .map(|k| {
                self.0
                    .binary_search_by_key(k, |r| r.0)
                    .expect("affected key present")
            })
            .collect()
    }

    /// Merges into the `affected` keys (sorted, as `combine` returned them) the extremes
    /// of their remaining rows, `extremes[i]` for `affected[i]` (see `Table::extremes`).
    pub fn merge_extremes(&mut self, affected: &[Key], extremes: &[Extremes]) {
        for (i, e) in self.positions(affected).into_iter().zip(extremes) {
            let agg = &mut self.0[i].1;
            for (m, v) in [(&mut agg.bid, e.bid), (&mut agg.total, e.total)] {
                if let Some((min, max)) = v {
                    m.min = m.min.min(min);
                    m.max = m.max.max(max);
                }
            }
        }
    }

    /// Merges into the `affected` keys (sorted) the extremes held by `parts`: partials of
    /// remaining files whose rows the table does not hold.
    pub fn recompute_extremes<'a>(
        &mut self,
        affected: &[Key],
        parts: impl IntoIterator<Item = &'a RollupRows>,
    ) {
        let idx = self.positions(affected);
        for part in parts {
            for (k, i) in affected.iter().zip(&idx) {
                if let Ok(p) = part.0.binary_search_by_key(k, |r| r.0) {
                    let src = part.0[p].1;
                    let dst = &mut self.0[*i].1;
                    dst.bid.merge_extremes(&src.bid);
                    dst.total.merge_extremes(&src.total);
                }
            }
        }
    }

    /// Checks that every measure of the `affected` keys got its extremes back once all
    /// remaining rows were merged in; a measure left without is a disagreement between
    /// the rollup and the rows it was told remain.
    pub fn check_extremes(&self, affected: &[Key]) -> Result<()> {
        for i in self.positions(affected) {
            let (k, agg) = &self.0[i];
            for m in [&agg.bid, &agg.total] {
                if m.n > 0 && m.min > m.max {
                    return Err(Error::Internal(format!(
                        "no remaining row holds the extremes of rollup key {k:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Merges sorted row sets pairwise, as a balanced tree of linear merges (one set is
    /// returned as it is); the result does not depend on their order.
    pub fn merge_tree(mut parts: Vec<RollupRows>) -> RollupRows {
        while parts.len() > 1 {
            let mut next = Vec::with_capacity(parts.len().div_ceil(2));
            let mut it = parts.into_iter();
            while let Some(a) = it.next() {
                next.push(match it.next() {
                    Some(b) => a.merge(&b),
                    None => a,
                });
            }
            parts = next;
        }
        parts.pop().unwrap_or_default()
    }

    /// Merges many sorted row sets; the result does not depend on their order.
    pub fn merge_all<'a>(parts: impl IntoIterator<Item = &'a RollupRows>) -> RollupRows {
        let mut map: FxHashMap<Key, Agg> = FxHashMap::default();
        for part in parts {
            for (k, a) in &part.0 {
                map.entry(*k).or_default().merge(a);
            }
        }
        RollupRows::from_map(map)
    }

    /// The rows whose time lies in `[lo, hi]` (all of them for all-time rollups).
    pub fn time_range(&self, lo: i32, hi: i32) -> &[(Key, Agg)] {
        let start = self.0.partition_point(|r| r.0.time < lo);
        let end = self.0.partition_point(|r| r.0.time <= hi);
        &self.0[start..end.max(start)]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `rows` minus `sub` (both sorted; every key of `sub` is in `rows`), and the keys whose
/// extremes `sub` may have held, their min and max left for the caller to restore. The
/// runs of rows between `sub`'s keys are copied whole.
fn subtract(rows: &[(Key, Agg)], sub: &RollupRows) -> (RollupRows, Vec<Key>) {
    let mut out = Vec::with_capacity(rows.len());
    let mut affected = Vec::new();
    let mut at = 0;
    for (k, s) in &sub.0 {
        let i = at + gallop(&rows[at..], k);
        out.extend_from_slice(&rows[at..i]);
        at = i;
        let Some((_, a)) = rows.get(i).filter(|r| r.0 == *k) else {
            continue;
        };
        at += 1;
        let mut a = *a;
        let touched = a.bid.extremes_touched_by(&s.bid) || a.total.extremes_touched_by(&s.total);
        a.rows -= s.rows;
        a.bid.sub(&s.bid);
        a.total.sub(&s.total);
        if a.rows == 0 {
            continue;
        }
        if touched {
            affected.push(*k);
            for m in [&mut a.bid, &mut a.total] {
                if m.n > 0 {
                    m.min = i64::MAX;
                    m.max = i64::MIN;
                }
            }
        }
        out.push((*k, a));
    }
    out.extend_from_slice(&rows[at..]);
    (RollupRows(out), affected)
}

/// The number of leading rows whose key is below `k` (exponential search: cheap when
/// that is a short run).
fn gallop(rows: &[(Key, Agg)], k: &Key) -> usize {
    let mut hi = 1;
    while hi < rows.len() && rows[hi - 1].0 < *k {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(rows.len());
    lo + rows[lo..hi].partition_point(|r| r.0 < *k)
}

/// The process-wide country dictionary: country text ↔ a small code (0 = NULL).
/// Codes never reach the disk; files store the text.
pub struct Countries {
    codes: HashMap<String, u16>,
    names: Vec<String>,
}

fn countries() -> &'static RwLock<Countries> {
    static C: OnceLock<RwLock<Countries>> = OnceLock::new();
    C.get_or_init(|| {
        RwLock::new(Countries {
            codes: HashMap::new(),
            names: vec![String::new()],
        })
    })
}

/// The code of country text, adding it to the dictionary if new.
pub fn country_code(name: &str) -> Result<u16> {
    if let Some(c) = countries().read().expect("country lock").codes.get(name) {
        return Ok(*c);
    }
    let mut w = countries().write().expect("country lock");
    if let Some(c) = w.codes.get(name) {
        return Ok(*c);
    }
    let code = u16::try_from(w.names.len())
        .map_err(|_| Error::Internal("more than 65535 distinct countries".into()))?;
    w.names.push(name.to_string());
    w.codes.insert(name.to_string(), code);
    Ok(code)
}

/// The code of country text if it is known (no insertion).
pub fn known_country_code(name: &str) -> Option<u16> {
    countries()
        .read()
        .expect("country lock")
        .codes
        .get(name)
        .copied()
}

/// The text of a non-NULL country code.
pub fn country_name(code: u16) -> String {
    countries().read().expect("country lock").names[code as usize].clone()
}

/// All country texts by code (index 0 is NULL's empty placeholder).
pub fn country_names() -> Vec<String> {
    countries().read().expect("country lock").names.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_round_trip() {
        for spec in default_specs() {
            assert_eq!(RollupSpec::from_name(&spec.name()), Ok(spec));
        }
        assert_eq!(
            RollupSpec::from_name("day_country_type").map(|s| s.name()),
            Ok("day_type_country".to_string())
        );
        assert!(RollupSpec::from_name("month_type").is_err());
        assert!(RollupSpec::from_name("day_city").is_err());
    }

    #[test]
    fn rollup_rows_stay_compact() {
        assert_eq!(std::mem::size_of::<(Key, Agg)>(), 112);
    }

    fn agg(rows: u64, bid: Option<i64>) -> Agg {
        let mut a = Agg {
            rows,
            ..Agg::default()
        };
        if let Some(v) = bid {
            a.bid.add(v);
        }
        a
    }

    #[test]
    fn merge_is_order_independent() {
        let k = |t| Key {
            time: t,
            ..Key::default()
        };
        let a = RollupRows(vec![(k(1), agg(1, Some(5))), (k(3), agg(2, None))]);
        let b = RollupRows(vec![(k(1), agg(1, Some(-7))), (k(2), agg(1, Some(9)))]);
        let c = RollupRows(vec![(k(3), agg(4, Some(1)))]);
        let abc = a.merge(&b).merge(&c);
        let cba = c.merge(&b).merge(&a);
        assert_eq!(abc, cba);
        assert_eq!(abc, RollupRows::merge_all([&b, &c, &a]));
        assert_eq!(
            abc,
            RollupRows::merge_tree(vec![c.clone(), a.clone(), b.clone()])
        );
        assert_eq!(RollupRows::merge_tree(Vec::new()), RollupRows::default());
        let first = abc.0[0].1;
        let (n, sum) = (first.bid.n, first.bid.sum);
        assert_eq!((first.rows, n, sum), (2, 2, -2));
        assert_eq!((first.bid.min, first.bid.max), (-7, 5));
        assert_eq!(abc.time_range(2, 3).len(), 2);
    }

    #[test]
    fn combine_takes_out_exactly_and_flags_extremes() {
        let k = |t| Key {
            time: t,
            ..Key::default()
        };
        let f1 = RollupRows(vec![(k(1), agg(1, Some(5))), (k(2), agg(1, Some(3)))]);
        let f2 = RollupRows(vec![(k(1), agg(1, Some(9))), (k(3), agg(2, None))]);
        let f3 = RollupRows(vec![(k(1), agg(1, Some(7)))]);
        let all = RollupRows::merge_all([&f1, &f2]);
        // Replace f2 by f3.
        let (mut next, affected) = all.combine(&f3, &f2);
        assert_eq!(affected, vec![k(1)]);
        assert!(next.check_extremes(&affected).is_err());
        next.merge_extremes(
            &affected,
            &[Extremes {
                bid: Some((5, 5)),
                total: None,
            }],
        );
        next.recompute_extremes(&affected, [&f3]);
        next.check_extremes(&affected).unwrap();
        assert_eq!(next, RollupRows::merge_all([&f1, &f3]));
    }

    #[test]
    fn names_and_coverage() {
        let s = RollupSpec::new(Some(TimeCol::Hour), &[Dim::Country, Dim::Type]);
        assert_eq!(s.name(), "hour_type_country");
        assert!(s.covers(Column::Time(TimeCol::Day)));
        assert!(!s.covers(Column::Time(TimeCol::Minute)));
        assert!(!s.covers(Column::AdvertiserId));
        assert!(!RollupSpec::new(None, &[Dim::Type]).covers(Column::Time(TimeCol::Week)));
    }
}
