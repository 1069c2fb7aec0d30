//! Counting sorts: rows ordered by a small integer (their bucket) in two passes, with no
//! comparisons, for when the buckets are few next to the rows.

use std::ops::Range;

/// Items grouped by bucket: the items of bucket `b` are `order[first[b]..first[b + 1]]`.
pub struct Buckets<T = u32> {
    /// Where each bucket's items start in `order`, and where the last one ends.
    pub first: Vec<u32>,
    /// The items, by bucket, each bucket's in their first order (the sort is stable).
    pub order: Vec<T>,
}

impl<T: Copy + Default> Buckets<T> {
    /// Sorts `items`, given as (bucket, item) with each bucket below `buckets` (fewer than
    /// 2³² items). They are made twice, once to count them by bucket.
    pub fn sort_items(buckets: usize, items: impl Iterator<Item = (usize, T)> + Clone) -> Self {
        let mut first = vec![0u32; buckets + 1];
        for (b, _) in items.clone() {
            first[b + 1] += 1;
        }
        for b in 0..buckets {
            first[b + 1] += first[b];
        }
        let mut next = first.clone();
        let mut order = vec![T::default(); first[buckets] as usize];
        for (b, item) in items {
            order[next[b] as usize] = item;
            next[b] += 1;
        }
        Buckets { first, order }
    }

    /// The items of bucket `b`.
    pub fn of(&self, b: usize) -> &[T] {
        &self.order[self.first[b] as usize..self.first[b + 1] as usize]
    }
}

impl Buckets<u32> {
    /// Sorts `rows` (below 2³²) by `bucket(row)`, each below `buckets`.
    pub fn sort(rows: Range<usize>, buckets: usize, bucket: impl Fn(usize) -> usize) -> Self {
        Buckets::sort_items(buckets, rows.map(|i| (bucket(i), i as u32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order is a stable sort by bucket, over any range of rows.
    #[test]
    fn sorts_stably_by_bucket() {
        let buckets = [3usize, 0, 3, 1, 0, 2, 3, 1];
        let got = Buckets::sort(2..8, 4, |i| buckets[i]);
        let mut want: Vec<u32> = (2..8).collect();
        want.sort_by_key(|i| buckets[*i as usize]);
        assert_eq!(got.order, want);
        assert_eq!(got.first, [0, 1, 3, 4, 6]);
        assert_eq!(got.of(3), [2, 6]);
        assert!(Buckets::sort(0..0, 2, |_| 0).order.is_empty());
    }
}
