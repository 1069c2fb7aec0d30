//! Counting sorts: rows ordered by a small integer (their bucket) in two passes, with no
//! comparisons, for when the buckets are few next to the rows.

use std::ops::Range;

/// Rows grouped by bucket: the rows of bucket `b` are `order[first[b]..first[b + 1]]`.
pub struct Buckets {
    /// Where each bucket's rows start in `order`, and where the last one ends.
    pub first: Vec<u32>,
    /// The rows, by bucket, each bucket's in row order (the sort is stable).
    pub order: Vec<u32>,
}

impl Buckets {
    /// Sorts `rows` (below 2³²) by `bucket(row)`, each below `buckets`.
    pub fn sort(rows: Range<usize>, buckets: usize, bucket: impl Fn(usize) -> usize) -> Buckets {
        let mut first = vec![0u32; buckets + 1];
        for i in rows.clone() {
            first[bucket(i) + 1] += 1;
        }
        for b in 0..buckets {
            first[b + 1] += first[b];
        }
        let mut next = first.clone();
        let mut order = vec![0u32; rows.len()];
        for i in rows {
            let b = bucket(i);
            order[next[b] as usize] = i as u32;
            next[b] += 1;
        }
        Buckets { first, order }
    }

    /// The rows of bucket `b`.
    pub fn of(&self, b: usize) -> &[u32] {
        &self.order[self.first[b] as usize..self.first[b + 1] as usize]
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
