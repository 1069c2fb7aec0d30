//! Rollups: which aggregates are kept (specs), their keys and exact aggregate values,
//! and the merge that combines per-file partials into a rollup.
//!
//! A rollup is a time grain (or all time) plus some of type, country, advertiser_id and
//! publisher_id. Per key it keeps the row count and, for bid_price and total_price, the
//! non-NULL count, exact sum, min and max. All arithmetic is on integers, so merging
//! partials in any order gives bit-identical rollups.

pub mod codec;
mod countries;
mod index;
mod layered;
pub mod partial;

pub use countries::Countries;
pub use index::IdIndex;
pub use layered::Layered;

use std::ops::Range;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::schema::{Column, TimeCol};

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

    /// What this rollup keeps of a row's key.
    pub fn projection(&self) -> Projection {
        let keep = |d: Dim| self.has(d);
        Projection {
            grain: self.grain,
            mask: Key {
                time: 0,
                typ: if keep(Dim::Type) { u8::MAX } else { 0 },
                country: if keep(Dim::Country) { u16::MAX } else { 0 },
                nulls: u8::from(keep(Dim::Advertiser)) | u8::from(keep(Dim::Publisher)) << 1,
                adv: if keep(Dim::Advertiser) { -1 } else { 0 },
                publ: if keep(Dim::Publisher) { -1 } else { 0 },
            },
        }
    }
}

/// What a rollup keeps of a row's key: the time cut to its grain and its dimensions
/// (the others are 0, as in `Key`).
#[derive(Debug, Clone, Copy)]
pub struct Projection {
    grain: Option<TimeCol>,
    /// All ones in the fields (and NULL bits) of the dimensions kept, zeros elsewhere.
    mask: Key,
}

impl Projection {
    /// The key of a row with key `row` (every dimension kept) under the rollup.
    #[inline]
    pub fn key(&self, row: &Key) -> Key {
        let m = &self.mask;
        Key {
            time: match self.grain {
                None => 0,
                Some(_) if row.time == NULL_TIME => NULL_TIME,
                Some(g) => g.bucket(row.time),
            },
            typ: row.typ & m.typ,
            nulls: row.nulls & m.nulls,
            country: row.country & m.country,
            adv: row.adv & m.adv,
            publ: row.publ & m.publ,
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

/// A rollup key: 16 bytes (ids are 32-bit; whether each is NULL is a bit of its own).
/// Dimensions a rollup does not keep are 0; NULL times are `NULL_TIME`, NULL type and
/// country codes 0, and NULL ids read as `NULL_ID` (see `id`). Ordered by its columns in
/// order: time, type, country, advertiser, publisher (NULLs last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct Key {
    /// Local minutes of the bucket start (0 for all-time rollups).
    pub time: i32,
    /// Event type code (see `schema::type_code`), 0 = NULL.
    pub typ: u8,
    /// Bit 0: the advertiser id is NULL; bit 1: the publisher id is (its value then 0).
    nulls: u8,
    /// Country code (see `countries`), 0 = NULL.
    pub country: u16,
    adv: i32,
    publ: i32,
}

/// One integer that orders keys: time (32 bits), type (8), country (16), then each id in
/// 33 bits (a 32-bit value shifted to unsigned of the same order, or 2^32 for NULL).
pub type Ordinal = u128;

/// Where an id of a key lies in its ordinal: its 33-bit code.
#[inline]
fn id_code(v: i32, null: bool) -> u128 {
    match null {
        false => u128::from((v as u32) ^ (1 << 31)),
        true => 1 << 32,
    }
}

/// The ordinal of the key time, type and country `head` (as in an ordinal) and ids with
/// these codes.
#[inline]
fn ordinal_with(head: u128, adv: u128, publ: u128) -> Ordinal {
    head << 66 | adv << 33 | publ
}

/// A bound in ordinals for keys against columns `parts` (in order, ids as `Key::id` gives
/// them, any i64): for every key `k`, `k.ordinal() < ordinal_of(p)` exactly when
/// `k.parts() < p`. Time, type and country lie within their types' ranges. An id below
/// every 32-bit value is bounded as the smallest code with the columns after it at their
/// smallest; one above every 32-bit value (and not NULL) as NULL, likewise.
pub fn ordinal_of(parts: [i64; 5]) -> Ordinal {
    let time = u128::from((parts[0] as i32 as u32) ^ (1 << 31));
    let head = time << 24 | u128::from(parts[1] as u8) << 16 | u128::from(parts[2] as u16);
    let code = |v: i64| match i32::try_from(v) {
        Ok(v) => (id_code(v, false), false),
        Err(_) if v == NULL_ID => (id_code(0, true), false),
        Err(_) if v < 0 => (0, true),
        Err(_) => (id_code(0, true), true),
    };
    let (adv, reset) = code(parts[3]);
    let publ = match reset {
        true => 0,
        false => code(parts[4]).0,
    };
    ordinal_with(head, adv, publ)
}

impl Key {
    /// The key of these columns. Ids are 32-bit values or `NULL_ID`: `None` otherwise.
    pub fn try_new(time: i32, typ: u8, country: u16, adv: i64, publ: i64) -> Option<Key> {
        let mut key = Key {
            time,
            typ,
            country,
            ..Key::default()
        };
        (key.set_id(false, adv) && key.set_id(true, publ)).then_some(key)
    }

    /// `try_new` for ids known to be 32-bit or `NULL_ID` (they come from the table's
    /// 32-bit columns).
    #[inline]
    pub fn new(time: i32, typ: u8, country: u16, adv: i64, publ: i64) -> Key {
        Key::try_new(time, typ, country, adv, publ).expect("32-bit ids")
    }

    /// The advertiser (or publisher) id, `NULL_ID` when NULL.
    #[inline]
    pub fn id(&self, publ: bool) -> i64 {
        let (bit, v) = match publ {
            false => (1, self.adv),
            true => (2, self.publ),
        };
        match self.nulls & bit {
            0 => i64::from(v),
            _ => NULL_ID,
        }
    }

    /// The advertiser (or publisher) id, `None` when NULL.
    #[inline]
    pub fn id32(&self, publ: bool) -> Option<i32> {
        let id = self.id(publ);
        (id != NULL_ID).then_some(id as i32)
    }

    /// Sets the advertiser (or publisher) id to `v` (`NULL_ID` for NULL); false, leaving
    /// it as it was, when `v` is not a 32-bit value.
    #[inline]
    pub fn set_id(&mut self, publ: bool, v: i64) -> bool {
        let bit = if publ { 2 } else { 1 };
        let value = match v {
            NULL_ID => 0,
            v => match i32::try_from(v) {
                Ok(v) => v,
                Err(_) => return false,
            },
        };
        match v {
            NULL_ID => self.nulls |= bit,
            _ => self.nulls &= !bit,
        }
        match publ {
            false => self.adv = value,
            true => self.publ = value,
        }
        true
    }

    /// The columns in order, as integers (ids as `id` gives them).
    #[inline]
    pub fn parts(&self) -> [i64; 5] {
        [
            i64::from(self.time),
            i64::from(self.typ),
            i64::from(self.country),
            self.id(false),
            self.id(true),
        ]
    }

    /// One integer that orders as the key does.
    #[inline]
    pub fn ordinal(&self) -> Ordinal {
        let time = u128::from((self.time as u32) ^ (1 << 31));
        let head = time << 24 | u128::from(self.typ) << 16 | u128::from(self.country);
        let adv = id_code(self.adv, self.nulls & 1 != 0);
        let publ = id_code(self.publ, self.nulls & 2 != 0);
        ordinal_with(head, adv, publ)
    }
}

impl Ord for Key {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.ordinal().cmp(&other.ordinal())
    }
}

impl PartialOrd for Key {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }

