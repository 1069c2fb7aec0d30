//! The store: the registry of folded files (identity, size, content fingerprint, rows)
//! in sled, and each file's partial aggregate for every rollup in a partials file of its
//! own that the registry names.
//!
//! Partials are large, written once and never changed, so they live in plain files
//! (`<id>.g<generation>.rp`: every rollup's encoded partial, one after another) rather
//! than in sled, whose log would hold each of them about twice. An appended tail's
//! partials go to a file of their own, so an append costs the tail: a file's partial is
//! the merge of its files (at most `MAX_PARTS`; the engine then writes one whole again).
//!
//! Failure semantics: `commit` first writes the new partials files (temp, fsync, rename),
//! then applies the whole change set in one sled transaction and flushes it, then
//! removes the files it superseded. After a crash the store holds either the old or the
//! new registry, partials and generation, never a mix; files no registry names (written
//! by a commit that did not land, or superseded by one that did) are removed on open.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::error::{Error, Result};
use crate::rollup::codec;
use crate::rollup::{Countries, RollupRows, RollupSpec};

/// Version of the store's on-disk format: 3 lets a file's partials span several files
/// (its appended tails), 2 kept one partials file per file, 1 kept partials in sled (moved
/// to files on open). Both older versions open as version 3.
pub const STORE_VERSION: u64 = 3;

/// The most partials files one file's partials span.
pub const MAX_PARTS: usize = 8;

/// The first bytes of a partials file.
const PARTIALS_MAGIC: &[u8; 4] = b"RPF1";

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
    /// Appended tails' partials (encoded), each added to its file's as a file of its own.
    pub tails: Vec<(u32, Vec<Vec<u8>>)>,
    /// Files whose record changes but whose content did not (renamed, touched).
    pub moved: Vec<FileRecord>,
    /// Files no longer tracked.
    pub removed: Vec<u32>,
    /// Files whose partials file of this generation [`Store::write_partials`] already
    /// wrote (a layout change writes them one at a time): the registry names it alone.
    pub prewritten: Vec<u32>,
    /// The layout (time zone and rollup specs) the partials are in from this commit on,
    /// when it changes.
    pub layout: Option<(String, Vec<RollupSpec>)>,
}

impl Commit {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.folded.is_empty()
            && self.moved.is_empty()
            && self.removed.is_empty()
            && self.prewritten.is_empty()
            && self.layout.is_none()
    }
}

/// The store of a state folder.
pub struct Store {
    db: sled::Db,
    files: sled::Tree,
    /// File id → the generations of its partials files (8 bytes each, oldest first).
    partial_files: sled::Tree,
    meta: sled::Tree,
    path: PathBuf,
    /// The folder of partials files.
    partials: PathBuf,
    /// The state's country dictionary (kept in `meta`, grown by folds, saved by commits).
    countries: Countries,
    /// How many of its codes `meta` holds.
    countries_kept: AtomicUsize,
}

/// Key of a file's partial in the sled tree of a version 1 store.
fn partial_key(id: u32, spec: usize) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..4].copy_from_slice(&id.to_be_bytes());
    k[4..].copy_from_slice(&(spec as u16).to_be_bytes());
    k
}

impl Store {
    /// Opens (creating) the store: sled at `path`, partials files in `partials`. A
    /// version 1 store has its partials moved to files; another version is refused.
    /// Partials files no registry entry names are removed.
    pub fn open(path: &Path, partials: &Path) -> Result<Store> {
        let store = Store::open_sled(path, partials)?;
        store.check_version()?;
        store.remove_unnamed_partials()?;
        Ok(store)
    }

    /// Opens the store like [`Store::open`]; a store sled cannot open or read (corrupt)
    /// is moved aside to `<path>.corrupt` (replacing an older one) and a new, empty one
    /// is created: the engine then folds every file again. Returns why, if it was.
    pub fn open_or_rebuild(path: &Path, partials: &Path) -> Result<(Store, Option<String>)> {
        let e = match Store::open_sled(path, partials) {
            Ok(store) => {
                store.check_version()?;
                store.remove_unnamed_partials()?;
                return Ok((store, None));
            }
            Err(e) => e,
        };
        let aside = path.with_extension("corrupt");
        tracing::error!(
            "the store cannot be read ({e}); moving it to {}",
            aside.display()
        );
        let _ = fs::remove_dir_all(&aside);
        fs::rename(path, &aside).map_err(|e| Error::io(path, e))?;
        let store = Store::open(path, partials)?;
        let reason = format!(
            "the store could not be read ({e}); it was moved to {} and every file is folded again",
            aside.display()
        );
        Ok((store, Some(reason)))
    }

