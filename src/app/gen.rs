//! Deterministic generator of synthetic ad-event CSV files (`rollupd gen`).
//!
//! Each file is a random partition of serve → impression → click → purchase funnels
//! for calendar year 2024; output bytes depend only on (seed, rows_per_file, file index).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// What to generate: `files` files of `rows_per_file` data rows each, from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    pub files: usize,
    pub rows_per_file: usize,
    pub seed: u64,
}

/// What [`generate`] wrote: final file paths (in index order), total data rows and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenReport {
    pub files: Vec<PathBuf>,
    pub rows: u64,
    pub bytes: u64,
}

/// The CSV header line (including its newline).
pub const HEADER: &[u8] =
    b"ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price,country\n";

/// 2024-01-01T00:00:00Z in Unix epoch milliseconds.
const YEAR_START_MS: i64 = 1_704_067_200_000;
/// 2025-01-01T00:00:00Z in Unix epoch milliseconds (exclusive end of 2024).
const YEAR_END_MS: i64 = 1_735_689_600_000;
const HOUR_MS: i64 = 3_600_000;
/// 2024 is a leap year.
const HOURS_IN_YEAR: i64 = 366 * 24;

/// Funnel probabilities as thresholds on a uniform `u32` (p · 2³²).
const P_IMPRESSION: u32 = 1 << 31; // 0.5
const P_CLICK: u32 = 214_748_365; // 0.05
const P_PURCHASE: u32 = 21_474_836; // 0.005

const ADVERTISERS: u32 = 1_650;
const ADVERTISER_BASE: u32 = 1_000;
const PUBLISHERS: u32 = 1_100;
const PUBLISHER_BASE: u32 = 5_000;
const USERS: u64 = 5_000_000;
const USER_BASE: u64 = 1_000_000;

/// Countries with their weights (per mille) and a representative UTC offset in hours.
const COUNTRIES: [(&[u8; 2], u32, i64); 12] = [
    (b"US", 600, -5),
    (b"GB", 80, 0),
    (b"DE", 70, 1),
    (b"FR", 55, 1),
    (b"JP", 45, 9),
    (b"IN", 40, 5),
    (b"BR", 30, -3),
    (b"CA", 25, -5),
    (b"AU", 20, 10),
    (b"ES", 15, 1),
    (b"IT", 12, 1),
    (b"MX", 8, -6),
];

/// Relative activity per local hour of day: quiet nights, busy afternoons and evenings.
const HOUR_WEIGHTS: [u32; 24] = [
    30, 20, 15, 12, 12, 15, 25, 40, 55, 65, 70, 75, 80, 85, 88, 90, 95, 100, 110, 120, 115, 100,
    75, 50,
];

/// Size of the in-memory chunk handed to the writer at a time.
const CHUNK: usize = 64 * 1024;
/// Capacity of the file `BufWriter` used by [`generate`].
const FILE_BUF: usize = 1 << 20;

/// Writes all files into `dir` (created if missing) in parallel and returns what was written.
///
/// Each file goes to `.events-NNN.csv.tmp`, is fsynced, then renamed to `events-NNN.csv`.
pub fn generate(dir: &Path, opts: &GenOptions) -> io::Result<GenReport> {
    fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
    let written = (0..opts.files)
        .into_par_iter()
        .map(|index| write_one(dir, opts, index))
        .collect::<io::Result<Vec<_>>>()?;
    sync_dir(dir);
    let mut report = GenReport {
        files: Vec::with_capacity(written.len()),
        rows: 0,
        bytes: 0,
    };
    for (path, rows, bytes) in written {
        report.files.push(path);
        report.rows += rows;
        report.bytes += bytes;
    }
    Ok(report)
}

/// The bytes of one sample file of `rows` rows from `seed` (the first file `generate`
/// would write with that seed).
pub fn sample_file(rows: usize, seed: u64) -> Vec<u8> {
    let mut text = Vec::new();
    let opts = GenOptions {
        files: 1,
        rows_per_file: rows,
        seed,
    };
    write_file(&mut text, &opts, 0).expect("writing to memory");
    text
}

