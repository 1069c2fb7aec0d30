//! Ordering an answer's groups by typed sort keys: each group's first order key as one
//! integer beside its index, sorted as plain pairs (no comparator to call per compare),
//! in 64 bits when the keys fit; only groups whose first keys tie are compared further.
//! A limited answer selects its first `k` groups before sorting only those.

use std::cmp::Ordering;

/// The first `k` groups of `pairs` (each a first sort key and a group) in order: by key,
/// ties by `tie` (a total order of groups). NULL keys are `u128::MAX`.
pub fn top_groups(
    pairs: Vec<(u128, u32)>,
    k: usize,
    tie: impl Fn(u32, u32) -> Ordering,
) -> Vec<u32> {
    let narrow = pairs
        .iter()
        .all(|p| p.0 < u128::from(u64::MAX) || p.0 == u128::MAX);
    if !narrow {
        return top_by_key(pairs, k, tie);
    }
    let narrow = pairs
        .into_iter()
        .map(|(key, g)| (u64::try_from(key).unwrap_or(u64::MAX), g))
        .collect();
    top_by_key(narrow, k, tie)
}

/// `top_groups` over keys of one width.
fn top_by_key<K: Ord + Copy>(
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
    taken.sort_unstable_by_key(|p| p.0);
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
                let top = top_groups(pairs.clone(), k, tie);
                assert_eq!(top, full[..k.min(n)], "n {n} k {k}");
            }
        }
    }
}
