//! The fold's fast path for the common shape of input: unquoted rows of plain values
//! (integers, decimals with at most 9 fractional digits, UUIDs, known event types). It
//! parses straight into typed columns and builds the table batch already sorted, with no
//! intermediate string arrays.
//!
//! It accepts a strict subset of what arrow-csv accepts and gives up (returns None) on
//! anything else: a quote, a blank line, a wrong field count, a value in another form.
//! The general parser then folds the file, with its error messages and bad-row handling,
//! so the fast path never changes what a file folds to.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, ArrowPrimitiveType, FixedSizeBinaryArray, Int32Array, PrimitiveArray, RecordBatch,
    StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type, Int64Type};

use crate::ingest::fold::{parse_uuid_bytes, table_order, table_schema};
use crate::model::arrays::utf8;
use crate::model::buckets::Buckets;
use crate::model::codes::{Code, TextCodes};
use crate::model::schema::{
    type_code_of, Zone, EVENT_TYPES, PRICE_PRECISION, PRICE_SCALE, RAW_COLUMNS,
};

/// One parsed row, one cache line: rows are kept whole (not a vector per column) so
/// that taking them in table order reads each row with a single cache miss. NULLs are
/// bits of `valid` (values are 0 there); country and type are codes, 0 for NULL.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Row {
    ts: i64,
    bid: i64,
    user: i64,
    total: i64,
    auction: [u8; 16],
    minute: i32,
    adv: i32,
    publ: i32,
    /// Index into `Rows::countries` + 1.
    country: u16,
    /// Index into `EVENT_TYPES` + 1.
    typ: u8,
    valid: u8,
}

/// A chunk's country texts and their indexes (into `Rows::countries`, + 1).
type CountryIndex<'a> = TextCodes<&'a [u8], u16>;

/// The bits of `Row::valid`: which values are not NULL (`TS` covers the minute too).
mod valid {
    pub const TS: u8 = 1;
    pub const AUCTION: u8 = 2;
    pub const ADV: u8 = 4;
    pub const PUBL: u8 = 8;
    pub const BID: u8 = 16;
    pub const USER: u8 = 32;
    pub const TOTAL: u8 = 64;
}

/// The parsed rows, in file order.
struct Rows {
    rows: Vec<Row>,
    places: Vec<Place>,
    countries: Vec<String>,
}

/// Parses `body` (whole lines after the header) into a table batch sorted by day (NULL
/// last), type and country, or None if any of it is outside the fast path's subset.
/// `names` are the header's column names.
pub fn parse(names: &[String], body: &[u8], ids: (i32, i32), zone: Zone) -> Option<RecordBatch> {
    if memchr::memchr(b'"', body).is_some() {
        return None;
    }
    let at: Vec<usize> = RAW_COLUMNS
        .iter()
        .map(|want| names.iter().position(|n| n == want))
        .collect::<Option<_>>()?;
    // Which raw column (if any) each field of a line is.
    let mut role = vec![usize::MAX; names.len()];
    for (raw, field) in at.iter().enumerate() {
        role[*field] = raw;
    }
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    // Room for rows of 48 bytes or more, without counting lines first: room not filled
    // is address space, never touched.
    let mut rows = Rows::with_capacity(body.len() / 48 + 1);
    let mut clock = zone.clock();
    let mut country_index = CountryIndex::default();
    let mut fields: [&[u8]; 9] = [&[]; 9];
    // One pass over every delimiter: a field ends at a comma, a line at a newline (after
    // an optional CR); a CR anywhere else is outside the subset.
    let (mut field, mut from, mut line_start, mut cr) = (0, 0, 0, usize::MAX);
    for at in Delimiters::new(body).chain(std::iter::once(body.len())) {
        let end = match body.get(at).copied().unwrap_or(b'\n') {
            b',' => {
                let raw = *role.get(field)?;
                if raw != usize::MAX {
                    fields[raw] = &body[from..at];
                }
                field += 1;
                from = at + 1;
                continue;
            }
            b'\r' => {
                if !matches!(body.get(at + 1), None | Some(b'\n')) {
                    return None;
                }
                cr = at;
                continue;
            }
            _ if at.checked_sub(1) == Some(cr) => cr,
            _ => at,
        };
        if end == line_start || field + 1 != names.len() {
            return None;
        }
        let raw = role[field];
        if raw != usize::MAX {
            fields[raw] = &body[from..end];
        }
        rows.push(&fields, &mut clock, &mut country_index)?;
        (field, from, line_start) = (0, at + 1, at + 1);
    }
    Some(rows.into_sorted_batch(ids))
}

