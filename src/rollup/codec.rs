//! A compact binary encoding of rollup rows (column by column, deltas as varints, then
//! zstd), used for the per-file partials kept in the store. Each encoded set carries the
//! texts of the countries it uses, so any dictionary reads it.

use crate::error::{Error, Result};
use crate::rollup::{Agg, Countries, Key, Measure, RollupRows};

/// Rows encoded column by column, then zstd: the raw length (u32, little-endian) and a
/// zstd frame.
const MAGIC: &[u8; 4] = b"RPv4";
/// Rows encoded column by column, then LZ4 (stores written before zstd).
const MAGIC_LZ4: &[u8; 4] = b"RPv3";
/// Rows encoded one after another, then LZ4 (stores written before the columnar encoding).
const MAGIC_ROWS: &[u8; 4] = b"RPv2";

/// zstd's level for partials: its fastest, which already takes a quarter off LZ4's size
/// of the varint columns.
const ZSTD_LEVEL: i32 = 1;

/// Writes `v` as a varint: seven bits a byte, low first, the high bit set on all but
/// the last.
#[inline]
fn put_u(out: &mut Vec<u8>, v: u128) {
    match u64::try_from(v) {
        Ok(v) => put_u64(out, v),
        Err(_) => {
            let mut v = v;
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
    }
}

/// `put_u` of a value that fits 64 bits (at most ten bytes), written in place.
#[inline]
fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    out.reserve(10);
    let spare = out.spare_capacity_mut();
    let mut n = 0;
    while v >= 0x80 {
        spare[n].write((v as u8) | 0x80);
        v >>= 7;
        n += 1;
    }
    spare[n].write(v as u8);
    // SAFETY: the `n + 1 <= 10` bytes past the length were just written, within the
    // capacity reserved.
    unsafe { out.set_len(out.len() + n + 1) };
}

/// Writes `v` zigzagged (small magnitudes, either sign, in few bytes) as a varint.
#[inline]
fn put_i(out: &mut Vec<u8>, v: i128) {
    match i64::try_from(v) {
        Ok(v) => put_u64(out, ((v << 1) ^ (v >> 63)) as u64),
        Err(_) => put_u(out, ((v << 1) ^ (v >> 127)) as u128),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u(&mut self) -> Result<u128> {
        let mut v: u128 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.at)
                .ok_or_else(|| Error::Internal("truncated partial".into()))?;
            self.at += 1;
            v |= u128::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 127 {
                return Err(Error::Internal("bad varint in partial".into()));
            }
        }
    }

    fn i(&mut self) -> Result<i128> {
        let u = self.u()?;
        Ok(((u >> 1) as i128) ^ -((u & 1) as i128))
    }
}

fn put_measure(out: &mut Vec<u8>, m: &Measure) {
    put_u(out, m.n.into());
    if m.n == 0 {
        return;
    }
    put_i(out, m.sum);
    if m.n > 1 {
        put_i(out, m.min.into());
        put_i(out, m.max.into());
    }
}

fn get_measure(r: &mut Reader<'_>) -> Result<Measure> {
    let n = r.u()? as u64;
    if n == 0 {
        return Ok(Measure::default());
    }
    let sum = r.i()?;
    let (min, max) = if n > 1 {
        (r.i()? as i64, r.i()? as i64)
    } else {
        (sum as i64, sum as i64)
    };
    Ok(Measure { n, sum, min, max })
}

/// Encodes sorted rollup rows, column by column: the keys' parts as deltas from the
/// row before, the counts, then each price's measures with the gaps between their rows.
/// Countries are written as their text (`countries` has the codes' texts).
pub fn encode(rows: &RollupRows, countries: &Countries) -> Vec<u8> {
    let (keys, counts, measures) = rows.columns();
    let mut out = Vec::with_capacity(rows.len() * 8);
    let local = put_countries(&mut out, keys, countries);
    put_u(&mut out, keys.len() as u128);
    // Each country code's place in this set's dictionary, from 1 (0 is NULL).
    let mut place = vec![0u16; local.last().map_or(1, |c| usize::from(*c) + 1)];
    for (i, c) in local.iter().enumerate() {
        place[usize::from(*c)] = i as u16 + 1;
    }
    put_deltas(&mut out, keys, |k| k.time.into());
    put_deltas(&mut out, keys, |k| k.typ.into());
    put_deltas(&mut out, keys, |k| place[usize::from(k.country)].into());
    put_deltas(&mut out, keys, |k| k.id(false));
    put_deltas(&mut out, keys, |k| k.id(true));
    for c in counts {
        put_u(&mut out, (*c).into());
    }
    for column in measures {
        put_u(&mut out, column.at.len() as u128);
        let mut prev = 0;
        for (j, a) in column.at.iter().enumerate() {
            put_u(&mut out, (a - prev).into());
            prev = *a;
            put_measure(&mut out, &column.get(j));
        }
    }
    let mut framed = MAGIC.to_vec();
    framed.extend((out.len() as u32).to_le_bytes());
    framed.extend(zstd::bulk::compress(&out, ZSTD_LEVEL).expect("zstd compresses any input"));
    framed
}

