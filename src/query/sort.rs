//! Ordering an answer's groups by typed sort keys: each group's first order key as one
//! integer beside its index, sorted as plain pairs (no comparator to call per compare),
//! in 64 bits when the keys fit; only groups whose first keys tie are compared further.
//! A limited answer selects its first `k` groups before sorting only those. Many pairs
//! are sorted on every core, and when most of them are taken, as single 64-bit integers:
//! the key's leading bits above the group's index (see `by_packed_keys`).

use std::cmp::Ordering;

use rayon::slice::ParallelSliceMut;

/// Pairs from which a sort is shared between threads.
const PARALLEL_PAIRS: usize = 1 << 15;

/// The first `k` of groups `0..n` in order: by their first sort key `key` (NULL keys are
/// `u128::MAX`), ties by `tie` (a total order of groups).
pub fn top_groups(
    n: usize,
    key: impl Fn(u32) -> u128,
    k: usize,
    tie: impl Fn(u32, u32) -> Ordering,
) -> Vec<u32> {
    if n >= PARALLEL_PAIRS && k >= n / 2 {
        if let Some(order) = by_packed_keys(n, &key, &tie) {
            return order[..k.min(n)].to_vec();
        }
    }
    let narrow: Option<Vec<(u64, u32)>> = (0..n as u32)
        .map(|g| match key(g) {
            u128::MAX => Some((u64::MAX, g)),
            wide => u64::try_from(wide)
                .ok()
                .filter(|k| *k < u64::MAX)
                .map(|k| (k, g)),
        })
        .collect();
    match narrow {
        Some(pairs) => top_by_key(pairs, k, tie),
        None => top_by_key((0..n as u32).map(|g| (key(g), g)).collect(), k, tie),
    }
}

/// Groups `0..n` in order (as `top_groups`), sorted as one integer per group: its key's
/// distance from the smallest key, cut to the bits the group's index leaves of 64, above
/// the index. Groups whose cut keys tie are then put in order by their whole keys and
/// `tie`. `None` when a key is wider than 64 bits.
fn by_packed_keys(
    n: usize,
    key: &impl Fn(u32) -> u128,
    tie: &impl Fn(u32, u32) -> Ordering,
) -> Option<Vec<u32>> {
    let (mut lo, mut hi) = (u64::MAX, 0);
    for g in 0..n as u32 {
        match key(g) {
            u128::MAX => {}
            k => {
                let k = u64::try_from(k).ok().filter(|k| *k < u64::MAX)?;
                (lo, hi) = (lo.min(k), hi.max(k));
            }
        }
    }
    // The keys' span with room for NULL after the largest, in the bits left of 64.
    let span = hi.saturating_sub(lo) + 1;
    let index_bits = u64::BITS - (n as u64).leading_zeros();
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(u64::BITS - index_bits);
    let cut = |k: u128| match k {
        u128::MAX => span >> shift,
        k => (k as u64 - lo) >> shift,
    };
    let mut packed: Vec<u64> = (0..n as u32)
        .map(|g| cut(key(g)) << index_bits | u64::from(g))
        .collect();
    packed.par_sort_unstable();
    let mask = (1u64 << index_bits) - 1;
    let mut order: Vec<u32> = packed.iter().map(|p| (p & mask) as u32).collect();
    let mut start = 0;
    for run in packed.chunk_by(|a, b| a >> index_bits == b >> index_bits) {
        if run.len() > 1 {
            let by_key = |a: &u32, b: &u32| key(*a).cmp(&key(*b)).then_with(|| tie(*a, *b));
            order[start..start + run.len()].sort_unstable_by(by_key);
        }
        start += run.len();
    }
    Some(order)
}

/// `top_groups` over keys of one width.
fn top_by_key<K: Ord + Copy + Send>(
    mut v: Vec<(K, u32)>,
    k: usize,
    tie: impl Fn(u32, u32) -> Ordering,
) -> Vec<u32> {
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    let mut end = v.len();
    if k < v.len() / 2 {
        v.select_nth_unstable_by_key(k - 1, |p| p.0);
        // Groups past the cut whose key ties the last one taken may still come first.
        let edge = v[k - 1].0;
        let rest = &mut v[k..];
        let mut tied = 0;
        for i in 0..rest.len() {
            if rest[i].0 == edge {
                rest.swap(i, tied);
                tied += 1;
            }
        }
        end = k + tied;
    }
    // By key alone: ties are put in order below, so comparing groups too is waste.
    let taken = &mut v[..end];
    match taken.len() < PARALLEL_PAIRS {
        true => taken.sort_unstable_by_key(|p| p.0),
        false => taken.par_sort_unstable_by_key(|p| p.0),
    }
    for run in taken.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| tie(a.1, b.1));
        }
    }
    v.truncate(k);
    v.into_iter().map(|(_, g)| g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Equals a full sort by key then tie, for every cut, on keys with many ties, NULLs
    /// and wide values.
    #[test]
    fn top_groups_equal_a_full_sort() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for round in 0..200 {
            let n = rng.gen_range(0..300);
            let wide = round % 3 == 0;
            let pairs: Vec<(u128, u32)> = (0..n as u32)
                .map(|g| {
                    let key = match rng.gen_range(0..10) {
                        0 => u128::MAX,
                        1 if wide => u128::from(u64::MAX) + rng.gen_range(0..3),
                        _ => rng.gen_range(0..20),
                    };
                    (key, g)
                })
                .collect();
            // A tie order unlike the groups' indices.
            let tie = |a: u32, b: u32| (a % 7, a).cmp(&(b % 7, b));
            let mut full = pairs.clone();
            full.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| tie(a.1, b.1)));
            let full: Vec<u32> = full.into_iter().map(|(_, g)| g).collect();
            for k in [0, 1, n / 3, n / 2 + 1, n, n + 5] {
                let top = top_groups(pairs.len(), |g| pairs[g as usize].0, k, tie);
                assert_eq!(top, full[..k.min(n)], "n {n} k {k}");
            }
        }
    }

    /// Many groups, most of them taken, are sorted as packed integers: the same order as
    /// a full sort, whether the keys span all 64 bits (cut), few values (many ties) or
    /// are NULL.
    #[test]
    fn packed_keys_order_as_a_full_sort() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let n = PARALLEL_PAIRS + 1000;
        for spread in [u64::MAX - 1, 1 << 40, 50] {
            let keys: Vec<u128> = (0..n)
                .map(|_| match rng.gen_range(0..20) {
                    0 => u128::MAX,
                    1 => u128::from(spread),
                    _ => u128::from(rng.gen_range(0..=spread)),
                })
                .collect();
            let tie = |a: u32, b: u32| (a % 5, a).cmp(&(b % 5, b));
            let mut full: Vec<u32> = (0..n as u32).collect();
            full.sort_by(|a, b| {
                keys[*a as usize]
                    .cmp(&keys[*b as usize])
                    .then_with(|| tie(*a, *b))
            });
            for k in [n, n / 2 + 1] {
                let top = top_groups(n, |g| keys[g as usize], k, tie);
                assert_eq!(top, full[..k], "spread {spread} k {k}");
            }
        }
    }
}