/// The positions of every comma, newline and carriage return in a text, in order. A
/// block of 64 bytes at a time becomes a mask of which bytes are one, and the mask's
/// bits are read off: ~3 ns a delimiter, where searching from each to the next
/// (`memchr3`) took ~8 (a 500k-row file has 4.5 M of them).
struct Delimiters<'a> {
    text: &'a [u8],
    /// Where the block of `mask` starts.
    at: usize,
    /// The delimiters of the block at `at` not yet given.
    mask: u64,
}

impl<'a> Delimiters<'a> {
    fn new(text: &'a [u8]) -> Delimiters<'a> {
        let mut d = Delimiters {
            text,
            at: 0,
            mask: 0,
        };
        d.mask = d.block(0);
        d
    }

    /// The delimiter mask of the 64 bytes from `at` (fewer at the end).
    #[inline]
    fn block(&self, at: usize) -> u64 {
        let mut bytes = [0u8; 64];
        match self.text.get(at..at + 64) {
            Some(block) => bytes.copy_from_slice(block),
            None => {
                let rest = &self.text[at.min(self.text.len())..];
                bytes[..rest.len()].copy_from_slice(rest);
            }
        }
        delimiter_mask(&bytes)
    }
}

/// Which of 64 bytes are a comma, newline or carriage return, a bit each, 16 bytes at a
/// time with SSE2 (part of every x86-64 CPU).
#[cfg(target_arch = "x86_64")]
#[inline]
fn delimiter_mask(bytes: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is always there on x86-64, and each unaligned 16-byte load reads
    // within `bytes`.
    unsafe {
        let [comma, newline, cr] = [b',', b'\n', b'\r'].map(|b| _mm_set1_epi8(b as i8));
        let mut mask = 0u64;
        for k in 0..4 {
            let v = _mm_loadu_si128(bytes.as_ptr().add(16 * k).cast::<__m128i>());
            let hit = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, newline)),
                _mm_cmpeq_epi8(v, cr),
            );
            mask |= u64::from(_mm_movemask_epi8(hit) as u16) << (16 * k);
        }
        mask
    }
}

/// `delimiter_mask` a byte at a time.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn delimiter_mask(bytes: &[u8; 64]) -> u64 {
    let mut mask = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        mask |= u64::from(*b == b',' || *b == b'\n' || *b == b'\r') << i;
    }
    mask
}

impl Iterator for Delimiters<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.at += 64;
            if self.at >= self.text.len() {
                return None;
            }
            self.mask = self.block(self.at);
        }
        let bit = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.at + bit)
    }
}

impl Rows {
    fn with_capacity(rows: usize) -> Rows {
        Rows {
            rows: Vec::with_capacity(rows),
            places: Vec::with_capacity(rows),
            countries: Vec::new(),
        }
    }

