//! A compact binary encoding of rollup rows (delta + varint, then LZ4), used for the
//! per-file partials kept in the store. Country codes are process-local, so each encoded
//! set carries its own dictionary of country texts.

use crate::error::{Error, Result};
use crate::rollup::{country_code, country_name, Agg, Key, Measure, RollupRows};

const MAGIC: &[u8; 4] = b"RPv2";

fn put_u(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i128) {
    put_u(out, ((v << 1) ^ (v >> 127)) as u128);
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

/// Encodes sorted rollup rows.
pub fn encode(rows: &RollupRows) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 12);
    let mut local: Vec<u16> = rows
        .keys()
        .iter()
        .map(|k| k.country)
        .filter(|c| *c != 0)
        .collect();
    local.sort_unstable();
    local.dedup();
    put_u(&mut out, local.len() as u128);
    for code in &local {
        let name = country_name(*code);
        put_u(&mut out, name.len() as u128);
        out.extend_from_slice(name.as_bytes());
    }
    put_u(&mut out, rows.len() as u128);
    let mut prev = Key::default();
    for (k, a) in rows.iter() {
        put_i(&mut out, i128::from(k.time) - i128::from(prev.time));
        out.push(k.typ);
        let country = match k.country {
            0 => 0,
            c => local.binary_search(&c).expect("code in dictionary") + 1,
        };
        put_u(&mut out, country as u128);
        put_i(&mut out, k.adv.into());
        put_i(&mut out, k.publ.into());
        put_u(&mut out, a.rows.into());
        put_measure(&mut out, &a.bid);
        put_measure(&mut out, &a.total);
        prev = k;
    }
    let mut framed = MAGIC.to_vec();
    framed.extend(lz4_flex::compress_prepend_size(&out));
    framed
}

/// Decodes rows written by `encode`.
pub fn decode(bytes: &[u8]) -> Result<RollupRows> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| Error::Internal("partial: bad magic".into()))?;
    let raw = lz4_flex::decompress_size_prepended(body)
        .map_err(|e| Error::Internal(format!("partial: {e}")))?;
    let mut r = Reader { buf: &raw, at: 0 };
    let mut codes = vec![0u16];
    for _ in 0..r.u()? {
        let len = r.u()? as usize;
        let text = raw
            .get(r.at..r.at + len)
            .ok_or_else(|| Error::Internal("truncated partial".into()))?;
        r.at += len;
        codes.push(country_code(&String::from_utf8_lossy(text))?);
    }
    let n = r.u()? as usize;
    let mut rows = RollupRows::with_capacity(n);
    let mut prev = Key::default();
    for _ in 0..n {
        let time = (i128::from(prev.time) + r.i()?) as i32;
        let typ = *raw
            .get(r.at)
            .ok_or_else(|| Error::Internal("truncated partial".into()))?;
        r.at += 1;
        let key = Key {
            time,
            typ,
            country: *codes
                .get(r.u()? as usize)
                .ok_or_else(|| Error::Internal("bad country in partial".into()))?,
            adv: r.i()? as i64,
            publ: r.i()? as i64,
        };
        let agg = Agg {
            rows: r.u()? as u64,
            bid: get_measure(&mut r)?,
            total: get_measure(&mut r)?,
        };
        rows.push(key, &agg);
        prev = key;
    }
    // Country codes are given out per process: rows written by another one may sort
    // differently here.
    rows.sort();
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
        let (jp, br) = (country_code("JP").unwrap(), country_code("BR").unwrap());
        let rows = RollupRows::from_iter([
            (
                Key {
                    time: -100,
                    typ: 1,
                    country: jp,
                    adv: 7,
                    publ: NULL_ID,
                },
                a,
            ),
            (
                Key {
                    time: 28_000_000,
                    typ: 0,
                    country: 0,
                    adv: NULL_ID,
                    publ: -1,
                },
                Agg {
                    rows: 1,
                    ..Agg::default()
                },
            ),
            (
                Key {
                    time: NULL_TIME,
                    typ: 4,
                    country: br,
                    adv: 0,
                    publ: 0,
                },
                a,
            ),
        ]);
        assert_eq!(decode(&encode(&rows)).unwrap(), rows);
        assert!(decode(b"RPv2xx").is_err());
    }
}