    /// Opens sled and checks that its registry reads.
    fn open_sled(path: &Path, partials: &Path) -> Result<Store> {
        let err = |e: sled::Error| Error::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let db = open_unlocked(path).map_err(err)?;
        fs::create_dir_all(partials).map_err(|e| Error::io(partials, e))?;
        let store = Store {
            files: db.open_tree("files").map_err(err)?,
            partial_files: db.open_tree("partial_files").map_err(err)?,
            meta: db.open_tree("meta").map_err(err)?,
            db,
            path: path.to_path_buf(),
            partials: partials.to_path_buf(),
            countries: Countries::default(),
            countries_kept: AtomicUsize::new(1),
        };
        let kept: Vec<String> = match store.meta.get("countries").map_err(err)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| store.sled_err(e))?,
            None => Vec::new(),
        };
        let store = Store {
            countries: Countries::from_names(&kept)?,
            countries_kept: AtomicUsize::new(kept.len() + 1),
            ..store
        };
        store.files()?;
        store.partial_generations()?;
        store.generation()?;
        store.next_id()?;
        store.layout()?;
        Ok(store)
    }

    /// Records the format version of a new store, moves a version 1 store's partials to
    /// files, and refuses another version.
    fn check_version(&self) -> Result<()> {
        match self.meta_u64("version")? {
            None => {
                self.meta
                    .insert("version", &STORE_VERSION.to_be_bytes())
                    .map_err(|e| self.sled_err(e))?;
                Ok(())
            }
            Some(1) => self.move_partials_to_files(),
            Some(2) => {
                self.meta
                    .insert("version", &STORE_VERSION.to_be_bytes())
                    .map_err(|e| self.sled_err(e))?;
                self.db.flush().map_err(|e| self.sled_err(e))?;
                Ok(())
            }
            Some(STORE_VERSION) => Ok(()),
            Some(v) => Err(Error::State {
                path: self.path.clone(),
                reason: format!("store version {v} (this build reads {STORE_VERSION})"),
            }),
        }
    }

    /// Files whose partials file is missing or damaged (not whole, or not one partial
    /// per rollup for `rollups` rollups), with why: their partials are lost, so they must
    /// be folded again.
    pub fn damaged_partials(&self, rollups: usize) -> Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for (id, generations) in self.partial_generations()? {
            for g in generations {
                let path = self.partials_path(id, g);
                if let Err(why) = check_partials(&path, rollups) {
                    out.push((id, format!("{}: {why}", path.display())));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Moves a version 1 store's partials (in sled) to partials files, in one commit.
    fn move_partials_to_files(&self) -> Result<()> {
        let old = self
            .db
            .open_tree("partials")
            .map_err(|e| self.sled_err(e))?;
        let generation = self.generation()?;
        let mut named = Vec::new();
        for r in self.files()? {
            let mut parts = Vec::new();
            while let Some(v) = old
                .get(partial_key(r.id, parts.len()))
                .map_err(|e| self.sled_err(e))?
            {
                parts.push(v.to_vec());
            }
            self.write_partials(r.id, generation, &parts)?;
            named.push(r.id);
        }
        crate::storage::manifest::sync_dir(&self.partials)?;
        let res: std::result::Result<(), TransactionError<()>> = (&self.partial_files, &self.meta)
            .transaction(|(files, meta)| {
                for id in &named {
                    files.insert(&id.to_be_bytes(), &generation.to_be_bytes())?;
                }
                meta.insert("version", &STORE_VERSION.to_be_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        res.map_err(|e| self.sled_err(format!("{e:?}")))?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        self.db
            .drop_tree("partials")
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The path of a file's partials file of `generation`.
    fn partials_path(&self, id: u32, generation: u64) -> PathBuf {
        self.partials.join(format!("{id}.g{generation}.rp"))
    }

    /// Writes a file's encoded partials (one per rollup) to its partials file of
    /// `generation` (temp, fsync, rename), for a commit of that generation to name
    /// (`Commit::prewritten`; it fsyncs the folder). A commit that does not land removes
    /// it, and so does the next open.
    pub fn write_partials(&self, id: u32, generation: u64, parts: &[Vec<u8>]) -> Result<()> {
        let path = self.partials_path(id, generation);
        let tmp = path.with_extension("rp.tmp");
        let mut head = PARTIALS_MAGIC.to_vec();
        head.extend((parts.len() as u32).to_le_bytes());
        for p in parts {
            head.extend((p.len() as u64).to_le_bytes());
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            f.write_all(&head)?;
            for p in parts {
                f.write_all(p)?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Removes the partials files of `generation` that `write_partials` wrote for `ids`
    /// when their commit is not made (best effort: open removes what is left).
    pub fn discard_partials(&self, ids: &[u32], generation: u64) {
        for id in ids {
            let path = self.partials_path(*id, generation);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!("removing {}: {e}", path.display())
                }
                _ => {}
            }
        }
    }

    /// Removes partials files (and temp files) that no registry entry names.
    fn remove_unnamed_partials(&self) -> Result<()> {
        let named: std::collections::HashSet<PathBuf> = self
            .partial_generations()?
            .into_iter()
            .flat_map(|(id, gs)| gs.into_iter().map(move |g| (id, g)))
            .map(|(id, g)| self.partials_path(id, g))
            .collect();
        let entries = fs::read_dir(&self.partials).map_err(|e| Error::io(&self.partials, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !named.contains(&path) {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Every file id with the generations of its partials files.
    fn partial_generations(&self) -> Result<Vec<(u32, Vec<u64>)>> {
        self.partial_files
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.sled_err(e))?;
                Ok((be_u32(&k)?, generations(&v)?))
            })
            .collect()
    }

    /// The generations of a file's partials files (none for an unknown file).
    fn partial_generation(&self, id: u32) -> Result<Vec<u64>> {
        let v = self
            .partial_files
            .get(id.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        v.map_or(Ok(Vec::new()), |v| generations(&v))
    }

    /// How many partials files a file's partials span.
    pub fn parts(&self, id: u32) -> Result<usize> {
        Ok(self.partial_generation(id)?.len())
    }

    fn sled_err(&self, e: impl std::fmt::Display) -> Error {
        Error::State {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>> {
        let v = self.meta.get(key).map_err(|e| self.sled_err(e))?;
        v.map(|b| be_u64(&b)).transpose()
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

    /// The state's country dictionary: the codes of the rollups' keys. Codes given since
    /// the last commit are saved by the next one.
    pub fn countries(&self) -> &Countries {
        &self.countries
    }

    /// A file's partial for the spec at index `spec`: the merge of its partials files'.
    pub fn partial(&self, id: u32, spec: usize) -> Result<RollupRows> {
        let generations = self.partial_generation(id)?;
        if generations.is_empty() {
            return Err(self.sled_err(format!("no partials for file {id}")));
        }
        let parts = generations
            .into_iter()
            .map(|g| self.read_partial(id, g, spec))
            .collect::<Result<Vec<_>>>()?;
        Ok(RollupRows::merge_tree(parts))
    }

    /// A file's partial for the spec at index `spec`, encoded (`codec::encode`): the
    /// bytes its partials file holds, or, when its partials span several files, their
    /// merge encoded again.
    pub fn partial_bytes(&self, id: u32, spec: usize) -> Result<Vec<u8>> {
        match self.partial_generation(id)?.as_slice() {
            [generation] => self.read_partial_bytes(id, *generation, spec),
            _ => Ok(codec::encode(&self.partial(id, spec)?, &self.countries)),
        }
    }

    /// The partial for the spec at index `spec` in one partials file.
    fn read_partial(&self, id: u32, generation: u64, spec: usize) -> Result<RollupRows> {
        codec::decode(
            &self.read_partial_bytes(id, generation, spec)?,
            &self.countries,
        )
    }

    /// The encoded partial for the spec at index `spec` in one partials file.
    fn read_partial_bytes(&self, id: u32, generation: u64, spec: usize) -> Result<Vec<u8>> {
        let path = self.partials_path(id, generation);
        let read = || -> std::io::Result<Option<Vec<u8>>> {
            let mut f = File::open(&path)?;
            let mut head = [0u8; 8];
            f.read_exact(&mut head)?;
            let count = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
            if &head[..4] != PARTIALS_MAGIC || spec >= count {
                return Ok(None);
            }
            let mut lens = vec![0u8; count * 8];
            f.read_exact(&mut lens)?;
            let len = |i: usize| u64::from_le_bytes(lens[i * 8..i * 8 + 8].try_into().expect("8"));
            let skip: u64 = (0..spec).map(len).sum();
            f.seek(SeekFrom::Current(skip as i64))?;
            let mut bytes = vec![0u8; len(spec) as usize];
            f.read_exact(&mut bytes)?;
            Ok(Some(bytes))
        };
        read()
            .map_err(|e| Error::io(&path, e))?
            .ok_or_else(|| Error::State {
                path,
                reason: format!("not a partials file, or no partial for rollup {spec}"),
            })
    }

    /// Applies a change set atomically and makes it durable: new partials files first,
    /// then one sled transaction, then the superseded partials files are removed. A
    /// commit that did not land removes the files it wrote.
    pub fn commit(&self, c: &Commit, next_id: u32) -> Result<()> {
        let superseded: Vec<(u32, u64)> = c
            .removed
            .iter()
            .chain(c.folded.iter().filter(|f| !f.1.is_empty()).map(|f| &f.0.id))
            .chain(&c.prewritten)
            .map(|id| {
                let gs = self.partial_generation(*id)?;
                Ok(gs.into_iter().map(|g| (*id, g)).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let written: Vec<u32> = c
            .folded
            .iter()
            .filter(|(_, parts)| !parts.is_empty())
            .map(|(r, _)| r.id)
            .chain(c.tails.iter().map(|(id, _)| *id))
            .chain(c.prewritten.iter().copied())
            .collect();
        let landed = self.write_and_commit(c, next_id);
        let (remove, outcome): (Vec<(u32, u64)>, _) = match landed {
            Ok(()) => (superseded, Ok(())),
            // A failed flush may still have landed; the generation tells.
            Err(e) if self.generation()? == c.generation => (superseded, Err(e)),
            Err(e) => (
                written.iter().map(|id| (*id, c.generation)).collect(),
                Err(e),
            ),
        };
        for (id, g) in remove {
            let path = self.partials_path(id, g);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", path.display());
                }
            }
        }
        outcome
    }

    fn write_and_commit(&self, c: &Commit, next_id: u32) -> Result<()> {
        let whole = c.folded.iter().map(|(r, parts)| (r.id, parts));
        for (id, parts) in whole.chain(c.tails.iter().map(|(id, parts)| (*id, parts))) {
            if !parts.is_empty() {
                self.write_partials(id, c.generation, parts)?;
            }
        }
        crate::storage::manifest::sync_dir(&self.partials)?;
        let names = self.countries.names();
        let countries = (names.len() > self.countries_kept.load(Ordering::SeqCst))
            .then(|| serde_json::to_vec(&names[1..]).expect("names"));
        let res: std::result::Result<(), TransactionError<()>> = (
            &self.files,
            &self.partial_files,
            &self.meta,
        )
            .transaction(|(files, partial_files, meta)| {
                for id in &c.removed {
                    files.remove(&id.to_be_bytes())?;
                    partial_files.remove(&id.to_be_bytes())?;
                }
                for r in &c.moved {
                    files.insert(&r.id.to_be_bytes(), serde_json::to_vec(r).expect("record"))?;
                }
                for (r, parts) in &c.folded {
                    files.insert(&r.id.to_be_bytes(), serde_json::to_vec(r).expect("record"))?;
                    if !parts.is_empty() {
                        partial_files.insert(&r.id.to_be_bytes(), &c.generation.to_be_bytes())?;
                    }
                }
                for (id, _) in &c.tails {
                    let mut gs = partial_files
                        .get(id.to_be_bytes())?
                        .map_or_else(Vec::new, |v| v.to_vec());
                    gs.extend(c.generation.to_be_bytes());
                    partial_files.insert(&id.to_be_bytes(), gs)?;
                }
                for id in &c.prewritten {
                    partial_files.insert(&id.to_be_bytes(), &c.generation.to_be_bytes())?;
                }
                if let Some(layout) = &c.layout {
                    meta.insert("layout", serde_json::to_vec(layout).expect("layout"))?;
                }
                if let Some(countries) = &countries {
                    meta.insert("countries", countries.as_slice())?;
                }
                meta.insert("generation", &c.generation.to_be_bytes())?;
                meta.insert("next_id", &(next_id as u64).to_be_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        res.map_err(|e| self.sled_err(format!("{e:?}")))?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        self.countries_kept.store(names.len(), Ordering::SeqCst);
        Ok(())
    }

    /// Bytes the store takes on disk (sled and the partials files).
    pub fn size_on_disk(&self) -> u64 {
        let files: u64 = fs::read_dir(&self.partials)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        self.db.size_on_disk().unwrap_or(0) + files
    }
}

/// Opens sled at `path`, dropping a snapshot sled had not finished writing when it was
/// stopped (see `drop_unfinished_snapshots`) if sled finds its snapshot corrupt.
fn open_unlocked(path: &Path) -> sled::Result<sled::Db> {
    match open_waiting(path) {
        Err(sled::Error::Corruption { .. }) if drop_unfinished_snapshots(path) > 0 => {
            open_waiting(path)
        }
        other => other,
    }
}

/// Removes the snapshot files sled was still writing (`snap.<lsn>.generating`) in `path`,
/// returning how many. sled writes a snapshot at every open whose log has grown, to that
/// name, then renames it in place and only then removes the snapshot before it; but on
/// open it reads the newest name, `.generating` too, so a process killed between the
/// snapshot's writes leaves a store sled calls corrupt. Without the file, sled opens from
/// the snapshot before it and its log, as after a kill just before the snapshot began.
fn drop_unfinished_snapshots(path: &Path) -> usize {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    let unfinished = entries.flatten().map(|e| e.path()).filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
    });
    let mut dropped = 0;
    for snapshot in unfinished {
        match fs::remove_file(&snapshot) {
            Ok(()) => {
                tracing::warn!(
                    "sled left a snapshot it had not finished: {} removed",
                    snapshot.display()
                );
                dropped += 1;
            }
            Err(e) => tracing::warn!("removing {}: {e}", snapshot.display()),
        }
    }
    dropped
}

/// Opens sled at `path`. sled's lock on its folder can outlive a store dropped in this
/// process for a moment (its background threads let go of it last): a lock held is
/// waited for, up to a second, rather than taken for a damaged store.
fn open_waiting(path: &Path) -> sled::Result<sled::Db> {
    let open = || {
        sled::Config::new()
            .path(path)
            .cache_capacity(64 << 20)
            .open()
    };
    for _ in 0..50 {
        match open() {
            // sled says so only in the error's text.
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    open()
}

/// Checks a partials file's header against its size: magic, `rollups` partials, and
/// exactly the bytes its lengths add up to.
fn check_partials(path: &Path, rollups: usize) -> std::result::Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 8];
    f.read_exact(&mut head)
        .map_err(|_| "shorter than its header")?;
    let count = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    if &head[..4] != PARTIALS_MAGIC || count != rollups {
        return Err(format!("not a partials file of {rollups} rollups"));
    }
    let mut lens = vec![0u8; count * 8];
    f.read_exact(&mut lens)
        .map_err(|_| "shorter than its header")?;
    let body: u64 = lens
        .chunks_exact(8)
        .map(|l| u64::from_le_bytes(l.try_into().expect("8 bytes")))
        .sum();
    if 8 + lens.len() as u64 + body != size {
        return Err(format!(
            "{size} bytes, not the {} its header says",
            8 + lens.len() as u64 + body
        ));
    }
    Ok(())
}

fn be_u64(b: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(b.try_into().map_err(|_| {
        Error::Internal("store: a number of the wrong size".into())
    })?))
}

/// The generations a `partial_files` entry lists.
fn generations(b: &[u8]) -> Result<Vec<u64>> {
    if b.is_empty() || !b.len().is_multiple_of(8) {
        return Err(Error::Internal(
            "store: a list of generations of the wrong size".into(),
        ));
    }
    b.chunks_exact(8).map(be_u64).collect()
}

fn be_u32(b: &[u8]) -> Result<u32> {
    Ok(u32::from_be_bytes(b.try_into().map_err(|_| {
        Error::Internal("store: a key of the wrong size".into())
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::{Agg, Key};

    fn rows(time: i32) -> RollupRows {
        let agg = Agg {
            rows: 2,
            ..Agg::default()
        };
        [(Key::new(time, 0, 0, 0, 0), agg)].into_iter().collect()
    }

    fn record(id: u32) -> FileRecord {
        FileRecord {
            id,
            path: format!("/data/{id}.csv").into(),
            size: 10,
            mtime_ns: 1,
            inode: 1,
            fingerprint: 7,
            rows: 2,
            bad_rows: 0,
            parts: 1,
        }
    }

    fn folded(id: u32, time: i32) -> (FileRecord, Vec<Vec<u8>>) {
        (
            record(id),
            vec![
                codec::encode(&rows(time), &Countries::default()),
                codec::encode(&rows(time + 1), &Countries::default()),
            ],
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Each commit writes the partials it folded to a file of its generation and removes
    /// the files it superseded; files nothing names are removed on open.
    /// Country codes given by folds are saved by the next commit and read back on open,
    /// so a state's codes stay the same across restarts.
    #[test]
    fn the_country_dictionary_is_kept_by_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (db, parts) = (dir.path().join("store"), dir.path().join("partials"));
        {
            let store = Store::open(&db, &parts).unwrap();
            assert_eq!(store.countries().code("JP").unwrap(), 1);
            assert_eq!(store.countries().code("BR").unwrap(), 2);
            let commit = Commit {
                generation: 1,
                ..Commit::default()
            };
            store.commit(&commit, 1).unwrap();
            store.countries().code("NZ").unwrap();
        }
        let store = Store::open(&db, &parts).unwrap();
        assert_eq!(store.countries().names(), ["", "JP", "BR"]);
        assert_eq!(store.countries().code("NZ").unwrap(), 3);
    }

    /// A daemon killed while sled wrote the snapshot it writes on open left a store sled
    /// refused as corrupt, and every file was folded again (a crash-recovery test caught it
    /// about once in 500 kills): the unfinished snapshot is dropped and the store opens
    /// with everything it held.
    #[test]
    fn regression_a_snapshot_sled_did_not_finish_is_dropped_not_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (db, parts) = (dir.path().join("store"), dir.path().join("partials"));
        for generation in 1..=2 {
            let store = Store::open(&db, &parts).unwrap();
            let commit = Commit {
                generation,
                folded: vec![folded(generation as u32, 10 * generation as i32)],
                ..Commit::default()
            };
            store.commit(&commit, 3).unwrap();
        }
        // Cut short after its first bytes, as a kill between its writes leaves it.
        let snapshot = (names(&db).into_iter())
            .find(|n| n.starts_with("snap."))
            .expect("sled wrote a snapshot on the second open");
        let bytes = fs::read(db.join(&snapshot)).unwrap();
        fs::write(
            db.join("snap.FFFFFFFFFFFFFFFF.generating"),
            &bytes[..bytes.len() / 2],
        )
        .unwrap();
        let (store, rebuilt) = Store::open_or_rebuild(&db, &parts).unwrap();
        assert_eq!(rebuilt, None);
        assert_eq!(store.generation().unwrap(), 2);
        assert_eq!(store.partial(2, 0).unwrap(), rows(20));
        assert!(!names(&db).iter().any(|n| n.ends_with(".generating")));
    }

    #[test]
    fn partials_files_follow_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let (db, parts) = (dir.path().join("store"), dir.path().join("partials"));
        let store = Store::open(&db, &parts).unwrap();
        let commit = Commit {
            generation: 1,
            folded: vec![folded(1, 10), folded(2, 20)],
            ..Commit::default()
        };
        store.commit(&commit, 3).unwrap();
        let commit = Commit {
            generation: 2,
            folded: vec![folded(2, 30)],
            removed: vec![1],
            ..Commit::default()
        };
        store.commit(&commit, 3).unwrap();
        assert_eq!(names(&parts), ["2.g2.rp"]);
        assert_eq!(store.partial(2, 0).unwrap(), rows(30));
        assert_eq!(store.partial(2, 1).unwrap(), rows(31));
        assert!(store.partial(2, 2).is_err());
        assert!(store.partial(1, 0).is_err());
        drop(store);
        fs::write(parts.join("9.g5.rp"), b"left by a commit that did not land").unwrap();
        fs::write(parts.join("2.g3.rp.tmp"), b"half written").unwrap();
        let store = Store::open(&db, &parts).unwrap();
        assert_eq!(names(&parts), ["2.g2.rp"]);
        assert_eq!(store.partial(2, 1).unwrap(), rows(31));
    }

    /// An appended tail's partials go to a file of their own; the file's partial is the
    /// merge of its files, and removing the file removes them all.
    #[test]
    fn an_appended_tail_is_a_partials_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (db, parts) = (dir.path().join("store"), dir.path().join("partials"));
        let store = Store::open(&db, &parts).unwrap();
        let commit = Commit {
            generation: 1,
            folded: vec![folded(1, 10)],
            ..Commit::default()
        };
        store.commit(&commit, 2).unwrap();
        let (_, tail) = folded(1, 40);
        let commit = Commit {
            generation: 2,
            folded: vec![(record(1), Vec::new())],
            tails: vec![(1, tail)],
            ..Commit::default()
        };
        store.commit(&commit, 2).unwrap();
        assert_eq!(names(&parts), ["1.g1.rp", "1.g2.rp"]);
        assert_eq!(store.parts(1).unwrap(), 2);
        assert_eq!(store.partial(1, 0).unwrap(), rows(10).merge(&rows(40)));
        assert_eq!(store.partial(1, 1).unwrap(), rows(11).merge(&rows(41)));
        assert!(store.damaged_partials(2).unwrap().is_empty());
        drop(store);
        let store = Store::open(&db, &parts).unwrap();
        assert_eq!(names(&parts), ["1.g1.rp", "1.g2.rp"]);
        let commit = Commit {
            generation: 3,
            removed: vec![1],
            ..Commit::default()
        };
        store.commit(&commit, 2).unwrap();
        assert!(names(&parts).is_empty());
    }

    /// A store written before partials moved to files opens with its partials intact.
    #[test]
    fn a_version_1_store_moves_its_partials_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let (db, parts) = (dir.path().join("store"), dir.path().join("partials"));
        {
            // No background flusher: it could still hold sled's lock on the folder
            // when the store below opens it.
            let sled = sled::Config::new()
                .path(&db)
                .flush_every_ms(None)
                .open()
                .unwrap();
            let (files, old, meta) = (
                sled.open_tree("files").unwrap(),
                sled.open_tree("partials").unwrap(),
                sled.open_tree("meta").unwrap(),
            );
            files
                .insert(4u32.to_be_bytes(), serde_json::to_vec(&record(4)).unwrap())
                .unwrap();
            for s in 0..3 {
                old.insert(
                    partial_key(4, s),
                    codec::encode(&rows(s as i32), &Countries::default()),
                )
                .unwrap();
            }
            meta.insert("version", &1u64.to_be_bytes()).unwrap();
            meta.insert("generation", &6u64.to_be_bytes()).unwrap();
            sled.flush().unwrap();
        }
        let store = Store::open(&db, &parts).unwrap();
        assert_eq!(store.meta_u64("version").unwrap(), Some(STORE_VERSION));
        assert_eq!(names(&parts), ["4.g6.rp"]);
        for s in 0..3 {
            assert_eq!(store.partial(4, s).unwrap(), rows(s as i32));
        }
        assert_eq!(store.files().unwrap(), vec![record(4)]);
    }
}