/// Writes one part of the keys as the differences from the key before.
fn put_deltas(out: &mut Vec<u8>, keys: &[Key], part: impl Fn(&Key) -> i64) {
    let mut prev = 0i64;
    for k in keys {
        let v = part(k);
        match v.checked_sub(prev) {
            Some(d) => put_u64(out, ((d << 1) ^ (d >> 63)) as u64),
            None => put_i(out, i128::from(v) - i128::from(prev)),
        }
        prev = v;
    }
}

/// Writes the country texts `keys` use, in code order; returns their codes.
fn put_countries(out: &mut Vec<u8>, keys: &[Key], countries: &Countries) -> Vec<u16> {
    let mut local: Vec<u16> = keys.iter().map(|k| k.country).filter(|c| *c != 0).collect();
    local.sort_unstable();
    local.dedup();
    put_u(out, local.len() as u128);
    for code in &local {
        let name = countries.name(*code);
        put_u(out, name.len() as u128);
        out.extend_from_slice(name.as_bytes());
    }
    local
}

/// Reads the country texts `put_countries` wrote, as codes of `countries` (index 0 is
/// NULL).
fn get_countries(r: &mut Reader<'_>, countries: &Countries) -> Result<Vec<u16>> {
    let mut codes = vec![0u16];
    for _ in 0..r.u()? {
        let len = r.u()? as usize;
        let text = r
            .buf
            .get(r.at..r.at + len)
            .ok_or_else(|| Error::Internal("truncated partial".into()))?;
        r.at += len;
        codes.push(countries.code(&String::from_utf8_lossy(text))?);
    }
    Ok(codes)
}

/// Decodes rows written by `encode` (or by the row-by-row encoding before it), their
/// countries coded by `countries`.
pub fn decode(bytes: &[u8], countries: &Countries) -> Result<RollupRows> {
    let (columnar, raw) = unframe(bytes)?;
    let mut r = Reader { buf: &raw, at: 0 };
    let codes = get_countries(&mut r, countries)?;
    let n = r.u()? as usize;
    if n > raw.len() {
        return Err(Error::Internal("truncated partial".into()));
    }
    if columnar {
        decode_columns(&mut r, &codes, n)
    } else {
        decode_rows(&mut r, &codes, n)
    }
}

/// The raw encoding inside a partial's frame, and whether it is columnar.
fn unframe(bytes: &[u8]) -> Result<(bool, Vec<u8>)> {
    let bad = |e: &dyn std::fmt::Display| Error::Internal(format!("partial: {e}"));
    let lz4 = |body| lz4_flex::decompress_size_prepended(body).map_err(|e| bad(&e));
    if let Some(body) = bytes.strip_prefix(MAGIC) {
        let (len, frame) = body
            .split_first_chunk::<4>()
            .ok_or_else(|| bad(&"truncated"))?;
        let raw = zstd::bulk::decompress(frame, u32::from_le_bytes(*len) as usize)
            .map_err(|e| bad(&e))?;
        Ok((true, raw))
    } else if let Some(body) = bytes.strip_prefix(MAGIC_LZ4) {
        Ok((true, lz4(body)?))
    } else if let Some(body) = bytes.strip_prefix(MAGIC_ROWS) {
        Ok((false, lz4(body)?))
    } else {
        Err(bad(&"bad magic"))
    }
}

fn decode_columns(r: &mut Reader<'_>, codes: &[u16], n: usize) -> Result<RollupRows> {
    let bad = |what: &str| Error::Internal(format!("partial: bad {what}"));
    let mut keys = vec![Key::default(); n];
    let mut column = |r: &mut Reader<'_>, set: &mut dyn FnMut(&mut Key, i128) -> bool| {
        let mut v = 0;
        for k in keys.iter_mut() {
            v += r.i()?;
            if !set(k, v) {
                return Err(bad("key"));
            }
        }
        Ok(())
    };
    column(r, &mut |k, v| i32::try_from(v).map(|t| k.time = t).is_ok())?;
    column(r, &mut |k, v| u8::try_from(v).map(|t| k.typ = t).is_ok())?;
    column(r, &mut |k, v| {
        let code = usize::try_from(v).ok().and_then(|i| codes.get(i));
        code.map(|c| k.country = *c).is_some()
    })?;
    column(r, &mut |k, v| {
        i64::try_from(v).is_ok_and(|a| k.set_id(false, a))
    })?;
    column(r, &mut |k, v| {
        i64::try_from(v).is_ok_and(|p| k.set_id(true, p))
    })?;
    let counts = (0..keys.len())
        .map(|_| Ok(r.u()? as u64))
        .collect::<Result<Vec<_>>>()?;
    let mut measures = || -> Result<(Vec<u32>, Vec<Measure>)> {
        let m = (r.u()? as usize).min(keys.len());
        let (mut at, mut values) = (Vec::with_capacity(m), Vec::with_capacity(m));
        let mut prev = 0u32;
        for _ in 0..m {
            prev = u32::try_from(u128::from(prev) + r.u()?).map_err(|_| bad("row"))?;
            at.push(prev);
            values.push(get_measure(r)?);
        }
        Ok((at, values))
    };
    let prices = [measures()?, measures()?];
    RollupRows::from_columns(keys, counts, prices).ok_or_else(|| bad("columns"))
}

