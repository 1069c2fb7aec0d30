//! A rollup's rows listed by one id column (advertiser or publisher): for each id, the
//! positions of the rows that hold it.
//!
//! Rows are sorted by time, type and country before the ids, so a filter that keeps a
//! few ids finds its rows by skipping once per prefix (every day and type of a daily
//! rollup by advertiser: ~1,500 seeks, each missing the cache). With this list it reads
//! the few ids' rows straight away.

use std::ops::Range;

use super::{Key, NULL_ID};

/// Row positions grouped by id: the ids ascending, each id's rows ascending. Rows whose
/// id is NULL are not listed (no id filter keeps NULL).
#[derive(Debug, Clone, Default)]
pub struct IdIndex {
    /// The distinct ids, ascending.
    ids: Box<[i64]>,
    /// Where the rows of `ids[i]` start in `rows`, and one past the last id's.
    starts: Box<[u32]>,
    rows: Box<[u32]>,
}

impl IdIndex {
    /// The list of `keys`' advertiser (or publisher) ids: a counting sort by id when
    /// their span is at most a few times the rows (the usual case: three passes over the
    /// keys), a sort of (id, position) pairs otherwise.
    pub fn new(keys: &[Key], publ: bool) -> IdIndex {
        let span = (keys.iter().filter_map(|k| k.id32(publ)))
            .fold(None, |s: Option<(i32, i32)>, v| {
                Some(s.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            });
        let Some((lo, hi)) = span.map(|(lo, hi)| (i64::from(lo), i64::from(hi))) else {
            return IdIndex::default();
        };
        let width = usize::try_from(hi - lo).map_or(usize::MAX, |w| w.saturating_add(1));
        if width <= 4 * keys.len().max(1 << 16) {
            IdIndex::counted(keys, publ, lo, width)
        } else {
            IdIndex::sorted(keys, publ)
        }
    }

    /// A counting sort of the rows by `id - lo` (in `0..width`).
    fn counted(keys: &[Key], publ: bool, lo: i64, width: usize) -> IdIndex {
        let code = |k: &Key| match k.id(publ) {
            NULL_ID => None,
            v => Some((v - lo) as usize),
        };
        let mut at = vec![0u32; width + 1];
        for c in keys.iter().filter_map(code) {
            at[c + 1] += 1;
        }
        let (mut ids, mut starts) = (Vec::new(), Vec::new());
        for c in 0..width {
            if at[c + 1] > 0 {
                ids.push(lo + c as i64);
                starts.push(at[c]);
            }
            at[c + 1] += at[c];
        }
        starts.push(at[width]);
        let mut rows = vec![0u32; at[width] as usize];
        for (i, k) in keys.iter().enumerate() {
            if let Some(c) = code(k) {
                rows[at[c] as usize] = i as u32;
                at[c] += 1;
            }
        }
        IdIndex {
            ids: ids.into(),
            starts: starts.into(),
            rows: rows.into(),
        }
    }

    /// The rows sorted by (id, position), for ids spread too widely to count.
    fn sorted(keys: &[Key], publ: bool) -> IdIndex {
        let mut pairs: Vec<(i64, u32)> = (keys.iter().enumerate())
            .filter_map(|(i, k)| k.id32(publ).map(|v| (i64::from(v), i as u32)))
            .collect();
        pairs.sort_unstable();
        let (mut ids, mut starts) = (Vec::<i64>::new(), Vec::new());
        for (i, (id, _)) in pairs.iter().enumerate() {
            if ids.last() != Some(id) {
                ids.push(*id);
                starts.push(i as u32);
            }
        }
        starts.push(pairs.len() as u32);
        IdIndex {
            ids: ids.into(),
            starts: starts.into(),
            rows: pairs.into_iter().map(|(_, i)| i).collect(),
        }
    }

    /// For each id in `lo..=hi` (ascending), the positions of its rows within `within`
    /// (ascending).
    pub fn rows_in(&self, lo: i64, hi: i64, within: Range<usize>) -> impl Iterator<Item = &[u32]> {
        let first = self.ids.partition_point(|&id| id < lo);
        let last = self.ids.partition_point(|&id| id <= hi);
        (first..last.max(first)).map(move |i| {
            let rows = &self.rows[self.starts[i] as usize..self.starts[i + 1] as usize];
            let a = rows.partition_point(|&r| (r as usize) < within.start);
            let b = rows.partition_point(|&r| (r as usize) < within.end);
            &rows[a..b.max(a)]
        })
    }

    /// Bytes of memory the list takes.
    pub fn heap_bytes(&self) -> usize {
        self.ids.len() * 8 + (self.starts.len() + self.rows.len()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ids: &[Option<i64>]) -> Vec<Key> {
        (ids.iter().enumerate())
            .map(|(i, id)| Key::new(i as i32, 1, 0, id.unwrap_or(NULL_ID), NULL_ID))
            .collect()
    }

    /// Both ways of building list the same rows: every non-NULL id's rows, in order.
    #[test]
    fn lists_each_ids_rows() {
        let ids = [
            Some(7),
            None,
            Some(3),
            Some(7),
            Some(-2),
            Some(3),
            None,
            Some(7),
        ];
        let keys = keys(&ids);
        let want = |lo: i64, hi: i64, within: Range<usize>| -> Vec<Vec<u32>> {
            let mut distinct: Vec<i64> = ids.iter().flatten().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            (distinct.into_iter().filter(|v| lo <= *v && *v <= hi))
                .map(|v| {
                    (within.clone())
                        .filter(|&i| ids[i] == Some(v))
                        .map(|i| i as u32)
                        .collect()
                })
                .collect()
        };
        for index in [
            IdIndex::new(&keys, false),
            IdIndex::counted(&keys, false, -2, 10),
            IdIndex::sorted(&keys, false),
        ] {
            for (lo, hi) in [(i64::MIN, i64::MAX), (3, 3), (4, 6), (-2, 3), (8, 100)] {
                for within in [0..8, 2..4, 3..8, 5..5] {
                    let got: Vec<Vec<u32>> = (index.rows_in(lo, hi, within.clone()))
                        .map(<[u32]>::to_vec)
                        .collect();
                    assert_eq!(got, want(lo, hi, within), "{lo}..={hi}");
                }
            }
        }
        assert_eq!(IdIndex::new(&keys, true).rows_in(0, 9, 0..8).count(), 0);
    }
}