    /// One comparison of integers: searches over sorted keys compare this most.
    #[inline]
    fn lt(&self, other: &Self) -> bool {
        self.ordinal() < other.ordinal()
    }
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

    /// What was added to `was` to give this measure (its count and sum over the added
    /// values, this measure's extremes), if this only adds to it.
    fn added_to(&self, was: &Measure) -> Option<Measure> {
        if *self == *was {
            return Some(Measure::default());
        }
        let widened = was.n == 0 || (self.min <= was.min && self.max >= was.max);
        (self.n > was.n && widened).then(|| Measure {
            n: self.n - was.n,
            sum: self.sum - was.sum,
            min: self.min,
            max: self.max,
        })
    }

    /// Whether taking out `o` may change this measure's min or max.
    #[inline]
    fn extremes_touched_by(&self, o: &Measure) -> bool {
        o.n > 0 && self.n > o.n && (o.min == self.min || o.max == self.max)
    }

    /// Adds a count and sum (the extremes left as they are, as when they are not read).
    #[inline]
    pub fn add_summed(&mut self, s: &Summed) {
        self.n += s.n;
        self.sum += s.sum;
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
    /// What was added to `was` to give this, if this only adds to it (see
    /// `RollupRows::additions_to`).
    fn added_to(&self, was: &Agg) -> Option<Agg> {
        Some(Agg {
            rows: self.rows.checked_sub(was.rows)?,
            bid: self.bid.added_to(&was.bid)?,
            total: self.total.added_to(&was.total)?,
        })
    }

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

/// One rollup's rows, sorted by key, stored by column: every row's key and row count,
/// and each price measure only for the rows that hold a value (in a rollup by type most
/// keys hold one of the two prices or neither: serves and clicks have no price).
///
/// Rows are read as `(Key, Agg)` pairs (`iter`, `range`, `get`) and written in key
/// order (`push`, `extend_from`); nothing mutates a row except the min/max repair of
/// `merge_extremes` and `recompute_extremes`.
#[derive(Debug, Clone, Default)]
pub struct RollupRows {
    keys: Vec<Key>,
    rows: Vec<u64>,
    bid: Sparse,
    total: Sparse,
    ids: IdSpans,
    /// Every `SAMPLE_EVERY`th key's ordinal, made when first asked for (`samples`) and
    /// dropped whenever the keys change (`keys_change`).
    samples: OnceLock<Box<[Ordinal]>>,
    /// The rows listed by advertiser and by publisher, made when first asked for
    /// (`by_id`) and dropped with the samples.
    by_id: [OnceLock<IdIndex>; 2],
}

/// Keys between two of a rollup's sampled keys (see `RollupRows::samples`).
pub const SAMPLE_EVERY: usize = 32;

/// The ordinal of every `SAMPLE_EVERY`th key of `keys`, from the first.
pub fn sample(keys: &[Key]) -> Box<[Ordinal]> {
    keys.iter()
        .step_by(SAMPLE_EVERY)
        .map(Key::ordinal)
        .collect()
}

/// Rows are equal when their columns are (whatever spans their ids were given).
impl PartialEq for RollupRows {
    fn eq(&self, other: &Self) -> bool {
        (&self.keys, &self.rows, &self.bid, &self.total)
            == (&other.keys, &other.rows, &other.bid, &other.total)
    }
}

impl Eq for RollupRows {}

/// Bounds of the advertiser and of the publisher ids (NULLs aside) of a rollup's keys,
/// kept as rows come in, so that a query need not read every key for them. Rows taken
/// out leave them as they were: they hold every id present, maybe more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSpans([(i64, i64); 2]);

impl Default for IdSpans {
    /// No ids.
    fn default() -> Self {
        IdSpans([(i64::MAX, i64::MIN); 2])
    }
}

impl IdSpans {
    #[inline]
    fn widen(&mut self, key: &Key) {
        for (span, id) in self.0.iter_mut().zip([key.id(false), key.id(true)]) {
            if id != NULL_ID {
                *span = (span.0.min(id), span.1.max(id));
            }
        }
    }

    fn union(&mut self, other: &IdSpans) {
        for (span, o) in self.0.iter_mut().zip(other.0) {
            *span = (span.0.min(o.0), span.1.max(o.1));
        }
    }

    /// The smallest and largest advertiser (or publisher) id, if there is one.
    pub fn of(&self, publ: bool) -> Option<(i64, i64)> {
        let span = self.0[usize::from(publ)];
        (span.0 <= span.1).then_some(span)
    }
}

/// A measure's count and sum: what sums, averages and counts of a price read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, packed(8))]
pub struct Summed {
    pub n: u64,
    pub sum: i128,
}

/// A measure's smallest and largest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MinMax {
    pub min: i64,
    pub max: i64,
}

/// Measures held by their parts: counts and sums in one column, extremes in another, so
/// that a scan summing a price reads 24 bytes a measure rather than 40.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Measures {
    sums: Vec<Summed>,
    extremes: Vec<MinMax>,
}

