//! A query's `where` compiled against rollup keys: time and id filters become sorted sets
//! of integer ranges (an `in` list is a set of one-value ranges, looked up by binary
//! search), type and country filters become a truth table per code.

use crate::model::schema::{type_name, Column, TimeCol, EVENT_TYPES};
use crate::query::request::{Filter, Lit, Op};
use crate::rollup::{Key, NULL_ID, NULL_TIME};

/// Sorted, disjoint, inclusive ranges of integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<(i64, i64)>);

impl Ranges {
    /// The union of `ranges` (in any order, possibly overlapping or empty).
    fn union(mut ranges: Vec<(i64, i64)>) -> Ranges {
        ranges.retain(|(lo, hi)| lo <= hi);
        ranges.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    /// The values of `within` not in `self`.
    fn complement(&self, within: (i64, i64)) -> Ranges {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut next = within.0;
        for &(lo, hi) in &self.0 {
            if lo > next {
                out.push((next, lo - 1));
            }
            next = next.max(hi.saturating_add(1));
        }
        if next <= within.1 {
            out.push((next, within.1));
        }
        Ranges::union(out)
    }

    #[inline]
    pub fn contains(&self, v: i64) -> bool {
        match self.0.as_slice() {
            [] => false,
            [(lo, hi)] => *lo <= v && v <= *hi,
            r => {
                let i = r.partition_point(|(lo, _)| *lo <= v);
                i > 0 && v <= r[i - 1].1
            }
        }
    }

    /// The ranges matching `op` over `lits`, each literal standing for `[v, v + len - 1]`
    /// (a time bucket of `len` minutes, or one id), within `domain` (the non-NULL values).
    fn of(op: Op, lits: &[i64], len: i64, domain: (i64, i64)) -> Ranges {
        let one = |v: i64| (v, v.saturating_add(len - 1));
        let all = |r: Vec<(i64, i64)>| {
            Ranges::union(
                r.into_iter()
                    .map(|(lo, hi)| (lo.max(domain.0), hi.min(domain.1)))
                    .collect(),
            )
        };
        match op {
            Op::Eq => all(vec![one(lits[0])]),
            Op::Neq => all(vec![one(lits[0])]).complement(domain),
            Op::Lt => all(vec![(domain.0, lits[0].saturating_sub(1))]),
            Op::Lte => all(vec![(domain.0, one(lits[0]).1)]),
            Op::Gt => all(vec![(one(lits[0]).1.saturating_add(1), domain.1)]),
            Op::Gte => all(vec![(lits[0], domain.1)]),
            Op::Between => all(vec![(lits[0], one(lits[1]).1)]),
            Op::In => all(lits.iter().map(|v| one(*v)).collect()),
        }
    }
}

/// One compiled predicate on rollup keys.
#[derive(Debug, Clone, PartialEq)]
enum Pred {
    /// Bucket starts of the key's time (literals are bucket boundaries, so a filter on a
    /// coarser bucket is a range of finer ones).
    Time(Ranges),
    /// Truth per type code (0 = NULL: false).
    Type([bool; 5]),
    /// Truth per country code (codes past the table: false).
    Country(Vec<bool>),
    Adv(Ranges),
    Publ(Ranges),
}

/// The conjunction of a query's filters, on rollup keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyFilter(Vec<Pred>);

impl KeyFilter {
    /// Compiles `filters` (all on rollup columns); `countries` are the country texts by
    /// code.
    pub fn compile(filters: &[Filter], countries: &[String]) -> KeyFilter {
        KeyFilter(
            filters
                .iter()
                .map(|f| Pred::compile(f, countries))
                .collect(),
        )
    }

    #[inline]
    pub fn matches(&self, k: &Key) -> bool {
        self.0.iter().all(|p| p.matches(k))
    }
}

impl Pred {
    fn compile(f: &Filter, countries: &[String]) -> Pred {
        let ints = || -> Vec<i64> {
            f.lits
                .iter()
                .map(|l| match l {
                    Lit::Int(i) => *i,
                    Lit::Time(m) => i64::from(*m),
                    _ => unreachable!("time and id filters carry integers"),
                })
                .collect()
        };
        let ids = (i64::MIN, NULL_ID - 1);
        match f.col {
            Column::Time(t) => Pred::Time(Ranges::of(
                f.op,
                &ints(),
                bucket_len(t),
                (i64::from(i32::MIN), i64::from(NULL_TIME) - 1),
            )),
            Column::Type => {
                let mut table = [false; 5];
                for (i, name) in EVENT_TYPES.iter().enumerate() {
                    table[i + 1] = text_matches(f, name);
                }
                debug_assert_eq!(type_name(1), EVENT_TYPES[0]);
                Pred::Type(table)
            }
            Column::Country => Pred::Country(
                countries
                    .iter()
                    .enumerate()
                    .map(|(code, name)| code != 0 && text_matches(f, name))
                    .collect(),
            ),
            Column::AdvertiserId => Pred::Adv(Ranges::of(f.op, &ints(), 1, ids)),
            Column::PublisherId => Pred::Publ(Ranges::of(f.op, &ints(), 1, ids)),
            c => unreachable!("planner never routes a filter on {c} to a rollup"),
        }
    }

    #[inline]
    fn matches(&self, k: &Key) -> bool {
        match self {
            Pred::Time(r) => r.contains(i64::from(k.time)),
            Pred::Type(table) => table[k.typ as usize],
            Pred::Country(table) => table.get(k.country as usize).copied().unwrap_or(false),
            Pred::Adv(r) => r.contains(k.adv),
            Pred::Publ(r) => r.contains(k.publ),
        }
    }
}

/// Whether non-NULL text `value` passes a filter on a text column.
fn text_matches(f: &Filter, value: &str) -> bool {
    let mut texts: Vec<&str> = f
        .lits
        .iter()
        .filter_map(|l| match l {
            Lit::Text(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    if f.op == Op::In {
        texts.sort_unstable();
    }
    f.op.eval(&value, &texts)
}

/// Length of a time bucket in minutes.
pub fn bucket_len(t: TimeCol) -> i64 {
    match t {
        TimeCol::Minute => 1,
        TimeCol::Hour => 60,
        TimeCol::Day => 1440,
        TimeCol::Week => 7 * 1440,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges agree with evaluating the op on each value's bucket.
    #[test]
    fn ranges_match_bucket_comparisons() {
        let len = 60;
        let dom = (-10_000, 10_000);
        let lits = [-120, 0, 60, 300];
        for op in [
            Op::Eq,
            Op::Neq,
            Op::Lt,
            Op::Lte,
            Op::Gt,
            Op::Gte,
            Op::Between,
            Op::In,
        ] {
            let l: Vec<i64> = match op {
                Op::Between => vec![lits[0], lits[2]],
                Op::In => lits.to_vec(),
                _ => vec![lits[1]],
            };
            let r = Ranges::of(op, &l, len, dom);
            for v in -500i64..500 {
                let b = v - v.rem_euclid(len);
                assert_eq!(r.contains(v), op.eval(&b, &l), "{op:?} {v}");
            }
            assert!(!r.contains(dom.1 + 1));
        }
    }
}
