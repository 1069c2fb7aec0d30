//! Rollup files on disk: each rollup is a set of Arrow IPC (zstd) partitions by month,
//! plus the deltas written since, listed in a manifest that carries the generation. A
//! change that only adds rows (new files, appends) writes a delta, what it added to the
//! keys it touched, instead of every partition it touches: a key may then have a row in
//! a partition and in deltas, which combine as rollup rows do (counts and sums add,
//! minima and maxima take the smaller and larger), so any reader aggregating the files
//! by key gets the rollup. Once a rollup's deltas add up to an eighth of its rows, or a
//! change takes rows away, its partitions are written again and the deltas dropped. Every
//! file is written to a temp name, fsynced and renamed; a new generation becomes visible
//! only when the manifest is replaced, so a reader never sees half a change.

use std::fs::{self, File};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampSecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampSecondType,
};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::CompressionType;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::schema::{type_code, type_name, TimeCol, PRICE_PRECISION, PRICE_SCALE};
use crate::rollup::{
    Agg, Countries, Dim, Key, Measure, RollupRows, RollupSpec, NULL_ID, NULL_TIME,
};

/// Version of the manifest format: 2 added deltas (a version 1 manifest reads as one
/// without any).
pub const MANIFEST_VERSION: u32 = 2;
/// The most deltas a rollup carries before its partitions are written again.
const MAX_DELTAS: usize = 16;
/// Delta rows a rollup may carry: an eighth of its rows, or this many if that is more.
const MIN_DELTA_ROWS: u64 = 4096;
const MANIFEST: &str = "manifest.json";
const ROLLUP_DIR: &str = "rollups";

/// The published state of the rollups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub generation: u64,
    /// The time zone the rollups were folded in.
    pub zone: String,
    pub rollups: Vec<RollupEntry>,
}

/// One rollup in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RollupEntry {
    pub name: String,
    pub spec: RollupSpec,
    pub rows: u64,
    pub bytes: u64,
    pub partitions: Vec<PartitionEntry>,
    /// What was added since the partitions were written, oldest first: each holds, for
    /// the keys a generation added to, the counts and sums it added and the new extremes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<PartitionEntry>,
}

impl RollupEntry {
    /// Every file of the rollup: partitions, then deltas.
    pub fn files(&self) -> impl Iterator<Item = &PartitionEntry> {
        self.partitions.iter().chain(&self.deltas)
    }
}

/// One partition file of a rollup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionEntry {
    /// `YYYY-MM` for time rollups, `all` for all-time ones, `null` for NULL times.
    pub key: String,
    /// Path relative to the state folder.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
}

impl Manifest {
    /// Reads the manifest of a state folder; None when there is none yet.
    pub fn load(state: &Path) -> Result<Option<Manifest>> {
        let path = state.join(MANIFEST);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !(1..=MANIFEST_VERSION).contains(&m.version) {
            return Err(Error::State {
                path,
                reason: format!(
                    "manifest version {} (this build reads {MANIFEST_VERSION})",
                    m.version
                ),
            });
        }
        Ok(Some(m))
    }

    /// Publishes this manifest atomically, then removes rollup files it no longer lists.
    pub fn publish(&self, state: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("manifest serializes");
        write_atomic(&state.join(MANIFEST), &text)?;
        self.remove_unlisted(state)
    }

    fn remove_unlisted(&self, state: &Path) -> Result<()> {
        let listed: std::collections::HashSet<PathBuf> = self
            .rollups
            .iter()
            .flat_map(|r| r.files().map(|p| state.join(&p.file)))
            .collect();
        let root = state.join(ROLLUP_DIR);
        let Ok(dirs) = fs::read_dir(&root) else {
            return Ok(());
        };
        for dir in dirs.flatten() {
            let Ok(files) = fs::read_dir(dir.path()) else {
                continue;
            };
            let mut empty = true;
            for f in files.flatten() {
                if listed.contains(&f.path()) {
                    empty = false;
                } else {
                    fs::remove_file(f.path()).map_err(|e| Error::io(f.path(), e))?;
                }
            }
            if empty {
                let _ = fs::remove_dir(dir.path());
            }
        }
        Ok(())
    }

    /// Total bytes of all rollup files.
    pub fn bytes(&self) -> u64 {
        self.rollups.iter().map(|r| r.bytes).sum()
    }
}