impl Measures {
    fn with_capacity(n: usize) -> Measures {
        Measures {
            sums: Vec::with_capacity(n),
            extremes: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn get(&self, j: usize) -> Measure {
        join(self.sums[j], self.extremes[j])
    }

    #[inline]
    fn set(&mut self, j: usize, m: &Measure) {
        (self.sums[j], self.extremes[j]) = split(m);
    }

    #[inline]
    fn push(&mut self, m: &Measure) {
        let (s, e) = split(m);
        self.sums.push(s);
        self.extremes.push(e);
    }

    fn resize(&mut self, n: usize) {
        self.sums.resize(n, Summed::default());
        self.extremes.resize(n, MinMax::default());
    }

    fn extend_from(&mut self, src: &Measures, range: Range<usize>) {
        self.sums.extend_from_slice(&src.sums[range.clone()]);
        self.extremes.extend_from_slice(&src.extremes[range]);
    }

    fn range_eq(&self, r: Range<usize>, other: &Measures, o: Range<usize>) -> bool {
        self.sums[r.clone()] == other.sums[o.clone()] && self.extremes[r] == other.extremes[o]
    }

    fn shrink_to_fit(&mut self) {
        self.sums.shrink_to_fit();
        self.extremes.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.sums.capacity() * size_of::<Summed>() + self.extremes.capacity() * size_of::<MinMax>()
    }
}

impl From<Vec<Measure>> for Measures {
    fn from(values: Vec<Measure>) -> Measures {
        let (sums, extremes) = values.iter().map(split).unzip();
        Measures { sums, extremes }
    }
}

/// A measure from its parts.
#[inline]
fn join(s: Summed, e: MinMax) -> Measure {
    Measure {
        n: s.n,
        sum: s.sum,
        min: e.min,
        max: e.max,
    }
}

/// A measure's parts, as `Measures` holds them.
#[inline]
fn split(m: &Measure) -> (Summed, MinMax) {
    let m = *m;
    (
        Summed { n: m.n, sum: m.sum },
        MinMax {
            min: m.min,
            max: m.max,
        },
    )
}

/// The non-empty measures of one price column: the positions of their rows (ascending)
/// and the measures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Sparse {
    at: Vec<u32>,
    values: Measures,
}

impl Sparse {
    #[inline]
    fn push(&mut self, row: usize, m: &Measure) {
        if m.n > 0 {
            self.at.push(row_index(row));
            self.values.push(m);
        }
    }

    /// The index of the first measure at row `row` or later.
    fn seek(&self, row: usize) -> usize {
        self.at.partition_point(|&a| (a as usize) < row)
    }

    fn find(&self, row: usize) -> Option<usize> {
        self.at.binary_search(&row_index(row)).ok()
    }

    /// The measure of the row a cursor `j` (see `seek`) has reached, moving past it.
    #[inline]
    fn take(&self, j: &mut usize, row: usize) -> Measure {
        match self.at.get(*j) {
            Some(&a) if a as usize == row => {
                *j += 1;
                self.values.get(*j - 1)
            }
            _ => Measure::default(),
        }
    }

    /// The index of the first measure at row `row` or later, searched from index `from`
    /// on (at or before it).
    fn seek_from(&self, from: usize, row: usize) -> usize {
        from + gallop_by(&self.at[from..], |&a| (a as usize) < row)
    }

    /// Appends the measures of `src`'s rows `rows`, which become rows `to..` here, from
    /// `src`'s cursor `j` (at or before the first of them), moved past them.
    fn extend_from(&mut self, src: &Sparse, rows: Range<usize>, to: usize, j: &mut usize) {
        let a = src.seek_from(*j, rows.start);
        let b = src.seek_from(a, rows.end);
        self.at.extend(
            src.at[a..b]
                .iter()
                .map(|&r| row_index(r as usize - rows.start + to)),
        );
        self.values.extend_from(&src.values, a..b);
        *j = b;
    }

    /// Whether rows `r` here hold the same measures as rows `o` of `other`.
    fn range_eq(&self, r: Range<usize>, other: &Sparse, o: Range<usize>) -> bool {
        let (a, b) = (self.seek(r.start), self.seek(r.end));
        let (c, d) = (other.seek(o.start), other.seek(o.end));
        self.values.range_eq(a..b, &other.values, c..d)
            && self.at[a..b]
                .iter()
                .zip(&other.at[c..d])
                .all(|(x, y)| *x as usize - r.start == *y as usize - o.start)
    }
}

/// One price's measures, and the positions of the rows that hold them (ascending).
#[derive(Debug, Clone, Copy)]
pub struct SparseColumn<'a> {
    pub at: &'a [u32],
    /// Each measure's count and sum.
    pub sums: &'a [Summed],
    /// Each measure's extremes.
    pub extremes: &'a [MinMax],
}

impl SparseColumn<'_> {
    /// The `j`th measure whole.
    #[inline]
    pub fn get(&self, j: usize) -> Measure {
        join(self.sums[j], self.extremes[j])
    }
}

/// A row position as stored in `Sparse::at`.
#[inline]
fn row_index(row: usize) -> u32 {
    u32::try_from(row).expect("a rollup holds fewer than 2^32 rows")
}

/// Rows of a `RollupRows` in key order, as `(Key, Agg)` pairs.
pub struct Iter<'a> {
    rows: &'a RollupRows,
    i: usize,
    end: usize,
    bid: usize,
    total: usize,
}

