//! The store: the registry of folded files (identity, size, content fingerprint, rows)
//! and each file's partial aggregate for every rollup, in sled.
//!
//! Failure semantics: `commit` applies a whole change set in one sled transaction and
//! flushes it, so after a crash the store holds either the old or the new registry,
//! partials and generation, never a mix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::codec;
use crate::error::{Error, Result};
use crate::rollup::{RollupRows, RollupSpec};

/// Version of the store's on-disk format.
pub const STORE_VERSION: u64 = 1;

/// What the store knows of one folded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The file's id in the table and the store (a rewrite gets a new id).
    pub id: u32,
    pub path: PathBuf,
    /// Bytes folded: a prefix of the file (all of it, unless it grew since).
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    /// xxh3 of the folded bytes: the file's identity, whatever its name.
    pub fingerprint: u64,
    pub rows: u64,
    /// Rows skipped as bad (at most `max_bad_rows`).
    pub bad_rows: u64,
    /// Parts folded: the first fold and each appended tail (table rows carry their part).
    pub parts: u32,
}

/// A change set applied atomically by `commit`.
#[derive(Debug, Default)]
pub struct Commit {
    pub generation: u64,
    /// Files whose record and partials (encoded with `codec::encode`) are (re)written.
    pub folded: Vec<(FileRecord, Vec<Vec<u8>>)>,
    /// Files whose record changes but whose content did not (renamed, touched).
    pub moved: Vec<FileRecord>,
    /// Files no longer tracked.
    pub removed: Vec<u32>,
}

/// The sled store of a state folder.
pub struct Store {
    db: sled::Db,
    files: sled::Tree,
    partials: sled::Tree,
    meta: sled::Tree,
    path: PathBuf,
}

fn partial_key(id: u32, spec: usize) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..4].copy_from_slice(&id.to_be_bytes());
    k[4..].copy_from_slice(&(spec as u16).to_be_bytes());
    k
}

impl Store {
    /// Opens (creating) the store at `path`; refuses a store of another version.
    pub fn open(path: &Path) -> Result<Store> {
        let err = |e: sled::Error| Error::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 << 20)
            .open()
            .map_err(err)?;
        let files = db.open_tree("files").map_err(err)?;
        let partials = db.open_tree("partials").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        let store = Store {
            db,
            files,
            partials,
            meta,
            path: path.to_path_buf(),
        };
        match store.meta_u64("version")? {
            None => {
                store
                    .meta
                    .insert("version", &STORE_VERSION.to_be_bytes())
                    .map_err(err)?;
            }
            Some(STORE_VERSION) => {}
            Some(v) => {
                return Err(Error::State {
                    path: path.to_path_buf(),
                    reason: format!("store version {v} (this build reads {STORE_VERSION})"),
                })
            }
        }
        Ok(store)
    }

    fn sled_err(&self, e: impl std::fmt::Display) -> Error {
        Error::State {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>> {
        let v = self.meta.get(key).map_err(|e| self.sled_err(e))?;
        Ok(v.map(|b| u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8]))))
    }

    /// The generation of the last commit (0 for a new store).
    pub fn generation(&self) -> Result<u64> {
        Ok(self.meta_u64("generation")?.unwrap_or(0))
    }

    /// The next unused file id.
    pub fn next_id(&self) -> Result<u32> {
        Ok(self.meta_u64("next_id")?.unwrap_or(1) as u32)
    }

    /// The rollup specs and time zone the partials were folded with, if recorded.
    pub fn layout(&self) -> Result<Option<(String, Vec<RollupSpec>)>> {
        let Some(v) = self.meta.get("layout").map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| self.sled_err(e))
    }

    /// Records the layout (time zone and specs) of the partials.
    pub fn set_layout(&self, zone: &str, specs: &[RollupSpec]) -> Result<()> {
        let v = serde_json::to_vec(&(zone, specs)).expect("layout serializes");
        self.meta
            .insert("layout", v)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Every tracked file, by id.
    pub fn files(&self) -> Result<Vec<FileRecord>> {
        self.files
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(|e| self.sled_err(e))?;
                serde_json::from_slice(&v).map_err(|e| self.sled_err(e))
            })
            .collect()
    }

    /// A file's partial for the spec at index `spec`.
    pub fn partial(&self, id: u32, spec: usize) -> Result<RollupRows> {
        match self
            .partials
            .get(partial_key(id, spec))
            .map_err(|e| self.sled_err(e))?
        {
            Some(v) => codec::decode(&v),
            None => Err(self.sled_err(format!("no partial for file {id}, rollup {spec}"))),
        }
    }

    /// Applies a change set atomically and makes it durable.
    pub fn commit(&self, c: &Commit, next_id: u32) -> Result<()> {
        let res: std::result::Result<(), TransactionError<()>> =
            (&self.files, &self.partials, &self.meta).transaction(|(files, partials, meta)| {
                for id in &c.removed {
                    files.remove(&id.to_be_bytes())?;
                    for s in 0..u16::MAX as usize {
                        if partials.remove(&partial_key(*id, s))?.is_none() {
                            break;
                        }
                    }
                }
                for r in &c.moved {
                    files.insert(&r.id.to_be_bytes(), serde_json::to_vec(r).expect("record"))?;
                }
                for (r, parts) in &c.folded {
                    files.insert(&r.id.to_be_bytes(), serde_json::to_vec(r).expect("record"))?;
                    for (s, bytes) in parts.iter().enumerate() {
                        partials.insert(&partial_key(r.id, s), bytes.as_slice())?;
                    }
                }
                meta.insert("generation", &c.generation.to_be_bytes())?;
                meta.insert("next_id", &(next_id as u64).to_be_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        res.map_err(|e| self.sled_err(format!("{e:?}")))?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
