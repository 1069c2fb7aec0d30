//! A filter on a price as bounds on its exact decimal. The table keeps prices as
//! `DECIMAL(18, 9)`, a query gives them as floating-point numbers, and DuckDB compares the
//! two as `CAST(price AS DOUBLE)`: row by row, after decoding every value, and never in the
//! scan itself. Each such comparison keeps a run of decimals (the cast is monotone), so it
//! is the same as one between decimal bounds, which DuckDB checks inside the scan, on its
//! zone maps too. Pure: the bounds are found by binary search over the decimals, with the
//! cast DuckDB does (correctly rounded).

use crate::model::schema::{PRICE_SCALE, PRICE_UNIT};
use crate::query::request::{Lit, Op};

/// The largest magnitude of a price, in units of its last digit (18 digits).
const LIMIT: i64 = 999_999_999_999_999_999;

/// The rows a price filter keeps, as decimals in units of the last digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// Every price at or above this.
    AtLeast(i64),
    /// Every price at or below this.
    AtMost(i64),
    /// Every price from the first to the second.
    Between(i64, i64),
    /// No price.
    Nothing,
}

/// The bounds of a filter `op` with these literals on a price, where it has them (`neq`
/// and `in` keep the comparison as it is).
pub fn bounds(op: Op, lits: &[Lit]) -> Option<Bounds> {
    let x = |i: usize| match lits.get(i) {
        Some(Lit::Float(x)) => Some(*x),
        _ => None,
    };
    // The first decimal whose cast is at or above (`>=`) or above (`>`) `x`.
    let at_least = |x: f64| first(|n| as_double(n) >= x);
    let above = |x: f64| first(|n| as_double(n) > x);
    Some(match op {
        Op::Gte => from(at_least(x(0)?)),
        Op::Gt => from(above(x(0)?)),
        Op::Lte => to(above(x(0)?) - 1),
        Op::Lt => to(at_least(x(0)?) - 1),
        Op::Eq => between(at_least(x(0)?), above(x(0)?) - 1),
        Op::Between => between(at_least(x(0)?), above(x(1)?) - 1),
        Op::Neq | Op::In => return None,
    })
}

/// `n` as the text of its decimal, for a `CAST(? AS DECIMAL(18, 9))`.
pub fn decimal_text(n: i64) -> String {
    let unit = 10u64.pow(PRICE_SCALE as u32);
    let sign = if n < 0 { "-" } else { "" };
    let m = n.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        m / unit,
        m % unit,
        width = PRICE_SCALE as usize
    )
}

/// The decimal `n` (units of the last digit) as DuckDB casts it to `DOUBLE`: correctly
/// rounded.
fn as_double(n: i64) -> f64 {
    // Below 2^53 both operands are exact, so the division rounds once, correctly.
    if n.unsigned_abs() < 1 << 53 {
        n as f64 / PRICE_UNIT
    } else {
        format!("{n}e-{PRICE_SCALE}")
            .parse()
            .expect("an integer's text with an exponent")
    }
}

/// The first decimal in `-LIMIT..=LIMIT` where `holds` (false, then true, as decimals
/// grow) holds, or `LIMIT + 1`.
fn first(holds: impl Fn(i64) -> bool) -> i64 {
    let (mut lo, mut hi) = (-LIMIT, LIMIT + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if holds(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

fn from(lo: i64) -> Bounds {
    match lo > LIMIT {
        true => Bounds::Nothing,
        false => Bounds::AtLeast(lo),
    }
}

fn to(hi: i64) -> Bounds {
    match hi < -LIMIT {
        true => Bounds::Nothing,
        false => Bounds::AtMost(hi),
    }
}

fn between(lo: i64, hi: i64) -> Bounds {
    match lo > hi || lo > LIMIT || hi < -LIMIT {
        true => Bounds::Nothing,
        false => Bounds::Between(lo, hi),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Whether `bounds` keep the decimal `n`.
    fn keeps(bounds: Bounds, n: i64) -> bool {
        match bounds {
            Bounds::AtLeast(lo) => n >= lo,
            Bounds::AtMost(hi) => n <= hi,
            Bounds::Between(lo, hi) => (lo..=hi).contains(&n),
            Bounds::Nothing => false,
        }
    }

    /// Whether DuckDB's comparison of the cast keeps the decimal `n`.
    fn compared(op: Op, xs: &[f64], n: i64) -> bool {
        let v = as_double(n);
        match op {
            Op::Gte => v >= xs[0],
            Op::Gt => v > xs[0],
            Op::Lte => v <= xs[0],
            Op::Lt => v < xs[0],
            Op::Eq => v == xs[0],
            Op::Between => v >= xs[0] && v <= xs[1],
            Op::Neq | Op::In => unreachable!(),
        }
    }

    /// The bounds keep exactly the decimals the cast comparison keeps: checked on the
    /// decimals nearest each literal (where rounding decides), across the range, for
    /// literals of many digits, ones a decimal holds exactly, huge and tiny ones.
    #[test]
    fn bounds_keep_what_the_cast_comparison_keeps() {
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let mut xs: Vec<f64> = vec![
            0.0,
            -0.0,
            0.99,
            1.0,
            -1.0,
            0.1,
            1e-9,
            5e-10,
            1.5e-9,
            1e-12,
            123.456789123456,
            999_999_999.999_999_999,
            1e9,
            1e12,
            -1e12,
            9_007_199.254_740_993,
            1e300,
        ];
        for _ in 0..300 {
            let x = match rng.gen_range(0..3) {
                0 => rng.gen_range(-2.0..2.0),
                1 => rng.gen_range(-1e10..1e10),
                _ => rng.gen_range(-1000i64..1000) as f64 / 1000.0,
            };
            xs.push(x);
        }
        let ops = [Op::Gte, Op::Gt, Op::Lte, Op::Lt, Op::Eq, Op::Between];
        for &x in &xs {
            let y = x + rng.gen_range(0.0..1.0);
            for op in ops {
                let pair = [x, y];
                let lits: Vec<Lit> = pair.iter().map(|v| Lit::Float(*v)).collect();
                let b = bounds(op, &lits).unwrap();
                let near = (x * PRICE_UNIT).clamp(-(LIMIT as f64), LIMIT as f64) as i64;
                let far = (y * PRICE_UNIT).clamp(-(LIMIT as f64), LIMIT as f64) as i64;
                let probes = (-3..=3)
                    .flat_map(|d| [near.saturating_add(d), far.saturating_add(d)])
                    .chain([-LIMIT, LIMIT, 0, rng.gen_range(-LIMIT..=LIMIT)])
                    .filter(|n| (-LIMIT..=LIMIT).contains(n));
                for n in probes {
                    assert_eq!(
                        keeps(b, n),
                        compared(op, &pair, n),
                        "{op:?} {pair:?} at {n}: {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn decimals_are_written_with_every_digit() {
        assert_eq!(decimal_text(990_000_000), "0.990000000");
        assert_eq!(decimal_text(-1), "-0.000000001");
        assert_eq!(decimal_text(LIMIT), "999999999.999999999");
        assert_eq!(decimal_text(-LIMIT), "-999999999.999999999");
    }
}