impl Iterator for Iter<'_> {
    type Item = (Key, Agg);

    #[inline]
    fn next(&mut self) -> Option<(Key, Agg)> {
        if self.i >= self.end {
            return None;
        }
        let (r, i) = (self.rows, self.i);
        self.i += 1;
        Some((
            r.keys[i],
            Agg {
                rows: r.rows[i],
                bid: r.bid.take(&mut self.bid, i),
                total: r.total.take(&mut self.total, i),
            },
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl FromIterator<(Key, Agg)> for RollupRows {
    /// Rows given in ascending key order.
    fn from_iter<I: IntoIterator<Item = (Key, Agg)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut out = RollupRows::with_capacity(iter.size_hint().0);
        for (k, a) in iter {
            out.push(k, &a);
        }
        out
    }
}

impl RollupRows {
    pub fn with_capacity(n: usize) -> Self {
        RollupRows {
            keys: Vec::with_capacity(n),
            rows: Vec::with_capacity(n),
            ..RollupRows::default()
        }
    }

    /// Empty rows with room for `rows` rows, `bid` of them with a bid and `total` with a
    /// total, so that no column grows (and is copied) while they are pushed; what is
    /// left over is given back with `shrink_to_fit`.
    pub fn with_room(rows: usize, bid: usize, total: usize) -> Self {
        let sparse = |n| Sparse {
            at: Vec::with_capacity(n),
            values: Measures::with_capacity(n),
        };
        RollupRows {
            keys: Vec::with_capacity(rows),
            rows: Vec::with_capacity(rows),
            bid: sparse(bid),
            total: sparse(total),
            ..RollupRows::default()
        }
    }

    /// Empty rows with room for the merge of `a` and `b`.
    fn to_merge(a: &RollupRows, b: &RollupRows) -> RollupRows {
        RollupRows::with_room(
            a.len() + b.len(),
            a.bid.at.len() + b.bid.at.len(),
            a.total.at.len() + b.total.at.len(),
        )
    }

    /// Appends a row; its key must be above every key already here, or the rows must be
    /// put in order with `sort` before anything else reads them.
    #[inline]
    pub fn push(&mut self, key: Key, agg: &Agg) {
        self.keys_change();
        let i = self.keys.len();
        self.ids.widen(&key);
        self.keys.push(key);
        self.rows.push(agg.rows);
        self.bid.push(i, &agg.bid);
        self.total.push(i, &agg.total);
    }

    /// Appends `src`'s rows `range` (keys above every key already here).
    pub fn extend_from(&mut self, src: &RollupRows, range: Range<usize>) {
        self.keys_change();
        Walk::new(src).copy(range, self);
    }

    /// Drops what was derived from the keys (they are about to change).
    #[inline]
    fn keys_change(&mut self) {
        if self.samples.get().is_some() {
            self.samples = OnceLock::new();
        }
        for index in &mut self.by_id {
            if index.get().is_some() {
                *index = OnceLock::new();
            }
        }
    }

    /// Every `SAMPLE_EVERY`th key's ordinal (`sample`), made on the first call for these
    /// keys: a search far through the keys looks among these (half a byte a row, more
    /// of it cached) before reading the keys themselves.
    pub fn samples(&self) -> &[Ordinal] {
        self.samples.get_or_init(|| sample(&self.keys))
    }

    /// The rows listed by advertiser (or publisher) id, made on the first call for these
    /// keys: a filter that keeps few ids of a column after others reads their rows from
    /// it rather than seeking once per prefix.
    pub fn by_id(&self, publ: bool) -> &IdIndex {
        self.by_id[usize::from(publ)].get_or_init(|| IdIndex::new(&self.keys, publ))
    }

    /// Puts rows pushed out of key order in order (keys are unique). Country codes are
    /// given out per process, so rows read back from files may need it.
    pub fn sort(&mut self) {
        self.keys_change();
        if self.keys.is_sorted() {
            return;
        }
        let mut order: Vec<u32> = (0..self.len()).map(row_index).collect();
        order.sort_unstable_by_key(|&i| self.keys[i as usize]);
        *self = order
            .into_iter()
            .map(|i| (self.keys[i as usize], self.agg(i as usize)))
            .collect();
    }

    /// The rows' columns: keys, row counts, and each price's measures with the
    /// positions of the rows that hold them.
    pub fn columns(&self) -> (&[Key], &[u64], [SparseColumn<'_>; 2]) {
        (
            &self.keys,
            &self.rows,
            [&self.bid, &self.total].map(|s| SparseColumn {
                at: &s.at,
                sums: &s.values.sums,
                extremes: &s.values.extremes,
            }),
        )
    }

    /// Rows from the columns `columns` gives (in any key order: put in order here); None
    /// when they do not fit together.
    pub fn from_columns(
        keys: Vec<Key>,
        rows: Vec<u64>,
        [bid, total]: [(Vec<u32>, Vec<Measure>); 2],
    ) -> Option<RollupRows> {
        let fits = |(at, values): &(Vec<u32>, Vec<Measure>)| {
            at.len() == values.len()
                && at.windows(2).all(|w| w[0] < w[1])
                && at.last().is_none_or(|&a| (a as usize) < keys.len())
                && values.iter().all(|m| m.n > 0)
        };
        if rows.len() != keys.len() || !fits(&bid) || !fits(&total) {
            return None;
        }
        let sparse = |(at, values): (Vec<u32>, Vec<Measure>)| Sparse {
            at,
            values: values.into(),
        };
        let mut ids = IdSpans::default();
        keys.iter().for_each(|k| ids.widen(k));
        let mut out = RollupRows {
            keys,
            rows,
            bid: sparse(bid),
            total: sparse(total),
            ids,
            ..RollupRows::default()
        };
        out.sort();
        out.keys.windows(2).all(|w| w[0] < w[1]).then_some(out)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every row's key, ascending.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Bounds of the keys' ids.
    pub fn ids(&self) -> &IdSpans {
        &self.ids
    }

    /// The aggregates of row `i`.
    pub fn agg(&self, i: usize) -> Agg {
        let measure = |s: &Sparse| s.find(i).map_or_else(Measure::default, |j| s.values.get(j));
        Agg {
            rows: self.rows[i],
            bid: measure(&self.bid),
            total: measure(&self.total),
        }
    }

    /// The row of `key`, if present.
    pub fn find(&self, key: &Key) -> Option<usize> {
        self.keys.binary_search(key).ok()
    }

    pub fn iter(&self) -> Iter<'_> {
        self.range(0..self.len())
    }

    /// Rows `range`, in key order.
    pub fn range(&self, range: Range<usize>) -> Iter<'_> {
        Iter {
            rows: self,
            bid: self.bid.seek(range.start),
            total: self.total.seek(range.start),
            i: range.start,
            end: range.end,
        }
    }

    /// Whether rows `r` here equal rows `o` of `other`.
    pub fn range_eq(&self, r: Range<usize>, other: &RollupRows, o: Range<usize>) -> bool {
        self.keys[r.clone()] == other.keys[o.clone()]
            && self.rows[r.clone()] == other.rows[o.clone()]
            && self.bid.range_eq(r.clone(), &other.bid, o.clone())
            && self.total.range_eq(r, &other.total, o)
    }

    /// The positions of the rows whose time lies in `[lo, hi]` (all of them for
    /// all-time rollups).
    pub fn time_range(&self, lo: i32, hi: i32) -> Range<usize> {
        let start = self.keys.partition_point(|k| k.time < lo);
        let end = self.keys.partition_point(|k| k.time <= hi);
        start..end.max(start)
    }

    /// Bytes of memory the rows take (their capacity).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let sparse = |s: &Sparse| s.at.capacity() * size_of::<u32>() + s.values.heap_bytes();
        self.keys.capacity() * size_of::<Key>()
            + self.rows.capacity() * size_of::<u64>()
            + sparse(&self.bid)
            + sparse(&self.total)
            + (self.by_id.iter().filter_map(OnceLock::get))
                .map(IdIndex::heap_bytes)
                .sum::<usize>()
    }

    /// Merges sorted rows into one sorted set: a linear merge, or, when one side is much
    /// smaller, a walk over the smaller one that copies the other's runs between its keys
    /// whole (an append costs its own keys plus a copy, not a row-by-row merge).
    pub fn merge(&self, other: &RollupRows) -> RollupRows {
        let (big, small) = match self.len() >= other.len() {
            true => (self, other),
            false => (other, self),
        };
        if small.len().saturating_mul(8) < big.len() {
            return big.merge_runs(small);
        }
        let mut out = RollupRows::to_merge(self, other);
        let (mut a, mut b) = (self.iter().peekable(), other.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Greater => b.next(),
                    std::cmp::Ordering::Equal => {
                        let (k, mut agg) = a.next().expect("peeked");
                        agg.merge(&b.next().expect("peeked").1);
                        Some((k, agg))
                    }
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            let (k, agg) = next.expect("a row");
            out.push(k, &agg);
        }
        out.shrink_to_fit();
        out
    }

    /// `self` merged with the (much smaller) `small`, copying the runs of rows between
    /// `small`'s keys whole.
    fn merge_runs(&self, small: &RollupRows) -> RollupRows {
        let mut out = RollupRows::to_merge(self, small);
        let mut walk = Walk::new(self);
        let mut at = 0;
        for (k, a) in small.iter() {
            let i = at + gallop(&self.keys[at..], &k);
            walk.copy(at..i, &mut out);
            at = i;
            match self.keys.get(i) == Some(&k) {
                true => {
                    let mut mine = walk.agg(i);
                    mine.merge(&a);
                    out.push(k, &mine);
                    at += 1;
                }
                false => out.push(k, &a),
            }
        }
        walk.copy(at..self.len(), &mut out);
        out.shrink_to_fit();
        out
    }

    /// What was added to these rows to give `new`, when `new` only adds to them (every
    /// key kept, no count smaller, no minimum larger, no maximum smaller): per key that
    /// changed, the difference of counts and sums with `new`'s extremes, so that merging
    /// the result into these rows gives `new`. `None` when `new` took anything away.
    pub fn additions_to(&self, new: &RollupRows) -> Option<RollupRows> {
        let mut out = RollupRows::default();
        let mut old = self.iter().peekable();
        for (k, agg) in new.iter() {
            if old.peek().is_some_and(|(o, _)| *o < k) {
                return None;
            }
            match old.next_if(|(o, _)| *o == k) {
                None => out.push(k, &agg),
                Some((_, was)) if was == agg => {}
                Some((_, was)) => out.push(k, &agg.added_to(&was)?),
            }
        }
        old.next().is_none().then_some(out)
    }

    /// Merges sorted rows into these in place (see `merge_many_in_place`).
    pub fn merge_in_place(&mut self, add: &RollupRows) {
        self.merge_many_in_place(&[add]);
    }

    /// Merges many sets of sorted rows into these in place, up to `MERGE_WAYS` at a
    /// time: a first pass over the keys plans which sets each merged row takes from (and
    /// so what the columns grow by), then the grown columns are filled from the back by
    /// that plan. No second copy of the rollup is ever held and every row moves once (the
    /// rows below every key of `adds` are already where they belong). Gives the same
    /// rows as `merge` of them all, in any order.
    pub fn merge_many_in_place(&mut self, adds: &[&RollupRows]) {
        let adds: Vec<&RollupRows> = adds.iter().copied().filter(|a| !a.is_empty()).collect();
        for group in adds.chunks(MERGE_WAYS) {
            self.merge_group_in_place(group);
        }
    }

    fn merge_group_in_place(&mut self, adds: &[&RollupRows]) {
        self.keys_change();
        for a in adds {
            self.ids.union(&a.ids);
        }
        let plan = Plan::of(self, adds);
        let (n, top) = (self.len(), plan.takes.len());
        self.keys.resize(top, Key::default());
        self.rows.resize(top, 0);
        let more = [
            plan.bid - self.bid.at.len(),
            plan.total - self.total.at.len(),
        ];
        let mut cursors = [
            Back::new(&mut self.bid, more[0]),
            Back::new(&mut self.total, more[1]),
        ];
        // Each set's unread rows `[..row]` and measures.
        let mut row = [0; MERGE_WAYS];
        let (mut bid, mut total) = ([0; MERGE_WAYS], [0; MERGE_WAYS]);
        for (s, a) in adds.iter().enumerate() {
            (row[s], bid[s], total[s]) = (a.len(), a.bid.at.len(), a.total.at.len());
        }
        let (mut i, mut left) = (n, row.iter().sum::<usize>());
        for k in (0..top).rev() {
            // The rows left are the rollup's own, in place.
            if left == 0 {
                break;
            }
            let takes = plan.takes[k];
            let mut agg = Agg::default();
            if takes & 1 != 0 {
                i -= 1;
                agg.rows = self.rows[i];
                agg.bid = cursors[0].take_back(i);
                agg.total = cursors[1].take_back(i);
                self.keys[k] = self.keys[i];
            }
            let mut m = takes >> 1;
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                let a = adds[s];
                row[s] -= 1;
                left -= 1;
                let j = row[s];
                agg.merge(&Agg {
                    rows: a.rows[j],
                    bid: take_back(&a.bid, &mut bid[s], j),
                    total: take_back(&a.total, &mut total[s], j),
                });
                self.keys[k] = a.keys[j];
            }
            self.rows[k] = agg.rows;
            cursors[0].put_back(k, &agg.bid);
            cursors[1].put_back(k, &agg.total);
        }
        debug_assert!(cursors.iter().all(|c| c.read == c.write));
    }

    /// Gives back the memory grown past the rows' length.
    pub fn shrink_to_fit(&mut self) {
        self.keys.shrink_to_fit();
        self.rows.shrink_to_fit();
        for s in [&mut self.bid, &mut self.total] {
            s.at.shrink_to_fit();
            s.values.shrink_to_fit();
        }
    }

    /// `self` plus `add` minus `sub` (each sorted). Sums and counts are exact; keys whose
    /// min or max may have come from `sub` are returned, and the caller recomputes their
    /// extremes from the remaining rows (`merge_extremes`, `recompute_extremes`).
    pub fn combine(&self, add: &RollupRows, sub: &RollupRows) -> (RollupRows, Vec<Key>) {
        match (add.is_empty(), sub.is_empty()) {
            (true, true) => (self.clone(), Vec::new()),
            (false, true) => (self.merge(add), Vec::new()),
            (true, false) => subtract(self, sub),
            (false, false) => subtract(&self.merge(add), sub),
        }
    }

    /// Changes the measures row `i` has by `f` (given the price's index: 0 bid, 1
    /// total), to repair their extremes.
    fn update_measures(&mut self, i: usize, mut f: impl FnMut(usize, &mut Measure)) {
        for (p, s) in [&mut self.bid, &mut self.total].into_iter().enumerate() {
            if let Some(j) = s.find(i) {
                let mut m = s.values.get(j);
                f(p, &mut m);
                s.values.set(j, &m);
            }
        }
    }

    /// Positions of the `affected` keys (sorted, all present).
    fn positions(&self, affected: &[Key]) -> Vec<usize> {
        affected
            .iter()
            .map(|k| self.find(k).expect("affected key present"))
            .collect()
    }

    /// Merges into the `affected` keys (sorted, as `combine` returned them) the extremes
    /// of their remaining rows, `extremes[i]` for `affected[i]` (see `Table::extremes`).
    pub fn merge_extremes(&mut self, affected: &[Key], extremes: &[Extremes]) {
        for (i, e) in self.positions(affected).into_iter().zip(extremes) {
            self.update_measures(i, |p, m| {
                if let Some((min, max)) = [e.bid, e.total][p] {
                    m.min = m.min.min(min);
                    m.max = m.max.max(max);
                }
            });
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
                if let Some(p) = part.find(k) {
                    let src = part.agg(p);
                    self.update_measures(*i, |p, m| m.merge_extremes(&[src.bid, src.total][p]));
                }
            }
        }
    }

    /// Checks that every measure of the `affected` keys got its extremes back once all
    /// remaining rows were merged in; a measure left without is a disagreement between
    /// the rollup and the rows it was told remain.
    pub fn check_extremes(&self, affected: &[Key]) -> Result<()> {
        for (i, k) in self.positions(affected).into_iter().zip(affected) {
            let agg = self.agg(i);
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
        let parts: Vec<&RollupRows> = parts.into_iter().collect();
        let pairs = parts
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => a.merge(b),
                [a] => (*a).clone(),
                _ => unreachable!("chunks of two"),
            })
            .collect();
        RollupRows::merge_tree(pairs)
    }
}