fn decode_rows(r: &mut Reader<'_>, codes: &[u16], n: usize) -> Result<RollupRows> {
    let mut rows = RollupRows::with_capacity(n);
    let mut prev = Key::default();
    for _ in 0..n {
        let time = (i128::from(prev.time) + r.i()?) as i32;
        let typ = *r
            .buf
            .get(r.at)
            .ok_or_else(|| Error::Internal("truncated partial".into()))?;
        r.at += 1;
        let country = *codes
            .get(r.u()? as usize)
            .ok_or_else(|| Error::Internal("bad country in partial".into()))?;
        let (adv, publ) = (r.i()?, r.i()?);
        let key = i64::try_from(adv)
            .ok()
            .zip(i64::try_from(publ).ok())
            .and_then(|(adv, publ)| Key::try_new(time, typ, country, adv, publ))
            .ok_or_else(|| Error::Internal("bad id in partial".into()))?;
        let agg = Agg {
            rows: r.u()? as u64,
            bid: get_measure(r)?,
            total: get_measure(r)?,
        };
        rows.push(key, &agg);
        prev = key;
    }
    // Rows written under another dictionary may sort differently under this one.
    rows.sort();
    rows.shrink_to_fit();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::{NULL_ID, NULL_TIME};

    #[test]
    fn round_trip() {
        let mut a = Agg {
            rows: 5,
            ..Agg::default()
        };
        a.bid.add(1_234_567_890);
        a.bid.add(-5);
        a.total.add(i64::MAX);
        let countries = Countries::default();
        let (jp, br) = (countries.code("JP").unwrap(), countries.code("BR").unwrap());
        let rows = RollupRows::from_iter([
            (Key::new(-100, 1, jp, 7, NULL_ID), a),
            (
                Key::new(28_000_000, 0, 0, NULL_ID, -1),
                Agg {
                    rows: 1,
                    ..Agg::default()
                },
            ),
            (Key::new(NULL_TIME, 4, br, 0, 0), a),
        ]);
        let encoded = encode(&rows, &countries);
        assert_eq!(decode(&encoded, &countries).unwrap(), rows);
        assert!(decode(b"RPv2xx", &countries).is_err());
        assert!(decode(&encoded[..encoded.len() - 3], &countries).is_err());
        // Another dictionary reads the same rows, in its own codes.
        let other = Countries::from_names(&["BR".into()]).unwrap();
        let read = decode(&encoded, &other).unwrap();
        assert_eq!(read.keys()[0].country, 2, "JP is 2 in the other dictionary");
        assert_eq!(decode(&encode(&read, &other), &countries).unwrap(), rows);
        // Partials written with LZ4, before zstd, still decode.
        let (_, raw) = unframe(&encoded).unwrap();
        let mut lz4 = MAGIC_LZ4.to_vec();
        lz4.extend(lz4_flex::compress_prepend_size(&raw));
        assert_eq!(decode(&lz4, &countries).unwrap(), rows);
    }

    /// Partials stored row by row, before the columnar encoding, still decode.
    #[test]
    fn row_encoded_partials_decode() {
        let mut raw = Vec::new();
        put_u(&mut raw, 1);
        put_u(&mut raw, 2);
        raw.extend_from_slice(b"NZ");
        put_u(&mut raw, 2);
        for (dt, typ, country, adv, rows, bid) in
            [(60, 2u8, 1, 5, 3, Some(7)), (0, 3, 0, -1, 1, None)]
        {
            put_i(&mut raw, dt);
            raw.push(typ);
            put_u(&mut raw, country);
            put_i(&mut raw, adv);
            put_i(&mut raw, 0);
            put_u(&mut raw, rows);
            let mut m = Measure::default();
            if let Some(v) = bid {
                m.add(v);
            }
            put_measure(&mut raw, &m);
            put_measure(&mut raw, &Measure::default());
        }
        let mut bytes = MAGIC_ROWS.to_vec();
        bytes.extend(lz4_flex::compress_prepend_size(&raw));
        let countries = Countries::default();
        let rows = decode(&bytes, &countries).unwrap();
        assert_eq!(rows.len(), 2);
        let (k, a) = rows.iter().next().unwrap();
        assert_eq!(
            (k.time, k.typ, countries.name(k.country), k.adv),
            (60, 2, "NZ".into(), 5)
        );
        assert_eq!((a.rows, a.bid.n, a.bid.min, a.total.n), (3, 1, 7, 0));
    }
}