    /// Appends one row (fields in `RAW_COLUMNS` order), or None if a value is outside the
    /// fast path's subset (or the chunk has more distinct countries than a code holds).
    fn push<'a>(
        &mut self,
        f: &[&'a [u8]; 9],
        clock: &mut crate::model::schema::LocalClock,
        country_index: &mut CountryIndex<'a>,
    ) -> Option<()> {
        let mut valid = 0;
        let ts = value(f[0], int, valid::TS, &mut valid)?;
        let id = |t: &[u8]| i32::try_from(int(t)?).ok();
        let mut row = Row {
            ts,
            minute: match valid & valid::TS {
                0 => 0,
                _ => clock.local_minute(ts)?,
            },
            typ: match f[1] {
                b"" => 0,
                t => type_code_of(t)?,
            },
            auction: value(f[2], parse_uuid_bytes, valid::AUCTION, &mut valid)?,
            adv: value(f[3], id, valid::ADV, &mut valid)?,
            publ: value(f[4], id, valid::PUBL, &mut valid)?,
            bid: value(f[5], decimal, valid::BID, &mut valid)?,
            user: value(f[6], int, valid::USER, &mut valid)?,
            total: value(f[7], decimal, valid::TOTAL, &mut valid)?,
            country: 0,
            valid: 0,
        };
        row.valid = valid;
        row.country = match f[8] {
            b"" => 0,
            c => match country_index.get(c) {
                Some(i) => i,
                None => {
                    self.countries
                        .push(std::str::from_utf8(c).ok()?.to_string());
                    let i = u16::try_from(self.countries.len())
                        .ok()
                        .filter(|i| *i != u16::NONE)?;
                    country_index.insert(c, i);
                    i
                }
            },
        };
        self.places.push(Place {
            day: match row.valid & valid::TS {
                0 => NULL_DAY,
                _ => row.minute.div_euclid(1440),
            },
            country: row.country,
            typ: row.typ,
        });
        self.rows.push(row);
        Some(())
    }

    /// The rows as a table batch sorted by day (NULL last), type (NULL last) and country
    /// (by name, NULL last), as `fold::sort_for_table` orders them. The rows are taken in
    /// that order once, each value pushed onto its column.
    fn into_sorted_batch(self, (file_id, part): (i32, i32)) -> RecordBatch {
        let n = self.rows.len();
        let mut by_name: Vec<u32> = (1..=self.countries.len() as u32).collect();
        by_name.sort_unstable_by(|a, b| {
            self.countries[*a as usize - 1].cmp(&self.countries[*b as usize - 1])
        });
        let mut rank = vec![None; self.countries.len() + 1];
        for (r, c) in by_name.iter().enumerate() {
            rank[*c as usize] = Some(r as u64 + 1);
        }
        let order = self.table_order(&rank);
        let mut c = Sorted::with_capacity(n);
        // Rows are copied out a block at a time in a plain loop, whose loads the CPU
        // overlaps; taken one by one, each row's cache miss was waited for in turn.
        let mut block = Vec::with_capacity(1024);
        for part in order.chunks(1024) {
            block.clear();
            block.extend(part.iter().map(|&i| self.rows[i as usize]));
            for r in &block {
                c.push(r);
            }
        }
        drop(order);
        let type_names: Vec<&str> = EVENT_TYPES.to_vec();
        let country_names: Vec<&str> = self.countries.iter().map(String::as_str).collect();
        let masks = std::mem::take(&mut c.valid);
        let nulls = |bit: u8| nulls_of(&masks, bit);
        let price = |v: Vec<i128>, bit: u8| -> ArrayRef {
            Arc::new(
                PrimitiveArray::<Decimal128Type>::new(ScalarBuffer::from(v), nulls(bit))
                    .with_precision_and_scale(PRICE_PRECISION, PRICE_SCALE)
                    .expect("valid decimal type"),
            )
        };
        fn array<T: ArrowPrimitiveType>(v: Vec<T::Native>, nulls: Option<NullBuffer>) -> ArrayRef {
            Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(v), nulls))
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![file_id; n])),
            Arc::new(Int32Array::from(vec![part; n])),
            array::<Int64Type>(c.ts, nulls(valid::TS)),
            Arc::new(text(&c.typ, &type_names)),
            Arc::new(FixedSizeBinaryArray::new(
                16,
                Buffer::from_vec(c.auction),
                nulls(valid::AUCTION),
            )),
            array::<Int32Type>(c.adv, nulls(valid::ADV)),
            array::<Int32Type>(c.publ, nulls(valid::PUBL)),
            price(c.bid, valid::BID),
            array::<Int64Type>(c.user, nulls(valid::USER)),
            price(c.total, valid::TOTAL),
            Arc::new(text(&c.country, &country_names)),
            array::<Date32Type>(c.day, nulls(valid::TS)),
            array::<Int32Type>(c.minute, nulls(valid::TS)),
        ];
        RecordBatch::try_new(table_schema(), columns).expect("columns match the table schema")
    }
}

