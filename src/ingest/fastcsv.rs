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
    ArrayRef, Date32Array, Decimal128Array, FixedSizeBinaryArray, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use rustc_hash::FxHashMap;

use crate::ingest::fold::{parse_uuid, table_order, table_schema};
use crate::model::schema::{
    type_code, Zone, EVENT_TYPES, PRICE_PRECISION, PRICE_SCALE, RAW_COLUMNS,
};

/// The parsed columns, one entry per row, in file order.
struct Columns {
    ts: Vec<Option<i64>>,
    minute: Vec<Option<i32>>,
    typ: Vec<u8>,
    auction: Vec<Option<[u8; 16]>>,
    adv: Vec<Option<i32>>,
    publ: Vec<Option<i32>>,
    bid: Vec<Option<i64>>,
    user: Vec<Option<i64>>,
    total: Vec<Option<i64>>,
    /// Index into `countries` + 1; 0 = NULL.
    country: Vec<u32>,
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
    let mut cols = Columns::with_capacity(memchr::memchr_iter(b'\n', body).count() + 1);
    let mut clock = zone.clock();
    let mut country_index: FxHashMap<&[u8], u32> = FxHashMap::default();
    let mut fields: [&[u8]; 9] = [&[]; 9];
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())) {
        let line = &body[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || memchr::memchr(b'\r', line).is_some() {
            return None;
        }
        let mut n = 0;
        let mut from = 0;
        for end in memchr::memchr_iter(b',', line).chain(std::iter::once(line.len())) {
            let raw = *role.get(n)?;
            if raw != usize::MAX {
                fields[raw] = &line[from..end];
            }
            from = end + 1;
            n += 1;
        }
        if n != names.len() {
            return None;
        }
        cols.push(&fields, &mut clock, &mut country_index)?;
    }
    Some(cols.into_sorted_batch(ids))
}

impl Columns {
    fn with_capacity(rows: usize) -> Columns {
        Columns {
            ts: Vec::with_capacity(rows),
            minute: Vec::with_capacity(rows),
            typ: Vec::with_capacity(rows),
            auction: Vec::with_capacity(rows),
            adv: Vec::with_capacity(rows),
            publ: Vec::with_capacity(rows),
            bid: Vec::with_capacity(rows),
            user: Vec::with_capacity(rows),
            total: Vec::with_capacity(rows),
            country: Vec::with_capacity(rows),
            countries: Vec::new(),
        }
    }

    /// Appends one row (fields in `RAW_COLUMNS` order), or None if a value is outside the
    /// fast path's subset.
    fn push<'a>(
        &mut self,
        f: &[&'a [u8]; 9],
        clock: &mut crate::model::schema::LocalClock,
        country_index: &mut FxHashMap<&'a [u8], u32>,
    ) -> Option<()> {
        let ts = nullable(f[0], int)?;
        let minute = match ts {
            Some(ms) => Some(clock.local_minute(ms)?),
            None => None,
        };
        self.ts.push(ts);
        self.minute.push(minute);
        self.typ.push(match f[1] {
            b"" => 0,
            t => type_code(std::str::from_utf8(t).ok()?)?,
        });
        self.auction.push(nullable(f[2], |t| {
            parse_uuid(std::str::from_utf8(t).ok()?)
        })?);
        self.adv
            .push(nullable(f[3], |t| i32::try_from(int(t)?).ok())?);
        self.publ
            .push(nullable(f[4], |t| i32::try_from(int(t)?).ok())?);
        self.bid.push(nullable(f[5], decimal)?);
        self.user.push(nullable(f[6], int)?);
        self.total.push(nullable(f[7], decimal)?);
        self.country.push(match f[8] {
            b"" => 0,
            c => match country_index.get(c) {
                Some(i) => *i,
                None => {
                    self.countries
                        .push(std::str::from_utf8(c).ok()?.to_string());
                    let i = self.countries.len() as u32;
                    country_index.insert(c, i);
                    i
                }
            },
        });
        Some(())
    }

    /// The rows as a table batch sorted by day (NULL last), type (NULL last) and country
    /// (by name, NULL last), as `fold::sort_for_table` orders them.
    fn into_sorted_batch(self, (file_id, part): (i32, i32)) -> RecordBatch {
        let n = self.ts.len();
        let mut by_name: Vec<u32> = (1..=self.countries.len() as u32).collect();
        by_name.sort_unstable_by(|a, b| {
            self.countries[*a as usize - 1].cmp(&self.countries[*b as usize - 1])
        });
        let mut rank = vec![None; self.countries.len() + 1];
        for (r, c) in by_name.iter().enumerate() {
            rank[*c as usize] = Some(r as u64 + 1);
        }
        let mut order: Vec<(u64, u32)> = (0..n)
            .map(|i| {
                let key = table_order(
                    self.minute[i].map(|m| m.div_euclid(1440)),
                    (self.typ[i] != 0).then_some(self.typ[i]),
                    rank[self.country[i] as usize],
                );
                (key, i as u32)
            })
            .collect();
        order.sort_unstable();
        let rows = || order.iter().map(|(_, i)| *i as usize);
        let price = |v: &[Option<i64>]| -> ArrayRef {
            Arc::new(
                rows()
                    .map(|i| v[i].map(i128::from))
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(PRICE_PRECISION, PRICE_SCALE)
                    .expect("valid decimal type"),
            )
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![file_id; n])),
            Arc::new(Int32Array::from(vec![part; n])),
            Arc::new(rows().map(|i| self.ts[i]).collect::<Int64Array>()),
            Arc::new(
                rows()
                    .map(|i| match self.typ[i] {
                        0 => None,
                        t => Some(EVENT_TYPES[t as usize - 1]),
                    })
                    .collect::<StringArray>(),
            ),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    rows().map(|i| self.auction[i]),
                    16,
                )
                .expect("16-byte values"),
            ),
            Arc::new(rows().map(|i| self.adv[i]).collect::<Int32Array>()),
            Arc::new(rows().map(|i| self.publ[i]).collect::<Int32Array>()),
            price(&self.bid),
            Arc::new(rows().map(|i| self.user[i]).collect::<Int64Array>()),
            price(&self.total),
            Arc::new(
                rows()
                    .map(|i| match self.country[i] {
                        0 => None,
                        c => Some(self.countries[c as usize - 1].as_str()),
                    })
                    .collect::<StringArray>(),
            ),
            Arc::new(
                rows()
                    .map(|i| self.minute[i].map(|m| m.div_euclid(1440)))
                    .collect::<Date32Array>(),
            ),
            Arc::new(rows().map(|i| self.minute[i]).collect::<Int32Array>()),
        ];
        RecordBatch::try_new(table_schema(), columns).expect("columns match the table schema")
    }
}

/// `parse(text)` for a non-empty field, None (NULL) for an empty one; the outer None
/// means the text is outside the subset.
#[inline]
fn nullable<T>(text: &[u8], parse: impl FnOnce(&[u8]) -> Option<T>) -> Option<Option<T>> {
    if text.is_empty() {
        Some(None)
    } else {
        parse(text).map(Some)
    }
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
    use super::*;

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
        let blank = format!("{HEADER}1,click,,,,,,,US\n\n2,click,,,,,,,US\n");
        let names = split_header(HEADER.trim_end());
        assert!(parse(&names, &blank.as_bytes()[HEADER.len()..], (0, 0), Zone::Utc).is_none());
    }
}