/// Sums sorted row sets given one at a time at the cost of a balanced merge tree: sets of
/// equal rank are merged as they pair up (a binary counter), so each row is merged about
/// log2(sets) times rather than once per set after it, and what is held stays within
/// about twice the sum. The sum does not depend on the order the sets come in.
#[derive(Debug, Default)]
pub struct MergeStack {
    /// Partial sums, each with its rank (it sums 2^rank sets), ranks decreasing.
    sums: Vec<(u32, RollupRows)>,
}

impl MergeStack {
    pub fn push(&mut self, mut rows: RollupRows) {
        let mut rank = 0;
        while self.sums.last().is_some_and(|(r, _)| *r == rank) {
            let (_, top) = self.sums.pop().expect("a top");
            rows = top.merge(&rows);
            rank += 1;
        }
        self.sums.push((rank, rows));
    }

    /// The sum of every set pushed.
    pub fn finish(self) -> RollupRows {
        RollupRows::merge_tree(self.sums.into_iter().rev().map(|(_, r)| r).collect())
    }
}

/// The most row sets `RollupRows::merge_many_in_place` merges in one pass, besides the
/// rollup's own rows.
const MERGE_WAYS: usize = 7;

/// How a many-way merge takes its rows: for each merged row, a bit for each set with a
/// row of that key (bit 0 the rollup's own rows, bit `s + 1` the `s`th added set), and
/// how many merged rows hold a bid, and a total.
struct Plan {
    takes: Vec<u8>,
    bid: usize,
    total: usize,
}