impl Rows {
    /// The rows' indexes in table order: by day, type and the `rank` of the country's
    /// name (each NULL last), ties in file order. A counting sort when the (day, type,
    /// country) buckets are few next to the rows, as a file of a year's events has them.
    fn table_order(&self, rank: &[Option<u64>]) -> Vec<u32> {
        let day = |p: &Place| (p.day != NULL_DAY).then_some(p.day);
        let (lo, hi) = (self.places.iter().filter_map(day))
            .fold((i32::MAX, i32::MIN), |(lo, hi), d| (lo.min(d), hi.max(d)));
        // The days in the span, then NULL's; the types, then NULL's; the same for countries.
        let days = (i64::from(hi) - i64::from(lo) + 2).max(1) as usize;
        let types = EVENT_TYPES.len() + 1;
        let countries = self.countries.len() + 1;
        let buckets = days.saturating_mul(types * countries);
        let n = self.places.len();
        if buckets <= 4 * n + (1 << 16) {
            let bucket = |i: usize| {
                let p = &self.places[i];
                let d = day(p).map_or(days - 1, |d| (d - lo) as usize);
                let t = (usize::from(p.typ) + types - 1) % types;
                let c = rank[usize::from(p.country)].map_or(countries - 1, |k| k as usize - 1);
                (d * types + t) * countries + c
            };
            return Buckets::sort(0..n, buckets, bucket).order;
        }
        let mut keyed: Vec<(u64, u32)> = (self.places.iter().enumerate())
            .map(|(i, p)| {
                let typ = (p.typ != 0).then_some(p.typ);
                (
                    table_order(day(p), typ, rank[usize::from(p.country)]),
                    i as u32,
                )
            })
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, i)| i).collect()
    }
}

/// What a row's place in table order is made of, kept apart from the row so that
/// sorting reads 8 bytes a row rather than 64.
#[derive(Clone, Copy)]
struct Place {
    /// The local day; `NULL_DAY` for NULL `ts`.
    day: i32,
    country: u16,
    typ: u8,
}

/// `Place::day` for NULL `ts` (local days of 32-bit minutes are far from it).
const NULL_DAY: i32 = i32::MAX;

/// The table's columns, filled in table order; NULL values are 0 and `valid` says which.
struct Sorted {
    ts: Vec<i64>,
    typ: Vec<u8>,
    auction: Vec<u8>,
    adv: Vec<i32>,
    publ: Vec<i32>,
    bid: Vec<i128>,
    user: Vec<i64>,
    total: Vec<i128>,
    country: Vec<u16>,
    day: Vec<i32>,
    minute: Vec<i32>,
    valid: Vec<u8>,
}