/// Writes `data` to `path` via a temp file, fsync and rename, then fsyncs the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(data).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs a folder so renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The partition key of a bucket time under `grain`, and the first time after it.
fn partition_of(grain: Option<TimeCol>, time: i32) -> (String, i32) {
    match grain {
        None => ("all".into(), i32::MAX),
        Some(_) if time == NULL_TIME => ("null".into(), i32::MAX),
        Some(_) => {
            let text = TimeCol::Day.format(time);
            let (y, m): (i32, u32) = (
                text[..4].parse().unwrap_or(0),
                text[5..7].parse().unwrap_or(1),
            );
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(i32::MAX, |d| {
                    (d.and_utc().timestamp() / 60).min(i32::MAX as i64) as i32
                });
            (text[..7].to_string(), next)
        }
    }
}

/// Writes a rollup's files for `generation` and returns its manifest entry. Given
/// `previous` (the rollup's last entry and the rows it holds), what was added since goes
/// to a delta when nothing was taken away and the rollup's deltas stay small; otherwise
/// the partitions are written, those whose rows equal the previous entry's kept.
/// Countries are written as the text `countries` gives their codes.
pub fn write_rollup(
    state: &Path,
    (spec, rows): (&RollupSpec, &RollupRows),
    generation: u64,
    previous: Option<(&RollupEntry, &RollupRows)>,
    countries: &Countries,
) -> Result<RollupEntry> {
    let dir = rollup_dir(state, &spec.name());
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if let Some((entry, old)) = previous {
        if std::ptr::eq(old, rows) {
            return Ok(entry.clone());
        }
        if let Some(changes) = delta_of(entry, old, rows) {
            let total = rows.len() as u64;
            return write_delta(state, (spec, &changes), entry, total, generation, countries);
        }
    }
    // Partitions under deltas differ from the rows they add up to: all are written.
    let previous = previous.filter(|(entry, _)| entry.deltas.is_empty());
    write_partitions(state, (spec, rows), generation, previous, countries)
}

/// The folder of rollup `name`'s files.
fn rollup_dir(state: &Path, name: &str) -> PathBuf {
    state.join(ROLLUP_DIR).join(name)
}

/// The rows added since `entry` was written from `old`, when they can go to a delta:
/// nothing was taken away, and the rollup's deltas stay few and small beside `rows`.
fn delta_of(entry: &RollupEntry, old: &RollupRows, rows: &RollupRows) -> Option<RollupRows> {
    old.additions_to(rows).filter(|added| {
        let carried: u64 = entry.deltas.iter().map(|d| d.rows).sum::<u64>() + added.len() as u64;
        entry.deltas.len() < MAX_DELTAS && carried <= (rows.len() as u64 / 8).max(MIN_DELTA_ROWS)
    })
}

/// `entry` with the delta `changes` (of `generation`) written beside its files, for a
/// rollup of `total` rows.
fn write_delta(
    state: &Path,
    (spec, changes): (&RollupSpec, &RollupRows),
    entry: &RollupEntry,
    total: u64,
    generation: u64,
    countries: &Countries,
) -> Result<RollupEntry> {
    if changes.is_empty() {
        return Ok(entry.clone());
    }
    let name = spec.name();
    let file = format!("{ROLLUP_DIR}/{name}/delta.g{generation}.arrow");
    let all = 0..changes.len();
    let bytes = write_ipc(&state.join(&file), (spec, changes), all, countries)?;
    sync_dir(&rollup_dir(state, &name))?;
    let mut entry = entry.clone();
    entry.deltas.push(PartitionEntry {
        key: "delta".into(),
        file,
        rows: changes.len() as u64,
        bytes,
    });
    entry.rows = total;
    entry.bytes = entry.files().map(|p| p.bytes).sum();
    Ok(entry)
}