impl Plan {
    /// Walks the sets' keys in order, all of them at once.
    fn of(own: &RollupRows, adds: &[&RollupRows]) -> Plan {
        let mut sources = Vec::with_capacity(adds.len() + 1);
        sources.push(own);
        sources.extend_from_slice(adds);
        match sources.len() {
            2 => Plan::walk::<2>(&sources),
            3 => Plan::walk::<3>(&sources),
            4 => Plan::walk::<4>(&sources),
            5 => Plan::walk::<5>(&sources),
            6 => Plan::walk::<6>(&sources),
            7 => Plan::walk::<7>(&sources),
            _ => Plan::walk::<{ MERGE_WAYS + 1 }>(&sources),
        }
    }

    /// `of` for `W` sets (the loops over them unrolled).
    fn walk<const W: usize>(sources: &[&RollupRows]) -> Plan {
        const DONE: Ordinal = Ordinal::MAX;
        let sources: [&RollupRows; W] = sources.try_into().expect("W sets");
        let mut ord = sources.map(|s| s.keys.first().map_or(DONE, Key::ordinal));
        let mut row = [0usize; W];
        let (mut bid, mut total) = ([0usize; W], [0usize; W]);
        let mut plan = Plan {
            takes: Vec::with_capacity(sources.iter().map(|s| s.len()).max().unwrap_or(0)),
            bid: 0,
            total: 0,
        };
        loop {
            let least = ord.iter().fold(DONE, |m, o| m.min(*o));
            if least == DONE {
                return plan;
            }
            let mut takes = 0u8;
            let (mut holds_bid, mut holds_total) = (false, false);
            for s in 0..W {
                if ord[s] != least {
                    continue;
                }
                takes |= 1 << s;
                let (src, r) = (sources[s], row[s]);
                let b = src.bid.at.get(bid[s]) == Some(&row_index(r));
                let t = src.total.at.get(total[s]) == Some(&row_index(r));
                (holds_bid, holds_total) = (holds_bid | b, holds_total | t);
                bid[s] += usize::from(b);
                total[s] += usize::from(t);
                row[s] = r + 1;
                ord[s] = src.keys.get(r + 1).map_or(DONE, Key::ordinal);
            }
            plan.takes.push(takes);
            plan.bid += usize::from(holds_bid);
            plan.total += usize::from(holds_total);
        }
    }
}

/// The measure of row `row` when walking a sparse column from the back, `j` being the
/// number of its measures not passed yet.
#[inline]
fn take_back(s: &Sparse, j: &mut usize, row: usize) -> Measure {
    match j.checked_sub(1).map(|p| (p, s.at[p])) {
        Some((p, a)) if a as usize == row => {
            *j = p;
            s.values.get(p)
        }
        _ => Measure::default(),
    }
}

/// A sparse column being merged into in place, from the back: measures not read yet
/// sit at `[..read]`, measures written at `[write..]`.
struct Back<'a> {
    s: &'a mut Sparse,
    read: usize,
    write: usize,
}