impl Sorted {
    fn with_capacity(n: usize) -> Sorted {
        Sorted {
            ts: Vec::with_capacity(n),
            typ: Vec::with_capacity(n),
            auction: Vec::with_capacity(16 * n),
            adv: Vec::with_capacity(n),
            publ: Vec::with_capacity(n),
            bid: Vec::with_capacity(n),
            user: Vec::with_capacity(n),
            total: Vec::with_capacity(n),
            country: Vec::with_capacity(n),
            day: Vec::with_capacity(n),
            minute: Vec::with_capacity(n),
            valid: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn push(&mut self, r: &Row) {
        self.ts.push(r.ts);
        self.typ.push(r.typ);
        self.auction.extend_from_slice(&r.auction);
        self.adv.push(r.adv);
        self.publ.push(r.publ);
        self.bid.push(i128::from(r.bid));
        self.user.push(r.user);
        self.total.push(i128::from(r.total));
        self.country.push(r.country);
        self.day.push(r.minute.div_euclid(1440));
        self.minute.push(r.minute);
        self.valid.push(r.valid);
    }
}

/// The validity of the column of `bit` in rows' `valid` masks, None if no value is NULL.
fn nulls_of(masks: &[u8], bit: u8) -> Option<NullBuffer> {
    masks.iter().any(|v| v & bit == 0).then(|| {
        NullBuffer::new(BooleanBuffer::collect_bool(masks.len(), |k| {
            masks[k] & bit != 0
        }))
    })
}

/// A text column coded as an index into `names` + 1 (0 is NULL).
fn text(codes: &[impl Copy + Into<u32>], names: &[&str]) -> StringArray {
    utf8(codes, 8, |c, out| match (*c).into().checked_sub(1) {
        Some(c) => {
            out.extend_from_slice(names[c as usize].as_bytes());
            true
        }
        None => false,
    })
}

/// `parse(text)` for a non-empty field, setting `bit` of `valid`; 0 for an empty one
/// (NULL). None if the text is outside the subset.
#[inline]
fn value<T: Default>(
    text: &[u8],
    parse: impl FnOnce(&[u8]) -> Option<T>,
    bit: u8,
    valid: &mut u8,
) -> Option<T> {
    if text.is_empty() {
        return Some(T::default());
    }
    let v = parse(text)?;
    *valid |= bit;
    Some(v)
}

/// An integer: an optional `-` and 1 to 18 digits (so it cannot overflow an i64).
#[inline]
fn int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
    }
    Some(if negative { -v } else { v })
}

/// A decimal in 10⁻⁹ units: an optional `-`, 1 to 9 integer digits, and optionally a `.`
/// with 1 to 9 fractional digits (so it fits DECIMAL(18,9) exactly).
#[inline]
fn decimal(text: &[u8]) -> Option<i64> {
    let (negative, rest) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = match memchr::memchr(b'.', rest) {
        Some(dot) => (&rest[..dot], Some(&rest[dot + 1..])),
        None => (rest, None),
    };
    if whole.is_empty() || whole.len() > 9 {
        return None;
    }
    let mut v = int(whole)?;
    if whole[0] == b'-' {
        return None;
    }
    let mut scale = 9;
    if let Some(frac) = frac {
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        for b in frac {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + i64::from(d);
        }
        scale -= frac.len() as u32;
    }
    v *= 10i64.pow(scale);
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    use super::*;

    /// The delimiters found a block at a time are memchr's, at every length and offset.
    #[test]
    fn delimiters_as_memchr_finds_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for len in (0..300).chain([1000, 4096, 4097]) {
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    *[b',', b'\n', b'\r', b'a', b'1', 0xff]
                        .choose(&mut rng)
                        .unwrap()
                })
                .collect();
            let want: Vec<usize> = memchr::memchr3_iter(b',', b'\n', b'\r', &text).collect();
            assert_eq!(Delimiters::new(&text).collect::<Vec<_>>(), want, "{len}");
            for from in [1, 7, 63, 64, 65] {
                let part = &text[from.min(len)..];
                let want: Vec<usize> = memchr::memchr3_iter(b',', b'\n', b'\r', part).collect();
                assert_eq!(Delimiters::new(part).collect::<Vec<_>>(), want);
            }
        }
    }

    #[test]
    fn strict_numbers() {
        assert_eq!(int(b"-42"), Some(-42));
        assert_eq!(int(b"+42"), None);
        assert_eq!(int(b" 4"), None);
        assert_eq!(int(b""), None);
        assert_eq!(decimal(b"0.551635"), Some(551_635_000));
        assert_eq!(decimal(b"-1.5"), Some(-1_500_000_000));
        assert_eq!(decimal(b"12"), Some(12_000_000_000));
        assert_eq!(decimal(b"0.123456789"), Some(123_456_789));
        assert_eq!(decimal(b"0.1234567891"), None);
        assert_eq!(decimal(b".5"), None);
        assert_eq!(decimal(b"5."), None);
        assert_eq!(decimal(b"1e5"), None);
        assert_eq!(decimal(b"--1"), None);
        assert_eq!(decimal(b"1234567890.5"), None);
    }
}