/// Writes the partitions of `rows` for `generation`, keeping those whose rows equal
/// the same partition's in `previous` (an entry without deltas and its rows); each
/// partition that changed is written on a thread of its own (the largest rollup would
/// otherwise keep one thread busy long after the others are done).
fn write_partitions(
    state: &Path,
    (spec, rows): (&RollupSpec, &RollupRows),
    generation: u64,
    previous: Option<(&RollupEntry, &RollupRows)>,
    countries: &Countries,
) -> Result<RollupEntry> {
    let name = spec.name();
    type Previous<'a> = std::collections::HashMap<String, (&'a PartitionEntry, Range<usize>)>;
    let old: Previous = previous
        .map(|(entry, old_rows)| {
            let slices = partitions(spec, old_rows);
            entry
                .partitions
                .iter()
                .filter_map(|p| {
                    slices
                        .iter()
                        .find(|(k, _)| *k == p.key)
                        .map(|(_, r)| (p.key.clone(), (p, r.clone())))
                })
                .collect()
        })
        .unwrap_or_default();
    let old_rows = previous.map(|(_, rows)| rows);
    let written = partitions(spec, rows)
        .into_par_iter()
        .map(|(key, part)| {
            if let (Some((p, old_part)), Some(old_rows)) = (old.get(&key), old_rows) {
                if rows.range_eq(part.clone(), old_rows, old_part.clone()) {
                    return Ok(((*p).clone(), false));
                }
            }
            let file = format!("{ROLLUP_DIR}/{name}/{key}.g{generation}.arrow");
            let bytes = write_ipc(&state.join(&file), (spec, rows), part.clone(), countries)?;
            let entry = PartitionEntry {
                key,
                file,
                rows: part.len() as u64,
                bytes,
            };
            Ok((entry, true))
        })
        .collect::<Result<Vec<_>>>()?;
    if written.iter().any(|(_, wrote)| *wrote) {
        sync_dir(&rollup_dir(state, &name))?;
    }
    let entries: Vec<PartitionEntry> = written.into_iter().map(|(entry, _)| entry).collect();
    Ok(RollupEntry {
        name,
        spec: spec.clone(),
        rows: rows.len() as u64,
        bytes: entries.iter().map(|p| p.bytes).sum(),
        partitions: entries,
        deltas: Vec::new(),
    })
}

/// Splits sorted rows into partitions: (key, positions of its rows).
fn partitions(spec: &RollupSpec, rows: &RollupRows) -> Vec<(String, Range<usize>)> {
    let keys = rows.keys();
    let mut out = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let (key, next) = partition_of(spec.grain, keys[start].time);
        let len = if next == i32::MAX {
            keys.len() - start
        } else {
            keys[start..].partition_point(|k| k.time < next)
        };
        out.push((key, start..start + len));
        start += len;
    }
    out
}

/// Rows per record batch of a rollup file: a partition is converted to Arrow a slice at a
/// time, so writing one holds little more than the slice.
const FILE_BATCH_ROWS: usize = 1 << 16;

/// zstd's level for partition files: at bench scale, level 1 wrote the rollups in 1.18 s
/// against 1.47 s at the default (3), and no larger.
const PARTITION_ZSTD_LEVEL: i32 = 1;

/// Writes rows `part` of a rollup to an Arrow IPC file (temp, fsync, rename), in record
/// batches of `FILE_BATCH_ROWS`; returns its size.
fn write_ipc(
    path: &Path,
    (spec, rows): (&RollupSpec, &RollupRows),
    part: Range<usize>,
    countries: &Countries,
) -> Result<u64> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // An I/O error while writing (a full disk) names the file.
    let io = |e: arrow::error::ArrowError| match e {
        arrow::error::ArrowError::IoError(_, e) => Error::io(&tmp, e),
        e => Error::Arrow(e),
    };
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))?
        .try_with_compression_level(Some(PARTITION_ZSTD_LEVEL))?;
    let mut w = FileWriter::try_new_with_options(
        std::io::BufWriter::with_capacity(1 << 20, file),
        &rollup_schema(spec),
        opts,
    )
    .map_err(io)?;
    for start in part.clone().step_by(FILE_BATCH_ROWS) {
        let end = (start + FILE_BATCH_ROWS).min(part.end);
        w.write(&to_batch(spec, rows, start..end, countries)?)
            .map_err(io)?;
    }
    w.finish().map_err(io)?;
    let file = w
        .into_inner()
        .map_err(io)?
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    let bytes = file.metadata().map_err(|e| Error::io(&tmp, e))?.len();
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Reads a rollup's rows back from its files: the partitions, with the deltas merged in;
/// their countries coded by `countries`.
pub fn read_rollup(state: &Path, entry: &RollupEntry, countries: &Countries) -> Result<RollupRows> {
    let mut rows = RollupRows::with_capacity(entry.rows as usize);
    for p in &entry.partitions {
        read_ipc(state, (&entry.spec, p), &mut rows, countries)?;
    }
    rows.sort();
    for d in &entry.deltas {
        let mut changes = RollupRows::with_capacity(d.rows as usize);
        read_ipc(state, (&entry.spec, d), &mut changes, countries)?;
        changes.sort();
        rows = rows.merge(&changes);
    }
    rows.shrink_to_fit();
    Ok(rows)
}

