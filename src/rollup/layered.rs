//! A rollup as a generation holds it: its merged rows, shared with the generations before
//! it, and maybe a layer of rows added since (sorted, much smaller), so that adding a file
//! costs the size of its rows rather than a copy of the whole rollup. Queries read both
//! layers (their sums add up, as any merge of rollup rows does); the layer is merged into
//! new rows once the generation is published, off the path that makes a change
//! queryable.

use std::sync::Arc;

use super::{Key, RollupRows};

/// Rows shared with earlier generations, plus the rows added on top of them since.
#[derive(Debug, Clone, Default)]
pub struct Layered {
    base: Arc<RollupRows>,
    /// Rows added since `base` was merged, sorted; their keys may repeat `base`'s. Never
    /// empty when present.
    added: Option<Arc<RollupRows>>,
}

impl From<Arc<RollupRows>> for Layered {
    fn from(base: Arc<RollupRows>) -> Self {
        Layered { base, added: None }
    }
}

impl From<RollupRows> for Layered {
    fn from(rows: RollupRows) -> Self {
        Layered::from(Arc::new(rows))
    }
}

impl Layered {
    /// The rows laid over this rollup, and `add` on top of them, when that is cheaper than
    /// merging the rollup anew: the layer stays under half the merged rows. None when
    /// the rollup is better merged.
    pub fn with_added(&self, add: &RollupRows) -> Option<Layered> {
        if add.is_empty() {
            return Some(self.clone());
        }
        let layer = match &self.added {
            Some(added) => added.merge(add),
            None => add.clone(),
        };
        (layer.len() <= self.base.len() / 2).then(|| Layered {
            base: self.base.clone(),
            added: Some(Arc::new(layer)),
        })
    }

    /// Whether the rows are one merged set (no layer on top).
    pub fn is_merged(&self) -> bool {
        self.added.is_none()
    }

    /// The layers, merged rows first.
    pub fn parts(&self) -> Vec<&RollupRows> {
        std::iter::once(self.base.as_ref())
            .chain(self.added.as_deref())
            .collect()
    }

    /// The rows as one sorted set: shared when there is no layer, else merged anew.
    pub fn merged(&self) -> Arc<RollupRows> {
        match &self.added {
            None => self.base.clone(),
            Some(added) => Arc::new(self.base.merge(added)),
        }
    }

    /// The rows, to change in place, when no other generation shares them and no layer
    /// lies over them.
    pub fn get_mut(&mut self) -> Option<&mut RollupRows> {
        match self.added {
            None => Arc::get_mut(&mut self.base),
            Some(_) => None,
        }
    }

    /// The rows to change, merged first and copied if shared.
    pub fn make_mut(&mut self) -> &mut RollupRows {
        if !self.is_merged() {
            *self = Layered::from(self.merged());
        }
        Arc::make_mut(&mut self.base)
    }

    /// Whether some layer holds `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.parts().iter().any(|p| p.find(key).is_some())
    }

    /// Rows over the layers: the merged rows' count, an upper bound while a layer lies
    /// over them (its keys may repeat theirs).
    pub fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows whose time lies in `[lo, hi]`, over the layers.
    pub fn rows_in(&self, lo: i32, hi: i32) -> usize {
        self.parts()
            .iter()
            .map(|p| p.time_range(lo, hi).len())
            .sum()
    }

    /// Bytes of memory the layers take.
    pub fn heap_bytes(&self) -> usize {
        self.parts().iter().map(|p| p.heap_bytes()).sum()
    }
}

/// Rollups are equal when their merged rows are, however they are layered.
impl PartialEq for Layered {
    fn eq(&self, other: &Self) -> bool {
        self.merged() == other.merged()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::Agg;

    fn rows(times: impl IntoIterator<Item = i32>) -> RollupRows {
        times
            .into_iter()
            .map(|t| {
                let key = Key {
                    time: t,
                    ..Key::default()
                };
                (
                    key,
                    Agg {
                        rows: 1,
                        ..Agg::default()
                    },
                )
            })
            .collect()
    }

    /// Added rows lie over the shared ones until the layer would reach half of them; the
    /// merged rows are those of a merge either way.
    #[test]
    fn additions_lie_over_shared_rows_until_half() {
        let base = Layered::from(rows(0..10));
        let one = base.with_added(&rows([3, 20])).expect("a small layer");
        assert!(!one.is_merged());
        assert_eq!(one.parts().len(), 2);
        assert!(Arc::ptr_eq(&one.base, &base.base), "the rows are shared");
        assert_eq!(*one.merged(), rows(0..10).merge(&rows([3, 20])));
        assert_eq!(one.len(), 12);
        assert!(one.contains(&rows([20]).keys()[0]));
        let two = one
            .with_added(&rows([21, 22, 23]))
            .expect("five rows of ten");
        assert_eq!(two.rows_in(20, 30), 4);
        assert!(two.with_added(&rows([24])).is_none(), "six rows of ten");
        assert_eq!(two.with_added(&RollupRows::default()), Some(two.clone()));
        let mut merged = two.clone();
        merged.make_mut();
        assert!(merged.is_merged());
        assert_eq!(merged, two);
        assert_eq!(merged.len(), 14);
    }
}