#[cfg(test)]
mod equivalence {
    use std::path::Path;

    use super::*;
    use crate::ingest::fold::{general_parse, read_header, split_header, Text};

    /// The fast path's batch for `text` (header line included), or None if it gave up;
    /// when it did not, the general parser must produce the very same batch.
    fn both(text: &str) -> Option<RecordBatch> {
        let bytes = text.as_bytes();
        let header_len = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
        let (header, body) = bytes.split_at(header_len);
        let names = split_header(&read_header(&mut &header[..]).unwrap().unwrap());
        let fast = parse(&names, body, (3, 1), Zone::Utc)?;
        let input = Text {
            path: Path::new("t.csv"),
            header,
            body,
            first_line: 2,
            ids: (3, 1),
            zone: Zone::Utc,
            countries: &crate::rollup::Countries::default(),
        };
        let (general, bad) = general_parse(&input, 0).unwrap();
        assert!(bad.is_empty());
        assert_eq!(fast, general, "{text}");
        Some(fast)
    }

    const HEADER: &str =
        "ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price,country\n";

    #[test]
    fn the_fast_path_folds_what_the_general_parser_does() {
        let sample = String::from_utf8(crate::app::gen::sample_file(5_000, 9)).unwrap();
        assert_eq!(both(&sample).unwrap().num_rows(), 5_000);
        assert!(both(&sample.replace('\n', "\r\n")).is_some());
        // NULL days, types and countries among a year's rows (sorted by counting) ...
        let nulls = format!("{sample},,,,,,,,\n1717249500000,,,,,,,,\n,click,,,,,,,US\n");
        assert_eq!(both(&nulls).unwrap().num_rows(), 5_003);
        // ... and rows decades apart (too many days to count: sorted by comparison).
        let odd = "country,extra,user_id,total_price,bid_price,publisher_id,advertiser_id,\
                   auction_id,type,ts\n\
                   JP,x,-5,,0.5,7,-8,123E4567-E89B-12D3-A456-426614174000,click,-60000\n\
                   ÄÖ,,,12.000000001,,,,,,\n\
                   ,y,9,,-0.000000001,,,123e4567e89b12d3a456426614174000,purchase,1717249500000";
        assert_eq!(both(odd).unwrap().num_rows(), 3);
        assert_eq!(both(&format!("{HEADER},,,,,,,,\n")).unwrap().num_rows(), 1);
    }

    #[test]
    fn the_fast_path_gives_up_outside_its_subset() {
        for row in [
            "1,\"click\",,,,,,,US",
            "1,click,,,,+5,,,US",
            "1,click,,,,0.1234567891,,,US",
            "1,click,,, 5,,,,US",
            "1,clicks,,,,,,,US",
            "1,click,,,,,,,US,extra",
            "1,click,,,,,,",
            "1,click,not-a-uuid,,,,,,US",
            "99999999999999999,click,,,,,,,US",
        ] {
            let text = format!("{HEADER}{row}\n");
            let names = split_header(HEADER.trim_end());
            assert!(
                parse(&names, &text.as_bytes()[HEADER.len()..], (0, 0), Zone::Utc).is_none(),
                "{row}"
            );
        }
        let names = split_header(HEADER.trim_end());
        for body in [
            "1,click,,,,,,,US\n\n2,click,,,,,,,US\n",
            "1,click,,,,,,,US\r\n\r\n2,click,,,,,,,US\r\n",
            "1,click,,,,,,,U\rS\n",
            "1,click,,,,,,,US\r\r\n",
            "",
        ] {
            assert!(
                parse(&names, body.as_bytes(), (0, 0), Zone::Utc).is_none(),
                "{body:?}"
            );
        }
        for body in ["1,click,,,,,,,US\r\n2,click,,,,,,,US\r", "1,click,,,,,,,US"] {
            assert_eq!(
                parse(&names, body.as_bytes(), (0, 0), Zone::Utc).map(|b| b.num_rows()),
                Some(body.lines().count()),
                "{body:?}"
            );
        }
    }
}