/// Writes one file's content for file index `index` into `out` (used by generate and by
/// tests that want a single file's bytes). Returns the number of data rows written.
pub fn write_file<W: Write>(out: &mut W, opts: &GenOptions, index: usize) -> io::Result<u64> {
    let tables = Tables::new();
    let mut rng = file_rng(opts.seed, index);
    let target = opts.rows_per_file as u64;
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    buf.extend_from_slice(HEADER);
    let mut rows = 0u64;
    let mut funnel = [Stage::default(); 4];
    while rows < target {
        let auction = Auction::draw(&mut rng, &tables);
        let stages = auction.funnel(&mut rng, &mut funnel);
        for stage in &funnel[..stages] {
            if rows == target {
                break;
            }
            auction.push_row(&mut buf, stage);
            rows += 1;
        }
        if buf.len() >= CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    Ok(rows)
}

/// Name of the final file for `index`.
fn file_name(index: usize) -> String {
    format!("events-{index:03}.csv")
}

fn write_one(dir: &Path, opts: &GenOptions, index: usize) -> io::Result<(PathBuf, u64, u64)> {
    let final_path = dir.join(file_name(index));
    let tmp_path = dir.join(format!(".events-{index:03}.csv.tmp"));
    match write_tmp_then_rename(&tmp_path, &final_path, opts, index) {
        Ok((rows, bytes)) => {
            tracing::debug!(path = %final_path.display(), rows, bytes, "generated file");
            Ok((final_path, rows, bytes))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            Err(with_path(e, &tmp_path))
        }
    }
}

/// Writes file `index` to `tmp_path`, fsyncs it and renames it to `final_path`.
/// Returns (rows, bytes).
fn write_tmp_then_rename(
    tmp_path: &Path,
    final_path: &Path,
    opts: &GenOptions,
    index: usize,
) -> io::Result<(u64, u64)> {
    let file = File::create(tmp_path)?;
    let mut writer = BufWriter::with_capacity(FILE_BUF, file);
    let rows = write_file(&mut writer, opts, index)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    fs::rename(tmp_path, final_path)?;
    Ok((rows, bytes))
}

/// Best-effort fsync of the directory so the renames are durable.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Per-file RNG: a pure function of (seed, index), independent of scheduling.
fn file_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    key[16..24].copy_from_slice(b"rollupd\0");
    ChaCha8Rng::from_seed(key)
}

/// A discrete distribution sampled from a uniform `u32` by binary search over a
/// cumulative table scaled to 2³².
struct Weighted {
    cum: Vec<u64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let weights: Vec<f64> = weights.into_iter().collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cum: Vec<u64> = weights
            .iter()
            .map(|w| {
                acc += w;
                ((acc / total) * 4_294_967_296.0) as u64
            })
            .collect();
        if let Some(last) = cum.last_mut() {
            *last = 1 << 32;
        }
        Weighted { cum }
    }

    #[inline]
    fn sample(&self, u: u32) -> usize {
        self.cum.partition_point(|&c| c <= u64::from(u))
    }
}

struct Tables {
    advertiser: Weighted,
    publisher: Weighted,
    hour: Weighted,
    country: Weighted,
}

impl Tables {
    fn new() -> Self {
        let zipf = |n: u32| Weighted::new((0..n).map(|rank| (f64::from(rank) + 10.0).powf(-1.1)));
        Tables {
            advertiser: zipf(ADVERTISERS),
            publisher: zipf(PUBLISHERS),
            hour: Weighted::new(HOUR_WEIGHTS.iter().map(|&w| f64::from(w))),
            country: Weighted::new(COUNTRIES.iter().map(|&(_, w, _)| f64::from(w))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Serve,
    Impression,
    Click,
    Purchase,
}

impl Kind {
    fn name(self) -> &'static [u8] {
        match self {
            Kind::Serve => b"serve",
            Kind::Impression => b"impression",
            Kind::Click => b"click",
            Kind::Purchase => b"purchase",
        }
    }
}

/// One row of an auction's funnel: its type, time and optional price.
#[derive(Clone, Copy)]
struct Stage {
    kind: Kind,
    ts: i64,
    /// Bid in micro-units (impressions only).
    bid_micros: u64,
    /// Total in cents (purchases only).
    total_cents: u64,
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            kind: Kind::Serve,
            ts: YEAR_START_MS,
            bid_micros: 0,
            total_cents: 0,
        }
    }
}

