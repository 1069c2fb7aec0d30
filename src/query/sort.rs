//! Ordering an answer's groups by typed sort keys: each order key of a group is one
//! integer, and groups are sorted as plain integers (no comparator to call per compare)
//! by the first key; only groups whose first keys tie are compared further. A limited
//! answer selects its first `k` groups before sorting only those. When most of many
//! groups are taken, they are radix sorted: starting from the groups in their tie order
//! when that is an order of integers (the packed group keys), one stable sort per order
//! key from the last to the first, each a pass per 11 bits of the key cut to 32 bits
//! (then the groups whose cut keys tie by the whole key), so that no two groups are
//! compared as a whole.

use std::cmp::Ordering;

use rayon::prelude::*;

/// Groups from which an answer taking most of them is radix sorted.
const RADIX_GROUPS: usize = 1 << 12;

/// One order key of each group as an integer (NULL is `u128::MAX`).
pub type SortKey<'a> = &'a (dyn Fn(u32) -> u128 + Sync);

/// Groups whose keys are computed, or whose pairs are sorted, on every core.
const PARALLEL_KEYS: usize = 1 << 16;

/// How groups whose sort keys are all equal are put in order.
#[derive(Clone, Copy)]
pub enum Tie<'a> {
    /// By a comparator (a total order of groups).
    By(&'a dyn Fn(u32, u32) -> Ordering),
    /// By one unique integer per group (the packed group keys); `in_order` gives the
    /// groups in that order when that comes cheaper than a sort.
    Keys {
        keys: &'a [u128],
        in_order: &'a dyn Fn() -> Option<Vec<u32>>,
    },
}

impl Tie<'_> {
    fn cmp(&self, a: u32, b: u32) -> Ordering {
        match self {
            Tie::By(f) => f(a, b),
            Tie::Keys { keys, .. } => keys[a as usize].cmp(&keys[b as usize]),
        }
    }
}