/// Appends the rows of one rollup file to `out` (in file order).
fn read_ipc(
    state: &Path,
    (spec, p): (&RollupSpec, &PartitionEntry),
    out: &mut RollupRows,
    countries: &Countries,
) -> Result<()> {
    let path = state.join(&p.file);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::BufReader::new(file), None)?;
    for batch in reader {
        from_batch(spec, &batch?, out, countries)?;
    }
    Ok(())
}

fn measure_fields(name: &str) -> [Field; 4] {
    let dec = |p| DataType::Decimal128(p, PRICE_SCALE);
    [
        Field::new(format!("{name}_count"), DataType::Int64, false),
        Field::new(format!("{name}_sum"), dec(38), true),
        Field::new(format!("{name}_min"), dec(PRICE_PRECISION), true),
        Field::new(format!("{name}_max"), dec(PRICE_PRECISION), true),
    ]
}

/// The Arrow schema of a rollup's files.
pub fn rollup_schema(spec: &RollupSpec) -> SchemaRef {
    let mut fields = Vec::new();
    match spec.grain {
        None => {}
        Some(t @ (TimeCol::Day | TimeCol::Week)) => {
            fields.push(Field::new(t.name(), DataType::Date32, true))
        }
        Some(t) => fields.push(Field::new(
            t.name(),
            DataType::Timestamp(TimeUnit::Second, None),
            true,
        )),
    }
    for d in &spec.dims {
        let ty = match d {
            Dim::Type | Dim::Country => DataType::Utf8,
            Dim::Advertiser | Dim::Publisher => DataType::Int32,
        };
        fields.push(Field::new(d.column().name(), ty, true));
    }
    fields.push(Field::new("count", DataType::Int64, false));
    fields.extend(measure_fields("bid_price"));
    fields.extend(measure_fields("total_price"));
    Arc::new(Schema::new(fields))
}

fn measure_arrays(aggs: &[Agg], pick: fn(&Agg) -> &Measure) -> Result<[ArrayRef; 4]> {
    let m = || aggs.iter().map(pick);
    let dec = |p: u8, it: Vec<Option<i128>>| -> Result<ArrayRef> {
        Ok(Arc::new(
            Decimal128Array::from(it).with_precision_and_scale(p, PRICE_SCALE)?,
        ))
    };
    Ok([
        Arc::new(Int64Array::from_iter_values(m().map(|x| x.n as i64))),
        dec(38, m().map(|x| (x.n > 0).then_some(x.sum)).collect())?,
        dec(
            PRICE_PRECISION,
            m().map(|x| (x.n > 0).then_some(x.min as i128)).collect(),
        )?,
        dec(
            PRICE_PRECISION,
            m().map(|x| (x.n > 0).then_some(x.max as i128)).collect(),
        )?,
    ])
}