impl<'a> Back<'a> {
    /// Grows the column by `more` measures.
    fn new(s: &'a mut Sparse, more: usize) -> Back<'a> {
        let read = s.at.len();
        s.at.resize(read + more, 0);
        s.values.resize(read + more);
        Back {
            s,
            read,
            write: read + more,
        }
    }

    /// The measure of old row `row` (read from the back), if it has one.
    fn take_back(&mut self, row: usize) -> Measure {
        let mut j = self.read;
        let m = take_back(self.s, &mut j, row);
        self.read = j;
        m
    }

    /// Writes the measure of new row `row` (from the back), if it has one.
    fn put_back(&mut self, row: usize, m: &Measure) {
        if m.n > 0 {
            self.write -= 1;
            self.s.at[self.write] = row_index(row);
            self.s.values.set(self.write, m);
        }
    }
}

/// `rows` minus `sub` (both sorted; every key of `sub` is in `rows`), and the keys whose
/// extremes `sub` may have held, their min and max left for the caller to restore. The
/// runs of rows between `sub`'s keys are copied whole.
fn subtract(rows: &RollupRows, sub: &RollupRows) -> (RollupRows, Vec<Key>) {
    let mut out = RollupRows::with_room(rows.len(), rows.bid.at.len(), rows.total.at.len());
    let mut walk = Walk::new(rows);
    let mut affected = Vec::new();
    let mut at = 0;
    for (k, s) in sub.iter() {
        let i = at + gallop(&rows.keys[at..], &k);
        walk.copy(at..i, &mut out);
        at = i;
        if rows.keys.get(i) != Some(&k) {
            continue;
        }
        at += 1;
        let mut a = walk.agg(i);
        let touched = a.bid.extremes_touched_by(&s.bid) || a.total.extremes_touched_by(&s.total);
        a.rows -= s.rows;
        a.bid.sub(&s.bid);
        a.total.sub(&s.total);
        if a.rows == 0 {
            continue;
        }
        if touched {
            affected.push(k);
            for m in [&mut a.bid, &mut a.total] {
                if m.n > 0 {
                    m.min = i64::MAX;
                    m.max = i64::MIN;
                }
            }
        }
        out.push(k, &a);
    }
    walk.copy(at..rows.len(), &mut out);
    out.shrink_to_fit();
    (out, affected)
}

/// The number of leading keys below `k` (exponential search: cheap when that is a short
/// run).
fn gallop(keys: &[Key], k: &Key) -> usize {
    gallop_by(keys, |x| x < k)
}

/// The number of leading items of `items` that are `below` (which holds for a prefix),
/// by exponential search from the front.
fn gallop_by<T>(items: &[T], below: impl Fn(&T) -> bool) -> usize {
    let mut hi = 1;
    while hi < items.len() && below(&items[hi - 1]) {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(items.len());
    lo + items[lo..hi].partition_point(below)
}

/// A walk over a rollup's rows in ascending order that copies runs of them and reads
/// single rows, each price column's cursor carried along (no search from the start).
struct Walk<'a> {
    rows: &'a RollupRows,
    /// Per price (bid, total), a measure index at or before the next row's.
    at: [usize; 2],
}

impl<'a> Walk<'a> {
    fn new(rows: &'a RollupRows) -> Walk<'a> {
        Walk { rows, at: [0; 2] }
    }

    /// Appends rows `range` (none before a row walked past) to `out` (keys above every
    /// key there).
    fn copy(&mut self, range: Range<usize>, out: &mut RollupRows) {
        let (src, to) = (self.rows, out.keys.len());
        out.ids.union(&src.ids);
        out.keys.extend_from_slice(&src.keys[range.clone()]);
        out.rows.extend_from_slice(&src.rows[range.clone()]);
        let [b, t] = &mut self.at;
        out.bid.extend_from(&src.bid, range.clone(), to, b);
        out.total.extend_from(&src.total, range, to, t);
    }

    /// The aggregates of row `i` (none before a row walked past), walking past it.
    fn agg(&mut self, i: usize) -> Agg {
        let src = self.rows;
        let [b, t] = &mut self.at;
        let measure = |s: &Sparse, j: &mut usize| {
            *j = s.seek_from(*j, i);
            s.take(j, i)
        };
        Agg {
            rows: src.rows[i],
            bid: measure(&src.bid, b),
            total: measure(&src.total, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is 16 bytes; ids outside 32 bits are refused, NULL ids read back as NULL
    /// and compare equal whatever was set before.
    #[test]
    fn keys_hold_32_bit_ids_and_nulls() {
        assert_eq!(std::mem::size_of::<Key>(), 16);
        assert!(Key::try_new(0, 1, 2, i64::from(i32::MAX) + 1, 0).is_none());
        assert!(Key::try_new(0, 1, 2, 0, i64::from(i32::MIN) - 1).is_none());
        let mut k = Key::new(5, 1, 2, -7, NULL_ID);
        assert_eq!((k.id(false), k.id(true), k.id32(true)), (-7, NULL_ID, None));
        assert!(k.set_id(false, NULL_ID));
        assert_eq!(k, Key::new(5, 1, 2, NULL_ID, NULL_ID));
        assert!(!k.set_id(true, i64::MIN));
        assert_eq!(k.id(true), NULL_ID);
    }

    /// The sampled keys and the lists by id a search uses are those of the rows as they
    /// are: each way the keys change drops those made before.
    #[test]
    fn searches_follow_the_keys() {
        let agg = |n: u64| Agg {
            rows: n,
            ..Agg::default()
        };
        let rows_of = |times: std::ops::Range<i32>| -> RollupRows {
            times
                .map(|t| (Key::new(t, 1, 0, i64::from(t % 7), 0), agg(1)))
                .collect()
        };
        let listed = |index: &IdIndex, len: usize| -> Vec<u32> {
            let rows = index.rows_in(i64::MIN, i64::MAX, 0..len);
            rows.flatten().copied().collect()
        };
        let sampled = |r: &RollupRows| {
            r.samples().to_vec() == sample(r.keys()).to_vec()
                && listed(r.by_id(false), r.len())
                    == listed(&IdIndex::new(r.keys(), false), r.len())
        };
        // 96 rows: a row pushed is sampled.
        let mut rows = rows_of(0..96);
        assert!(sampled(&rows));
        rows.push(Key::new(200, 1, 0, 0, 0), &agg(1));
        assert_eq!(rows.samples().len(), 4);
        assert!(sampled(&rows));
        rows.extend_from(&rows_of(300..400), 0..100);
        assert!(sampled(&rows));
        rows.merge_in_place(&rows_of(-50..0));
        assert!(sampled(&rows));
        assert_eq!(rows.samples()[0], Key::new(-50, 1, 0, -50 % 7, 0).ordinal());
        rows.push(Key::new(-100, 1, 0, 0, 0), &agg(1));
        rows.sort();
        assert!(sampled(&rows));
        let mut shared = Layered::from(rows.clone());
        assert!(sampled(shared.parts()[0]));
        shared.make_mut().merge_in_place(&rows_of(1000..1100));
        assert!(sampled(shared.parts()[0]));
        assert_eq!(shared.parts()[0].len(), rows.len() + 100);
    }

    /// A bound made from any column values orders against keys as those values do, ids
    /// outside 32 bits included.
    #[test]
    fn bounds_order_against_keys_as_their_columns_do() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let ids = [i32::MIN as i64, -1, 0, 7, i32::MAX as i64, NULL_ID];
        let wide = [
            i64::MIN,
            i32::MIN as i64 - 1,
            0,
            i32::MAX as i64 + 1,
            NULL_ID - 1,
        ];
        for _ in 0..20_000 {
            let mut pick = |values: &[i64]| values[rng.gen_range(0..values.len())];
            let key = Key::new(pick(&[-1, 0, 5]) as i32, 1, 2, pick(&ids), pick(&ids));
            let parts = [
                pick(&[-1, 0, 5]),
                1,
                2,
                pick(&[ids.as_slice(), &wide].concat()),
                pick(&[ids.as_slice(), &wide].concat()),
            ];
            assert_eq!(
                key.ordinal() < ordinal_of(parts),
                key.parts() < parts,
                "{key:?} {parts:?}"
            );
        }
    }

    /// Keys order as their fields do in turn, extremes and NULL sentinels included.
    #[test]
    fn keys_order_by_their_fields() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let times = [i32::MIN, -1, 0, 1, 28_000_000, NULL_TIME];
        let ids = [i32::MIN as i64, -5, -1, 0, 1, 7, i32::MAX as i64, NULL_ID];
        let key = |rng: &mut rand_chacha::ChaCha8Rng| {
            Key::new(
                times[rng.gen_range(0..times.len())],
                rng.gen_range(0..3),
                [0, 1, u16::MAX][rng.gen_range(0..3)],
                ids[rng.gen_range(0..ids.len())],
                ids[rng.gen_range(0..ids.len())],
            )
        };
        let fields = |k: &Key| (k.time, k.typ, k.country, k.id(false), k.id(true));
        for _ in 0..20_000 {
            let (a, b) = (key(&mut rng), key(&mut rng));
            assert_eq!(a.cmp(&b), fields(&a).cmp(&fields(&b)), "{a:?} {b:?}");
            assert_eq!(a < b, fields(&a) < fields(&b), "{a:?} {b:?}");
            assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
        }
    }

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

    /// A row without prices costs its key and count; a price measure is kept only for
    /// the rows that have one.
    #[test]
    fn rollup_rows_stay_compact() {
        let k = |t| Key {
            time: t,
            ..Key::default()
        };
        let bare: RollupRows = (0..1000).map(|t| (k(t), agg(1, None))).collect();
        assert_eq!(bare.heap_bytes(), 1000 * 24);
        let priced: RollupRows = (0..1000).map(|t| (k(t), agg(1, Some(t as i64)))).collect();
        assert!(priced.heap_bytes() <= 1000 * (24 + 44) + 4096);
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
        let a = RollupRows::from_iter([(k(1), agg(1, Some(5))), (k(3), agg(2, None))]);
        let b = RollupRows::from_iter([(k(1), agg(1, Some(-7))), (k(2), agg(1, Some(9)))]);
        let c = RollupRows::from_iter([(k(3), agg(4, Some(1)))]);
        let abc = a.merge(&b).merge(&c);
        let cba = c.merge(&b).merge(&a);
        assert_eq!(abc, cba);
        assert_eq!(abc, RollupRows::merge_all([&b, &c, &a]));
        assert_eq!(
            abc,
            RollupRows::merge_tree(vec![c.clone(), a.clone(), b.clone()])
        );
        assert_eq!(RollupRows::merge_tree(Vec::new()), RollupRows::default());
        for n in 0..=6 {
            let sets = [&a, &b, &c, &b, &a, &c];
            let mut stack = MergeStack::default();
            for s in &sets[..n] {
                stack.push((*s).clone());
            }
            assert_eq!(
                stack.finish(),
                RollupRows::merge_all(sets[..n].iter().copied())
            );
        }
        let first = abc.agg(0);
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
        let f1 = RollupRows::from_iter([(k(1), agg(1, Some(5))), (k(2), agg(1, Some(3)))]);
        let f2 = RollupRows::from_iter([(k(1), agg(1, Some(9))), (k(3), agg(2, None))]);
        let f3 = RollupRows::from_iter([(k(1), agg(1, Some(7)))]);
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

    /// Merging, subtracting, copying runs and sorting agree with a plain map of keys,
    /// on random rows where either price may be missing.
    #[test]
    fn columns_agree_with_a_map() {
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeMap;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut random_rows = |n: usize| -> BTreeMap<Key, Agg> {
            let mut m = BTreeMap::new();
            for _ in 0..n {
                let key = Key {
                    time: rng.gen_range(0..50),
                    typ: rng.gen_range(0..3),
                    ..Key::default()
                };
                let a = m.entry(key).or_insert_with(Agg::default);
                a.rows += 1;
                if rng.gen_bool(0.4) {
                    a.bid.add(rng.gen_range(-9..9));
                }
                if rng.gen_bool(0.1) {
                    a.total.add(rng.gen_range(0..1000));
                }
            }
            m
        };
        let of = |m: &BTreeMap<Key, Agg>| m.iter().map(|(k, a)| (*k, *a)).collect::<RollupRows>();
        for _ in 0..50 {
            let (a, b) = (random_rows(60), random_rows(40));
            let mut sum = a.clone();
            for (k, x) in &b {
                sum.entry(*k).or_default().merge(x);
            }
            let (ra, rb) = (of(&a), of(&b));
            assert_eq!(ra.merge(&rb), of(&sum));
            let mut in_place = ra.clone();
            in_place.merge_in_place(&rb);
            assert_eq!(in_place, of(&sum));
            let mut from_empty = RollupRows::default();
            from_empty.merge_in_place(&ra);
            assert_eq!(from_empty, ra);
            // Many sets at once (more than one pass takes), in any order.
            let more: Vec<BTreeMap<Key, Agg>> = (0..9).map(|_| random_rows(30)).collect();
            let mut all = sum.clone();
            for m in &more {
                for (k, x) in m {
                    all.entry(*k).or_default().merge(x);
                }
            }
            let sets: Vec<RollupRows> = more.iter().map(&of).collect();
            let mut many = ra.clone();
            let mut adds: Vec<&RollupRows> = sets.iter().collect();
            adds.push(&rb);
            adds.reverse();
            many.merge_many_in_place(&adds);
            assert_eq!(many, of(&all));
            assert_eq!(ra.iter().collect::<BTreeMap<_, _>>(), a);
            // Taking b out again: exact sums, and the flagged keys get their extremes back.
            let (mut back, affected) = of(&sum).combine(&RollupRows::default(), &rb);
            back.recompute_extremes(&affected, [&ra]);
            back.check_extremes(&affected).unwrap();
            assert_eq!(back, ra);
            // Runs copied whole, and compared by range.
            let mid = ra.len() / 2;
            let mut copy = RollupRows::default();
            copy.extend_from(&ra, 0..mid);
            copy.extend_from(&ra, mid..ra.len());
            assert_eq!(copy, ra);
            assert!(copy.range_eq(mid..ra.len(), &ra, mid..ra.len()));
            assert!(mid == 0 || !copy.range_eq(0..mid, &ra, 1..mid + 1));
            let mut shuffled = RollupRows::default();
            for (k, x) in a.iter().rev() {
                shuffled.push(*k, x);
            }
            shuffled.sort();
            assert_eq!(shuffled, ra);
            // A much smaller side merges by copying runs, either way round.
            let small = random_rows(4);
            let mut with_small = a.clone();
            for (k, x) in &small {
                with_small.entry(*k).or_default().merge(x);
            }
            assert_eq!(ra.merge(&of(&small)), of(&with_small));
            assert_eq!(of(&small).merge(&ra), of(&with_small));
            // What one set added to another, merged back, gives it; a set that took
            // anything away has no additions.
            let grown = ra.additions_to(&of(&with_small)).unwrap();
            assert_eq!(ra.merge(&grown), of(&with_small));
            assert!(grown.len() <= small.len());
            assert!(ra.additions_to(&ra).unwrap().is_empty());
            assert_eq!(RollupRows::default().additions_to(&ra).unwrap(), ra);
            assert!(b.is_empty() || of(&sum).additions_to(&ra).is_none());
        }
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
