//! A state's country dictionary: country text ↔ a small code (0 is NULL), the code
//! rollup keys carry. Codes are given in first-seen order and never change or get reused,
//! so keys sorted once stay sorted. The store owns it and keeps it (so a state's codes are
//! the same across restarts); files on disk hold the text, so a partial or a partition
//! reads right under any dictionary.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// A cheap-to-clone handle to one dictionary, shared by the threads that fold, encode and
/// answer.
#[derive(Debug, Clone, Default)]
pub struct Countries(Arc<RwLock<Dictionary>>);

#[derive(Debug)]
struct Dictionary {
    codes: HashMap<String, u16>,
    /// The texts by code; index 0 is NULL's empty placeholder.
    names: Vec<String>,
}

impl Default for Dictionary {
    fn default() -> Self {
        Dictionary {
            codes: HashMap::new(),
            names: vec![String::new()],
        }
    }
}

impl Countries {
    /// A dictionary holding `names` with codes 1, 2, … in that order (as `names` gave them).
    pub fn from_names(names: &[String]) -> Result<Countries> {
        let countries = Countries::default();
        for name in names {
            countries.code(name)?;
        }
        Ok(countries)
    }

    /// The code of country text, added if new.
    pub fn code(&self, name: &str) -> Result<u16> {
        if let Some(c) = self.known(name) {
            return Ok(c);
        }
        let mut d = self.0.write().expect("country lock");
        if let Some(c) = d.codes.get(name) {
            return Ok(*c);
        }
        let code = u16::try_from(d.names.len())
            .map_err(|_| Error::Internal("more than 65535 distinct countries".into()))?;
        d.names.push(name.to_string());
        d.codes.insert(name.to_string(), code);
        Ok(code)
    }

    /// The code of country text if it has one.
    pub fn known(&self, name: &str) -> Option<u16> {
        self.0
            .read()
            .expect("country lock")
            .codes
            .get(name)
            .copied()
    }

    /// The text of a non-NULL code.
    pub fn name(&self, code: u16) -> String {
        self.0.read().expect("country lock").names[code as usize].clone()
    }

    /// Every text by code (index 0 is NULL's empty placeholder).
    pub fn names(&self) -> Vec<String> {
        self.0.read().expect("country lock").names.clone()
    }

    /// How many codes are given (NULL's included).
    pub fn len(&self) -> usize {
        self.0.read().expect("country lock").names.len()
    }

    /// Whether only NULL has a code.
    pub fn is_empty(&self) -> bool {
        self.len() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_given_in_first_seen_order_and_kept() {
        let c = Countries::default();
        assert!(c.is_empty());
        assert_eq!(c.code("JP").unwrap(), 1);
        assert_eq!(c.code("BR").unwrap(), 2);
        assert_eq!(c.code("JP").unwrap(), 1);
        assert_eq!(c.known("US"), None);
        assert_eq!(c.name(2), "BR");
        let again = Countries::from_names(&c.names()[1..]).unwrap();
        assert_eq!(again.names(), c.names());
        assert_eq!(again.len(), 3);
    }
}