/// The attributes shared by every row of one auction's funnel.
struct Auction {
    ts: i64,
    auction_id: [u8; 36],
    advertiser_id: u32,
    publisher_id: u32,
    user_id: u64,
    country: &'static [u8; 2],
}

impl Auction {
    fn draw(rng: &mut ChaCha8Rng, t: &Tables) -> Self {
        let user = rng.gen_range(0..USERS);
        // A user's country is a fixed function of the user.
        let country_idx = t.country.sample((splitmix64(user) >> 32) as u32);
        let (country, _, utc_offset) = COUNTRIES[country_idx];
        let day = rng.gen_range(0..366i64);
        let local_hour = t.hour.sample(rng.next_u32()) as i64;
        let hour_of_year = (day * 24 + local_hour - utc_offset).rem_euclid(HOURS_IN_YEAR);
        let ts = YEAR_START_MS + hour_of_year * HOUR_MS + rng.gen_range(0..HOUR_MS);
        let auction_id = uuid_v4(rng.next_u64(), rng.next_u64());
        let advertiser_rank = t.advertiser.sample(rng.next_u32()) as u32;
        let publisher_rank = t.publisher.sample(rng.next_u32()) as u32;
        Auction {
            ts,
            auction_id,
            // Scatter ranks over the id range so popularity is not monotone in the id.
            advertiser_id: ADVERTISER_BASE + advertiser_rank * 977 % ADVERTISERS,
            publisher_id: PUBLISHER_BASE + publisher_rank * 613 % PUBLISHERS,
            user_id: USER_BASE + user,
            country,
        }
    }

    /// Draws the funnel (serve, then maybe impression → click → purchase) into `out`;
    /// returns how many stages were filled.
    fn funnel(&self, rng: &mut ChaCha8Rng, out: &mut [Stage; 4]) -> usize {
        let later = |ts: i64, lo: i64, hi: i64, rng: &mut ChaCha8Rng| {
            (ts + rng.gen_range(lo..=hi)).min(YEAR_END_MS - 1)
        };
        out[0] = Stage {
            kind: Kind::Serve,
            ts: self.ts,
            bid_micros: 0,
            total_cents: 0,
        };
        if rng.next_u32() >= P_IMPRESSION {
            return 1;
        }
        // Bids from 0.000001 to 3.000000, skewed towards small values.
        let bid = rng.gen_range(1..=3_000u64) * rng.gen_range(1..=1_000u64);
        out[1] = Stage {
            kind: Kind::Impression,
            ts: later(self.ts, 1_000, 180_000, rng),
            bid_micros: bid,
            total_cents: 0,
        };
        if rng.next_u32() >= P_CLICK {
            return 2;
        }
        out[2] = Stage {
            kind: Kind::Click,
            ts: later(out[1].ts, 500, 60_000, rng),
            bid_micros: 0,
            total_cents: 0,
        };
        if rng.next_u32() >= P_PURCHASE {
            return 3;
        }
        out[3] = Stage {
            kind: Kind::Purchase,
            ts: later(out[2].ts, 30_000, 3_600_000, rng),
            bid_micros: 0,
            total_cents: rng.gen_range(99..=49_999u64),
        };
        4
    }

    fn push_row(&self, buf: &mut Vec<u8>, stage: &Stage) {
        push_u64(buf, stage.ts as u64);
        buf.push(b',');
        buf.extend_from_slice(stage.kind.name());
        buf.push(b',');
        buf.extend_from_slice(&self.auction_id);
        buf.push(b',');
        push_u64(buf, u64::from(self.advertiser_id));
        buf.push(b',');
        push_u64(buf, u64::from(self.publisher_id));
        buf.push(b',');
        if stage.kind == Kind::Impression {
            push_fixed(buf, stage.bid_micros, 6);
        }
        buf.push(b',');
        push_u64(buf, self.user_id);
        buf.push(b',');
        if stage.kind == Kind::Purchase {
            push_fixed(buf, stage.total_cents, 2);
        }
        buf.push(b',');
        buf.extend_from_slice(self.country);
        buf.push(b'\n');
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lowercase 8-4-4-4-12 text of a version-4, RFC 4122 variant UUID built from 128 random bits.
fn uuid_v4(hi: u64, lo: u64) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut pos = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            pos += 1;
        }
        out[pos] = HEX[usize::from(b >> 4)];
        out[pos + 1] = HEX[usize::from(b & 0x0f)];
        pos += 2;
    }
    out
}