/// The first `k` of groups `0..n` in order: by each of `keys` in turn (at least one),
/// then by `tie`.
pub fn top_groups(n: usize, keys: &[SortKey<'_>], k: usize, tie: Tie<'_>) -> Vec<u32> {
    let k = k.min(n);
    let (first, rest) = keys.split_first().expect("an order key");
    if n >= RADIX_GROUPS && k >= n / 2 {
        let mut order = match &tie {
            Tie::Keys { keys, in_order } => in_order().unwrap_or_else(|| {
                let unique: SortKey<'_> = &|g| keys[g as usize];
                radix_order((0..n as u32).collect(), unique)
            }),
            Tie::By(_) => (0..n as u32).collect(),
        };
        for key in keys.iter().rev() {
            order = radix_order(order, *key);
        }
        if let Tie::By(cmp) = tie {
            let same = |a: &u32, b: &u32| keys.iter().all(|key| key(*a) == key(*b));
            for run in order.chunk_by_mut(same) {
                run.sort_unstable_by(|a, b| cmp(*a, *b));
            }
        }
        order.truncate(k);
        return order;
    }
    // Groups whose first keys tie: by the other keys, then `tie`.
    let then = |a: u32, b: u32| {
        (rest.iter())
            .map(|key| key(a).cmp(&key(b)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| tie.cmp(a, b))
    };
    let narrow: Option<Vec<(u64, u32)>> = (0..n as u32)
        .map(|g| match first(g) {
            u128::MAX => Some((u64::MAX, g)),
            wide => u64::try_from(wide)
                .ok()
                .filter(|k| *k < u64::MAX)
                .map(|k| (k, g)),
        })
        .collect();
    match narrow {
        Some(pairs) => top_by_key(pairs, k, &then),
        None => top_by_key((0..n as u32).map(|g| (first(g), g)).collect(), k, &then),
    }
}

/// Bits of a radix sort's digit.
const DIGIT_BITS: u32 = 11;

/// Groups `base` stably sorted by `key`: each group's key is cut to its 32 leading bits
/// above the smallest key and sorted by an LSD radix sort (digits every key shares
/// skipped); groups whose cut keys are equal, when the cut lost bits, are then sorted
/// stably by their whole keys.
fn radix_order(base: Vec<u32>, key: SortKey<'_>) -> Vec<u32> {
    let n = base.len();
    let keys: Vec<u128> = match n >= PARALLEL_KEYS {
        true => base.par_iter().map(|&g| key(g)).collect(),
        false => base.iter().map(|&g| key(g)).collect(),
    };
    let bounds = |(lo, hi): (u128, u128), k: &u128| match *k {
        u128::MAX => (lo, hi),
        k => (lo.min(k), hi.max(k)),
    };
    let none = (u128::MAX, 0);
    let (lo, hi) = match n >= PARALLEL_KEYS {
        true => (keys.par_iter().fold(|| none, bounds))
            .reduce(|| none, |a, b| (a.0.min(b.0), a.1.max(b.1))),
        false => keys.iter().fold(none, bounds),
    };
    // The keys' span with room for NULL after the largest.
    let span = if lo > hi { 1 } else { hi - lo + 1 };
    let shift = (u128::BITS - span.leading_zeros()).saturating_sub(32);
    let cut = |k: u128| match k {
        u128::MAX => (span >> shift) as u64,
        k => ((k - lo) >> shift) as u64,
    };
    let item = |(&g, &k): (&u32, &u128)| cut(k) << 32 | u64::from(g);
    let mut items: Vec<u64> = match n >= PARALLEL_KEYS {
        true => base.par_iter().zip(&keys).map(item).collect(),
        false => base.iter().zip(&keys).map(item).collect(),
    };
    drop(keys);
    let digits = 32u32.div_ceil(DIGIT_BITS) as usize;
    let mask = (1u64 << DIGIT_BITS) - 1;
    let mut counts = vec![[0usize; 1 << DIGIT_BITS]; digits];
    for item in &items {
        for (d, c) in counts.iter_mut().enumerate() {
            c[(item >> (32 + d as u32 * DIGIT_BITS) & mask) as usize] += 1;
        }
    }
    let mut spare = vec![0u64; n];
    for (d, c) in counts.iter_mut().enumerate() {
        if c.contains(&n) {
            continue;
        }
        let mut at = 0;
        for m in c.iter_mut() {
            (*m, at) = (at, at + *m);
        }
        let pos = 32 + d as u32 * DIGIT_BITS;
        for &item in &items {
            let slot = &mut c[(item >> pos & mask) as usize];
            spare[*slot] = item;
            *slot += 1;
        }
        std::mem::swap(&mut items, &mut spare);
    }
    if shift == 0 {
        return items.iter().map(|&i| i as u32).collect();
    }
    // One pass: each run of equal cut keys copied out, then sorted by whole keys.
    let mut order: Vec<u32> = Vec::with_capacity(n);
    for run in items.chunk_by(|a, b| a >> 32 == b >> 32) {
        let start = order.len();
        order.extend(run.iter().map(|&i| i as u32));
        if run.len() > 1 {
            order[start..].sort_by_key(|g| key(*g));
        }
    }
    order
}

/// `top_groups` over first keys of one width, by selecting the first `k` then sorting
/// them; groups whose first keys tie are ordered by `tie`.
fn top_by_key<K: Ord + Copy + Send>(
    mut v: Vec<(K, u32)>,
    k: usize,
    tie: &impl Fn(u32, u32) -> Ordering,
) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    if k < v.len() {
        v.select_nth_unstable_by_key(k - 1, |p| p.0);
        // Of the groups whose key ties the last one taken, the first by `tie` are taken
        // (they may lie past the cut).
        let edge = v[k - 1].0;
        let (mut taken, mut tied): (Vec<_>, Vec<_>) =
            (v.into_iter().filter(|p| p.0 <= edge)).partition(|p| p.0 < edge);
        let room = k - taken.len();
        if room < tied.len() {
            tied.select_nth_unstable_by(room - 1, |a, b| tie(a.1, b.1));
            tied.truncate(room);
        }
        taken.append(&mut tied);
        v = taken;
    }
    // By key alone: ties are put in order below, so comparing groups too is waste.
    match v.len() < PARALLEL_KEYS {
        true => v.sort_unstable_by_key(|p| p.0),
        false => v.par_sort_unstable_by_key(|p| p.0),
    }
    for run in v.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| tie(a.1, b.1));
        }
    }
    v.into_iter().map(|(_, g)| g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// Unique packed keys for `n` groups, in an order unlike the groups' indices, some
    /// of them wider than 64 bits when `wide`.
    fn packed(rng: &mut impl Rng, n: usize, wide: bool) -> Vec<u128> {
        let step = if wide { u128::from(u64::MAX) / 7 } else { 3 };
        let mut keys: Vec<u128> = (0..n as u128).map(|i| i * step + 1).collect();
        keys.shuffle(rng);
        keys
    }

    /// `top_groups` by `keys` (one or two order keys per group) for each `k` equals a
    /// full sort by the keys then the tie, whether the tie is a comparator or the groups'
    /// packed keys (given in order or not).
    fn check(rng: &mut impl Rng, keys: &[Vec<u128>], wide_packed: bool, ks: &[usize]) {
        let n = keys[0].len();
        let packed = packed(rng, n, wide_packed);
        let by_packed = |a: u32, b: u32| packed[a as usize].cmp(&packed[b as usize]);
        // A tie order unlike the groups' indices.
        let by = |a: u32, b: u32| (a % 7, a).cmp(&(b % 7, b));
        let in_packed_order = || {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|a, b| by_packed(*a, *b));
            Some(order)
        };
        // Each tie, and the order it stands for.
        type Cmp<'a> = &'a dyn Fn(u32, u32) -> Ordering;
        let ties: [(Tie, Cmp); 3] = [
            (Tie::By(&by), &by),
            (
                Tie::Keys {
                    keys: &packed,
                    in_order: &|| None,
                },
                &by_packed,
            ),
            (
                Tie::Keys {
                    keys: &packed,
                    in_order: &in_packed_order,
                },
                &by_packed,
            ),
        ];
        let fns: Vec<Box<dyn Fn(u32) -> u128 + Sync + '_>> = (keys.iter())
            .map(|k| Box::new(move |g: u32| k[g as usize]) as Box<dyn Fn(u32) -> u128 + Sync>)
            .collect();
        let fns: Vec<SortKey<'_>> = fns.iter().map(|f| f.as_ref()).collect();
        for (tie, cmp) in ties {
            let mut full: Vec<u32> = (0..n as u32).collect();
            full.sort_by(|a, b| {
                let by_keys = keys.iter().map(|k| k[*a as usize].cmp(&k[*b as usize]));
                by_keys
                    .fold(Ordering::Equal, Ordering::then)
                    .then_with(|| cmp(*a, *b))
            });
            for &k in ks {
                let top = top_groups(n, &fns, k, tie);
                assert_eq!(top, full[..k.min(n)], "n {n} k {k}");
            }
        }
    }

    /// Few groups, any number of them taken, by one or two keys: keys with many ties,
    /// NULLs and wide values.
    #[test]
    fn top_groups_equal_a_full_sort() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for round in 0..200 {
            let n = rng.gen_range(0..300);
            let wide = round % 3 == 0;
            let keys: Vec<u128> = (0..n)
                .map(|_| match rng.gen_range(0..10) {
                    0 => u128::MAX,
                    1 if wide => u128::from(u64::MAX) + rng.gen_range(0..3),
                    _ => rng.gen_range(0..20),
                })
                .collect();
            let second: Vec<u128> = (0..n).map(|_| rng.gen_range(0..3)).collect();
            let ks = [0, 1, n / 3, n / 2 + 1, n, n + 5];
            check(&mut rng, std::slice::from_ref(&keys), wide, &ks);
            check(&mut rng, &[keys, second], wide, &ks);
        }
    }

    /// Many groups, most of them taken, are radix sorted: the same order as a full sort,
    /// by one key or two, whether the keys span more than 32 bits (cut) or 128, take few
    /// values (many ties), are all one value or are NULL.
    #[test]
    fn radix_sorted_keys_order_as_a_full_sort() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let n = RADIX_GROUPS + 1000;
        for spread in [u128::MAX - 1, u128::from(u64::MAX), 1 << 40, 50, 0] {
            let keys: Vec<u128> = (0..n)
                .map(|_| match rng.gen_range(0..20) {
                    0 => u128::MAX,
                    1 => spread,
                    _ => rng.gen_range(0..=spread),
                })
                .collect();
            let second: Vec<u128> = (0..n)
                .map(|_| match rng.gen_range(0..10) {
                    0 => u128::MAX,
                    _ => rng.gen_range(0..=spread.min(5)) << 100,
                })
                .collect();
            for wide in [false, true] {
                check(&mut rng, std::slice::from_ref(&keys), wide, &[n, n / 2 + 1]);
                check(&mut rng, &[keys.clone(), second.clone()], wide, &[n]);
            }
        }
    }
}