fn to_batch(
    spec: &RollupSpec,
    all: &RollupRows,
    part: Range<usize>,
    countries: &Countries,
) -> Result<RecordBatch> {
    let keys = &all.keys()[part.clone()];
    let aggs: Vec<Agg> = all.range(part).map(|r| r.1).collect();
    let mut cols: Vec<ArrayRef> = Vec::new();
    let time = || keys.iter().map(|k| (k.time != NULL_TIME).then_some(k.time));
    match spec.grain {
        None => {}
        Some(TimeCol::Day | TimeCol::Week) => cols.push(Arc::new(Date32Array::from_iter(
            time().map(|t| t.map(|m| m.div_euclid(1440))),
        ))),
        Some(_) => cols.push(Arc::new(TimestampSecondArray::from_iter(
            time().map(|t| t.map(|m| m as i64 * 60)),
        ))),
    }
    for d in &spec.dims {
        let col: ArrayRef = match d {
            Dim::Type => Arc::new(StringArray::from_iter(
                keys.iter().map(|k| (k.typ != 0).then(|| type_name(k.typ))),
            )),
            Dim::Country => Arc::new(StringArray::from_iter(
                keys.iter()
                    .map(|k| (k.country != 0).then(|| countries.name(k.country))),
            )),
            Dim::Advertiser | Dim::Publisher => {
                let publ = *d == Dim::Publisher;
                Arc::new(Int32Array::from_iter(keys.iter().map(|k| k.id32(publ))))
            }
        };
        cols.push(col);
    }
    cols.push(Arc::new(Int64Array::from_iter_values(
        aggs.iter().map(|a| a.rows as i64),
    )));
    cols.extend(measure_arrays(&aggs, |a| &a.bid)?);
    cols.extend(measure_arrays(&aggs, |a| &a.total)?);
    Ok(RecordBatch::try_new(rollup_schema(spec), cols)?)
}

fn bad_file(what: &str) -> Error {
    Error::Internal(format!("rollup file: {what}"))
}

/// Appends a batch's rows to `out` (in file order; the caller sorts them).
fn from_batch(
    spec: &RollupSpec,
    batch: &RecordBatch,
    out: &mut RollupRows,
    countries: &Countries,
) -> Result<()> {
    let keys = keys_of(spec, batch, countries)?;
    let count = column(batch, "count")?.as_primitive::<Int64Type>();
    let bid = measures_of(batch, "bid_price")?;
    let total = measures_of(batch, "total_price")?;
    for (i, key) in keys.into_iter().enumerate() {
        let agg = Agg {
            rows: count.value(i) as u64,
            bid: bid[i],
            total: total[i],
        };
        out.push(key, &agg);
    }
    Ok(())
}

/// Column `name` of a rollup file's batch.
fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| bad_file(&format!("missing column {name}")))
}

/// The keys of a rollup file's rows: its time and dimension columns.
fn keys_of(spec: &RollupSpec, batch: &RecordBatch, countries: &Countries) -> Result<Vec<Key>> {
    let mut keys = vec![Key::default(); batch.num_rows()];
    if let Some(t) = spec.grain {
        let c = column(batch, t.name())?;
        for (i, k) in keys.iter_mut().enumerate() {
            k.time = if c.is_null(i) {
                NULL_TIME
            } else if matches!(t, TimeCol::Day | TimeCol::Week) {
                c.as_primitive::<Date32Type>().value(i) * 1440
            } else {
                (c.as_primitive::<TimestampSecondType>().value(i) / 60) as i32
            };
        }
    }
    for d in &spec.dims {
        let c = column(batch, d.column().name())?;
        for (i, k) in keys.iter_mut().enumerate() {
            match d {
                Dim::Type => {
                    k.typ = if c.is_null(i) {
                        0
                    } else {
                        type_code(c.as_string::<i32>().value(i))
                            .ok_or_else(|| bad_file("unknown type"))?
                    }
                }
                Dim::Country => {
                    k.country = if c.is_null(i) {
                        0
                    } else {
                        countries.code(c.as_string::<i32>().value(i))?
                    }
                }
                Dim::Advertiser | Dim::Publisher => {
                    let v = if c.is_null(i) {
                        NULL_ID
                    } else {
                        c.as_primitive::<Int32Type>().value(i) as i64
                    };
                    k.set_id(*d == Dim::Publisher, v);
                }
            }
        }
    }
    Ok(keys)
}