/// Appends the decimal text of `v`.
#[inline]
fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends `v / 10^scale` as exact decimal text with exactly `scale` (1..=9) fraction digits.
#[inline]
fn push_fixed(buf: &mut Vec<u8>, v: u64, scale: u32) {
    let div = 10u64.pow(scale);
    push_u64(buf, v / div);
    buf.push(b'.');
    let mut frac = v % div;
    let mut tmp = [b'0'; 9];
    let n = scale as usize;
    for slot in tmp[..n].iter_mut().rev() {
        *slot = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    buf.extend_from_slice(&tmp[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn opts(seed: u64, rows: usize) -> GenOptions {
        GenOptions {
            files: 1,
            rows_per_file: rows,
            seed,
        }
    }

    fn bytes_of(o: &GenOptions, index: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let rows = write_file(&mut v, o, index).unwrap();
        assert_eq!(rows, o.rows_per_file as u64);
        v
    }

    fn rows_of(data: &[u8]) -> Vec<Vec<String>> {
        let text = std::str::from_utf8(data).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    fn is_decimal(s: &str, scale: usize) -> bool {
        let Some((int, frac)) = s.split_once('.') else {
            return false;
        };
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == scale
            && frac.bytes().all(|b| b.is_ascii_digit())
            && s.bytes().any(|b| (b'1'..=b'9').contains(&b))
    }

    #[test]
    fn deterministic_per_seed_and_index() {
        let a = bytes_of(&opts(7, 5_000), 0);
        assert_eq!(a, bytes_of(&opts(7, 5_000), 0));
        assert_ne!(a, bytes_of(&opts(8, 5_000), 0));
        assert_ne!(a, bytes_of(&opts(7, 5_000), 1));
        // A shorter file is a prefix of a longer one.
        let short = bytes_of(&opts(7, 1_234), 0);
        assert!(a.starts_with(&short));
    }

    #[test]
    fn header_and_field_count() {
        let data = bytes_of(&opts(1, 3_000), 2);
        assert!(data.starts_with(HEADER));
        assert_eq!(
            HEADER,
            b"ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price,country\n"
        );
        assert!(!data.contains(&b'\r'));
        let rows = rows_of(&data);
        assert_eq!(rows.len(), 3_000);
        for r in &rows {
            assert_eq!(r.len(), 9, "{r:?}");
        }
        assert_eq!(bytes_of(&opts(1, 0), 0), HEADER);
    }

    #[test]
    fn field_formats_and_ranges() {
        let data = bytes_of(&opts(3, 50_000), 0);
        let mut total_bytes = 0usize;
        for r in rows_of(&data) {
            total_bytes += r.iter().map(|f| f.len()).sum::<usize>() + 9;
            let ts: i64 = r[0].parse().unwrap();
            assert!((YEAR_START_MS..YEAR_END_MS).contains(&ts), "{ts}");
            let id = r[2].as_bytes();
            assert_eq!(id.len(), 36);
            for (i, &b) in id.iter().enumerate() {
                if matches!(i, 8 | 13 | 18 | 23) {
                    assert_eq!(b, b'-');
                } else {
                    assert!(b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                }
            }
            assert_eq!(id[14], b'4');
            assert!(matches!(id[19], b'8' | b'9' | b'a' | b'b'));
            r[3].parse::<i32>().unwrap();
            r[4].parse::<i32>().unwrap();
            r[6].parse::<i64>().unwrap();
            assert!(COUNTRIES
                .iter()
                .any(|(c, _, _)| c.as_slice() == r[8].as_bytes()));
            match r[1].as_str() {
                "impression" => {
                    assert!(is_decimal(&r[5], 6), "{}", r[5]);
                    assert!(r[7].is_empty());
                }
                "purchase" => {
                    assert!(r[5].is_empty());
                    assert!(is_decimal(&r[7], 2), "{}", r[7]);
                }
                "serve" | "click" => assert!(r[5].is_empty() && r[7].is_empty()),
                other => panic!("unexpected type {other}"),
            }
        }
        let avg = total_bytes as f64 / 50_000.0;
        assert!((70.0..95.0).contains(&avg), "avg row bytes {avg}");
    }

    #[test]
    fn type_mix_and_skew() {
        let n = 200_000;
        let data = bytes_of(&opts(42, n), 0);
        let mut types: HashMap<String, usize> = HashMap::new();
        let mut adv: HashMap<String, usize> = HashMap::new();
        let mut publishers = HashSet::new();
        let mut us = 0usize;
        let mut evening = 0usize;
        let mut night = 0usize;
        for r in rows_of(&data) {
            *types.entry(r[1].clone()).or_default() += 1;
            *adv.entry(r[3].clone()).or_default() += 1;
            publishers.insert(r[4].clone());
            if r[8] == "US" {
                us += 1;
                let ts: i64 = r[0].parse().unwrap();
                let local_hour = ((ts / HOUR_MS) - 5).rem_euclid(24);
                match local_hour {
                    18..=21 => evening += 1,
                    2..=5 => night += 1,
                    _ => {}
                }
            }
        }
        let frac = |t: &str| types.get(t).copied().unwrap_or(0) as f64 / n as f64;
        assert!((0.62..0.69).contains(&frac("serve")), "{types:?}");
        assert!((0.30..0.36).contains(&frac("impression")), "{types:?}");
        assert!((0.010..0.023).contains(&frac("click")), "{types:?}");
        assert!(frac("purchase") < 0.001, "{types:?}");
        assert_eq!(types.values().sum::<usize>(), n);
        let us_frac = us as f64 / n as f64;
        assert!((0.55..0.65).contains(&us_frac), "US {us_frac}");
        assert!(evening > 3 * night, "evening {evening} night {night}");
        assert!(adv.len() > 1_500 && adv.len() <= ADVERTISERS as usize);
        assert!(publishers.len() > 1_000 && publishers.len() <= PUBLISHERS as usize);
        let mut counts: Vec<usize> = adv.values().copied().collect();
        counts.sort_unstable();
        assert!(counts[counts.len() - 1] > 20 * counts[counts.len() / 2]);
    }

    #[test]
    fn funnel_rows_share_auction_attributes() {
        let data = bytes_of(&opts(5, 100_000), 0);
        let mut serves: HashMap<String, Vec<String>> = HashMap::new();
        let mut funnel_rows = 0;
        for r in rows_of(&data) {
            if r[1] == "serve" {
                assert!(serves.insert(r[2].clone(), r.clone()).is_none());
                continue;
            }
            funnel_rows += 1;
            let s = serves.get(&r[2]).expect("funnel row follows its serve");
            for col in [3, 4, 6, 8] {
                assert_eq!(r[col], s[col]);
            }
            let (t, st): (i64, i64) = (r[0].parse().unwrap(), s[0].parse().unwrap());
            assert!(t >= st && t < st + 2 * HOUR_MS);
        }
        assert!(funnel_rows > 25_000);
    }

    #[test]
    fn decimal_formatting() {
        let fmt = |v, s| {
            let mut b = Vec::new();
            push_fixed(&mut b, v, s);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(fmt(1, 6), "0.000001");
        assert_eq!(fmt(3_000_000, 6), "3.000000");
        assert_eq!(fmt(1_234_567, 6), "1.234567");
        assert_eq!(fmt(99, 2), "0.99");
        assert_eq!(fmt(49_999, 2), "499.99");
        let mut b = Vec::new();
        push_u64(&mut b, 0);
        push_u64(&mut b, u64::MAX);
        assert_eq!(b, b"018446744073709551615");
    }

    #[test]
    fn generate_writes_files_atomically() {
        let dir = std::env::temp_dir().join(format!("rollupd-gen-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let o = GenOptions {
            files: 3,
            rows_per_file: 1_000,
            seed: 9,
        };
        let report = generate(&dir.join("nested"), &o).unwrap();
        assert_eq!(report.rows, 3_000);
        let mut bytes = 0;
        for (i, path) in report.files.iter().enumerate() {
            assert_eq!(
                path.file_name().unwrap(),
                format!("events-{i:03}.csv").as_str()
            );
            let content = fs::read(path).unwrap();
            assert_eq!(content, bytes_of(&o, i));
            bytes += content.len() as u64;
        }
        assert_eq!(report.bytes, bytes);
        let names: Vec<_> = fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temp files left: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
