//! Codes of short texts (country codes, an `ENUM`'s values): a text of two bytes, the
//! usual form of a country code, finds its code in a table indexed by its bytes without
//! hashing; other texts are hashed. Texts are held owned or borrowed (`K`), codes are a
//! small unsigned integer (`C`).

use std::borrow::Borrow;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// An integer type of codes; `NONE` is no code.
pub trait Code: Copy + Eq {
    const NONE: Self;
}

impl Code for u16 {
    const NONE: u16 = u16::MAX;
}

impl Code for u32 {
    const NONE: u32 = u32::MAX;
}

/// Texts and their codes.
pub struct TextCodes<K, C> {
    /// Per two bytes `a`, `b`, at `a << 8 | b`, the code (made at the first such text).
    two_bytes: Vec<C>,
    others: FxHashMap<K, C>,
}

impl<K, C> Default for TextCodes<K, C> {
    fn default() -> Self {
        TextCodes {
            two_bytes: Vec::new(),
            others: FxHashMap::default(),
        }
    }
}

impl<K: Borrow<[u8]> + Hash + Eq, C: Code> TextCodes<K, C> {
    /// The code of `text`, if it has one.
    #[inline]
    pub fn get(&self, text: &[u8]) -> Option<C> {
        match text {
            &[a, b] => (self.two_bytes.get(usize::from(a) << 8 | usize::from(b)))
                .copied()
                .filter(|c| *c != C::NONE),
            _ => self.others.get(text).copied(),
        }
    }

    /// Gives `text` the code `code` (which is not `C::NONE`).
    pub fn insert(&mut self, text: K, code: C) {
        debug_assert!(code != C::NONE, "NONE is no code");
        match *text.borrow() {
            [a, b] => {
                if self.two_bytes.is_empty() {
                    self.two_bytes = vec![C::NONE; 1 << 16];
                }
                self.two_bytes[usize::from(a) << 8 | usize::from(b)] = code;
            }
            _ => _ = self.others.insert(text, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-byte texts and others, owned or borrowed, find the codes they were given, and
    /// only those.
    #[test]
    fn texts_find_their_codes() {
        let texts = ["US", "jp", "O'Neil", "", "Zürich", "\u{e9}"];
        let mut owned: TextCodes<Vec<u8>, u32> = TextCodes::default();
        let mut borrowed: TextCodes<&[u8], u16> = TextCodes::default();
        assert_eq!(owned.get(b"US"), None);
        for (code, t) in texts.iter().enumerate() {
            owned.insert(t.as_bytes().to_vec(), code as u32);
            borrowed.insert(t.as_bytes(), code as u16 + 1);
        }
        for (code, t) in texts.iter().enumerate() {
            assert_eq!(owned.get(t.as_bytes()), Some(code as u32), "{t}");
            assert_eq!(borrowed.get(t.as_bytes()), Some(code as u16 + 1), "{t}");
        }
        for absent in ["UK", "us", "O'Neill", "Z"] {
            assert_eq!(owned.get(absent.as_bytes()), None, "{absent}");
            assert_eq!(borrowed.get(absent.as_bytes()), None, "{absent}");
        }
    }
}
