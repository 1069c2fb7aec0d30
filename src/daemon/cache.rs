//! The answer cache: encoded query answers of the published generation, keyed by the
//! normalized query and the output format.
//!
//! An answer is kept only for the generation that answered it: the first lookup or
//! insert that sees a newer generation empties the cache, and an answer of an older one
//! is never stored, so a cached answer is always the one the published generation gives.
//! The cache holds at most `max_bytes` (the least recently used answers go first) and
//! never an answer over `max_entry_bytes`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::daemon::protocol::{CacheCounts, EncodedAnswer, Format};
use crate::query::Query;

/// Bytes counted for an entry beyond its key and answer (the maps' bookkeeping).
const ENTRY_OVERHEAD: usize = 128;

/// How much the answer cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Bytes of cached answers at most (`answer_cache_bytes`); 0 turns the cache off.
    pub max_bytes: u64,
    /// The largest answer cached (`answer_cache_entry_bytes`).
    pub max_entry_bytes: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
        }
    }
}

/// The key of a query's answer: its normalized form (the validated query, so spelling,
/// key order and defaults do not matter) and the format.
pub fn cache_key(query: &Query, format: Format) -> String {
    format!("{}:{query:?}", format.name())
}

struct Entry {
    answer: EncodedAnswer,
    size: usize,
    /// When it was last used (a tick of the cache), its place in `State::recency`.
    used: u64,
}

#[derive(Default)]
struct State {
    generation: u64,
    entries: HashMap<String, Entry>,
    /// Keys by the tick they were last used, oldest first.
    recency: BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

impl State {
    /// Moves on to `generation` if it is newer, emptying the cache; whether the cache now
    /// holds answers of `generation`.
    fn at(&mut self, generation: u64) -> bool {
        if generation > self.generation {
            self.entries.clear();
            self.recency.clear();
            self.bytes = 0;
            self.generation = generation;
        }
        generation == self.generation
    }

    fn touch(&mut self, key: &str) -> Option<&Entry> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(key)?;
        self.recency.remove(&entry.used);
        entry.used = tick;
        self.recency.insert(tick, key.to_string());
        Some(entry)
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.recency.pop_first() {
            if let Some(e) = self.entries.remove(&key) {
                self.bytes -= e.size;
            }
        }
    }
}

/// Cached answers of the published generation, bounded in bytes; shared by every
/// connection.
pub struct AnswerCache {
    opts: CacheOptions,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl AnswerCache {
    pub fn new(opts: CacheOptions) -> AnswerCache {
        AnswerCache {
            opts,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.opts.max_bytes > 0
    }

    /// The largest answer it keeps (`answer_cache_entry_bytes`).
    pub fn max_entry_bytes(&self) -> u64 {
        self.opts.max_entry_bytes
    }

    /// The answer of `key` cached for `generation` (the published one), if there is one.
    pub fn get(&self, key: &str, generation: u64) -> Option<EncodedAnswer> {
        if !self.enabled() {
            return None;
        }
        let mut state = self.state.lock().expect("cache lock");
        let hit = match state.at(generation) {
            true => state.touch(key).map(|e| e.answer.clone()),
            false => None,
        };
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Keeps `answer` (of its generation) under `key`, unless it is too large or of an
    /// older generation than the cache holds; older answers make room first.
    pub fn put(&self, key: String, answer: &EncodedAnswer) {
        // The key is held twice: by the entry and by its place in the recency order.
        let size = 2 * key.len() + answer.size() + ENTRY_OVERHEAD;
        let fits = |cap: u64| u64::try_from(size).is_ok_and(|s| s <= cap);
        if !self.enabled() || !fits(self.opts.max_entry_bytes) || !fits(self.opts.max_bytes) {
            return;
        }
        let mut state = self.state.lock().expect("cache lock");
        if !state.at(answer.generation) || state.entries.contains_key(&key) {
            return;
        }
        while state.bytes + size > self.opts.max_bytes as usize {
            state.evict_oldest();
        }
        state.tick += 1;
        let used = state.tick;
        state.recency.insert(used, key.clone());
        state.bytes += size;
        let answer = answer.clone();
        state.entries.insert(key, Entry { answer, size, used });
    }

    /// Bytes and answers held now.
    pub fn usage(&self) -> (u64, u64) {
        let state = self.state.lock().expect("cache lock");
        (state.bytes as u64, state.entries.len() as u64)
    }

    /// What `status` reports of the cache.
    pub fn counts(&self) -> CacheCounts {
        let (bytes, answers) = self.usage();
        CacheCounts {
            max_bytes: self.opts.max_bytes,
            bytes,
            answers,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(generation: u64, payload: usize) -> EncodedAnswer {
        EncodedAnswer {
            head: "\"columns\":[]".into(),
            rows: None,
            payload: vec![7; payload],
            source: "duckdb".into(),
            generation,
            count: 1,
        }
    }

    #[test]
    fn keys_are_the_query_as_validated_and_the_format() {
        let key = |text: &str, format| cache_key(&Query::parse_text(text).unwrap(), format);
        let a = key(r#"{"select": [{"count": "*"}], "where": []}"#, Format::Json);
        let b = key(
            r#"{"from":"events","select":[{"COUNT":"*"}]}"#,
            Format::Json,
        );
        assert_eq!(a, b);
        assert_ne!(a, key(r#"{"select":[{"COUNT":"*"}]}"#, Format::Csv));
        assert_ne!(
            a,
            key(r#"{"select":[{"COUNT":"bid_price"}]}"#, Format::Json)
        );
    }

    #[test]
    fn answers_live_for_their_generation_within_the_byte_bound() {
        let cache = AnswerCache::new(CacheOptions {
            max_bytes: 4000,
            max_entry_bytes: 1500,
        });
        cache.put("a".into(), &answer(3, 1000));
        assert!(cache.get("a", 3).is_some());
        cache.put("old".into(), &answer(2, 10));
        assert!(
            cache.get("old", 2).is_none(),
            "an older generation is not kept"
        );
        cache.put("big".into(), &answer(3, 2000));
        assert!(cache.get("big", 3).is_none(), "over the entry cap");
        for k in ["b", "c", "d", "e"] {
            cache.put(k.into(), &answer(3, 1000));
            assert!(cache.usage().0 <= 4000);
        }
        assert!(
            cache.get("a", 3).is_none(),
            "the least recently used went first"
        );
        assert!(cache.get("e", 3).is_some());
        assert!(
            cache.get("e", 4).is_none(),
            "a newer generation empties the cache"
        );
        assert_eq!(cache.usage(), (0, 0));
        cache.put("e".into(), &answer(3, 10));
        assert_eq!(
            cache.usage(),
            (0, 0),
            "nor is a late answer of an older one kept"
        );
    }
}