/// The measures of price `name` of a rollup file's rows (NULL sums and extremes: 0).
fn measures_of(batch: &RecordBatch, name: &str) -> Result<Vec<Measure>> {
    let n = column(batch, &format!("{name}_count"))?.as_primitive::<Int64Type>();
    let decimals = |part: &str| -> Result<&Decimal128Array> {
        Ok(column(batch, &format!("{name}_{part}"))?.as_primitive::<Decimal128Type>())
    };
    let (sum, min, max) = (decimals("sum")?, decimals("min")?, decimals("max")?);
    let value = |c: &Decimal128Array, i: usize| if c.is_valid(i) { c.value(i) } else { 0 };
    Ok((0..batch.num_rows())
        .map(|i| Measure {
            n: n.value(i) as u64,
            sum: value(sum, i),
            min: value(min, i) as i64,
            max: value(max, i) as i64,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::TimeCol;

    #[test]
    fn rollup_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RollupSpec::new(
            Some(TimeCol::Hour),
            &[Dim::Type, Dim::Country, Dim::Publisher],
        );
        let countries = Countries::default();
        let us = countries.code("US").unwrap();
        let mut a = Agg {
            rows: 3,
            ..Agg::default()
        };
        a.bid.add(1_500_000_000);
        a.bid.add(-2);
        let rows = RollupRows::from_iter([
            (Key::new(28_401_660, 2, us, 0, 7), a),
            (
                Key::new(28_500_000, 0, 0, 0, NULL_ID),
                Agg {
                    rows: 1,
                    ..Agg::default()
                },
            ),
            (
                Key::new(NULL_TIME, 1, us, 0, 9),
                Agg {
                    rows: 2,
                    ..Agg::default()
                },
            ),
        ]);
        let entry = write_rollup(dir.path(), (&spec, &rows), 7, None, &countries).unwrap();
        let again = write_rollup(
            dir.path(),
            (&spec, &rows),
            8,
            Some((&entry, &rows)),
            &countries,
        )
        .unwrap();
        assert_eq!(again, entry, "unchanged partitions are kept");
        assert_eq!(entry.partitions.len(), 3);
        assert_eq!(read_rollup(dir.path(), &entry, &countries).unwrap(), rows);
        let m = Manifest {
            version: MANIFEST_VERSION,
            generation: 7,
            zone: "UTC".into(),
            rollups: vec![entry],
        };
        m.publish(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
    }

    /// Generations that only add go to deltas until they add up to too much; one that
    /// takes rows away writes the partitions again. What is read back (partitions and
    /// deltas merged by key) always equals the rows written.
    #[test]
    fn additions_go_to_deltas_until_the_partitions_are_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let countries = Countries::default();
        let spec = RollupSpec::new(Some(TimeCol::Day), &[Dim::Advertiser]);
        let rows_of = |range: std::ops::Range<i64>| -> RollupRows {
            range
                .map(|adv| {
                    let key = Key::new(1440 * (adv % 40) as i32, 0, 0, adv, 0);
                    let mut a = Agg {
                        rows: 1 + adv as u64 % 3,
                        ..Agg::default()
                    };
                    a.total.add(adv * 1000);
                    (key, a)
                })
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect()
        };
        let mut rows = rows_of(0..20_000);
        let mut entry = write_rollup(dir.path(), (&spec, &rows), 1, None, &countries).unwrap();
        let (mut compacted, mut removals) = (0, 0);
        for g in 2..40u64 {
            // Each generation adds to 500 keys and adds 100 new ones; every tenth one
            // also drops 100 keys.
            let lo = (g as i64 * 300) % 19_000;
            let new_keys = 20_000 + g as i64 * 100..20_100 + g as i64 * 100;
            let mut next = rows.merge(&rows_of(lo..lo + 500)).merge(&rows_of(new_keys));
            let removal = g % 10 == 0;
            if removal {
                let gone: RollupRows = next
                    .iter()
                    .filter(|(k, _)| (lo + 500..lo + 600).contains(&k.id(false)))
                    .collect();
                let (rest, affected) = next.combine(&RollupRows::default(), &gone);
                assert!(affected.is_empty());
                next = rest;
            }
            let e = write_rollup(
                dir.path(),
                (&spec, &next),
                g,
                Some((&entry, &rows)),
                &countries,
            )
            .unwrap();
            match e.deltas.is_empty() {
                true => compacted += 1,
                false => assert_eq!(e.partitions, entry.partitions, "a delta leaves them"),
            }
            if removal {
                assert!(e.deltas.is_empty(), "a removal writes the partitions");
                removals += 1;
            }
            assert!(e.deltas.len() <= MAX_DELTAS);
            assert_eq!(
                read_rollup(dir.path(), &e, &countries).unwrap(),
                next,
                "generation {g}"
            );
            (entry, rows) = (e, next);
        }
        assert!(
            compacted > removals,
            "additions alone wrote the partitions again"
        );
    }
}
