//! The fold: one CSV file → a sorted Arrow batch for the DuckDB table plus the file's
//! partial aggregate for every rollup. One parse feeds both.
//!
//! Columns are found by header name (any order, extra columns ignored); a UTF-8 BOM,
//! CRLF line endings and quoted fields are accepted. Derived time columns are computed
//! in the fold's time zone.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, FixedSizeBinaryBuilder, Int32Array, RecordBatch,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::schema::{type_code, Kind, TableCol, Zone, RAW_COLUMNS};
use crate::rollup::partial::Partial;
use crate::rollup::{Countries, RollupSpec};

/// Rows per Arrow batch while parsing.
const BATCH_ROWS: usize = 64 * 1024;

/// The schema of the DuckDB `events` table, as Arrow batches carry it.
pub fn table_schema() -> SchemaRef {
    static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let fields = TableCol::ALL.map(|c| {
            let field = Field::new(c.name(), c.kind().arrow(), c.nullable());
            match c.kind() {
                // DuckDB takes 16 bytes tagged as the Arrow UUID extension as a UUID.
                Kind::Uuid => field.with_metadata(std::collections::HashMap::from([(
                    "ARROW:extension:name".to_string(),
                    "arrow.uuid".to_string(),
                )])),
                _ => field,
            }
        });
        Arc::new(Schema::new(fields.to_vec()))
    })
    .clone()
}

/// What folding one file produced.
#[derive(Debug)]
pub struct Folded {
    /// The file's rows for the `events` table, sorted by (day, type, country).
    pub table: RecordBatch,
    /// The file's partial for each rollup spec.
    pub partial: Partial,
    pub rows: u64,
    /// Bytes parsed.
    pub bytes: u64,
    /// Rows skipped as bad: (line, reason).
    pub bad_rows: Vec<(usize, String)>,
}

impl Folded {
    /// Adds the fold of another chunk of the same file: its partials and counts. Its
    /// rows are the caller's to send on (see `without_rows`).
    pub fn then(&mut self, next: Folded) {
        debug_assert_eq!(next.table.num_rows(), 0, "rows sent on");
        for (p, n) in self.partial.iter_mut().zip(&next.partial) {
            p.merge_in_place(n);
        }
        self.rows += next.rows;
        self.bytes += next.bytes;
        self.bad_rows.extend(next.bad_rows);
        self.bad_rows.sort_unstable();
    }

    /// The fold without its table rows (sent on as soon as they were parsed).
    pub fn without_rows(self) -> Folded {
        Folded {
            table: RecordBatch::new_empty(self.table.schema()),
            ..self
        }
    }

    /// Fails when the fold skipped more than `max_bad_rows` bad rows.
    pub fn check_bad_rows(&self, path: &Path, max_bad_rows: u64) -> Result<()> {
        match self.bad_rows.len() as u64 > max_bad_rows {
            true => Err(too_many_bad_rows(path, max_bad_rows, &self.bad_rows)),
            false => Ok(()),
        }
    }
}

/// The failure of a file with more than `max_bad_rows` bad rows, `bad` (sorted by line).
fn too_many_bad_rows(path: &Path, max_bad_rows: u64, bad: &[(usize, String)]) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        reason: format!("more than {max_bad_rows} bad rows; first: {}", bad[0].1),
    }
}

/// Folds the CSV file at `path` (identified in the table as `file_id`).
///
/// Fails with `Error::BadFile` naming the line and reason when the file cannot be parsed;
/// nothing is produced in that case.
pub fn fold_file(path: &Path, file_id: i32, with: FoldWith) -> Result<Folded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    fold_bytes(path, &bytes, 0, (file_id, 0), with, 0)
}

/// What rows are folded with: the time zone of the derived time columns, the rollups, and
/// the dictionary giving country texts their codes.
#[derive(Debug, Clone, Copy)]
pub struct FoldWith<'a> {
    pub zone: Zone,
    pub specs: &'a [RollupSpec],
    pub countries: &'a Countries,
}

/// Longest line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Where the first line of `text` longer than `MAX_LINE` bytes (newline not counted)
/// starts, if there is one; the last line may lack its newline.
pub(crate) fn first_long_line(text: &[u8]) -> Option<usize> {
    first_line_over(text, MAX_LINE)
}

/// `first_long_line` for lines longer than `max`. It reads a few bytes per `max`: from
/// a line's start, the last newline within `max` bytes ends lines that all fit.
fn first_line_over(text: &[u8], max: usize) -> Option<usize> {
    let mut start = 0;
    while text.len() - start > max {
        match memchr::memrchr(b'\n', &text[start..=start + max]) {
            Some(nl) => start += nl + 1,
            None => return Some(start),
        }
    }
    None
}

/// Folds file content `bytes`, from byte `from` on (0 = the whole file; otherwise the
/// start of an appended tail, parsed with the file's header line). `ids` is the file id
/// and the part number its rows get in the table. Up to `max_bad_rows` rows that do not
/// parse are skipped and counted; more fail the fold.
pub fn fold_bytes(
    path: &Path,
    bytes: &[u8],
    from: usize,
    ids: (i32, i32),
    with: FoldWith,
    max_bad_rows: u64,
) -> Result<Folded> {
    let bad = |line: usize, reason: String| Error::BadFile {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    if bytes.is_empty() {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            reason: "empty file (no header line)".into(),
        });
    }
    let header_len = bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    let parsed = (bytes.len() - from.min(bytes.len())) as u64;
    let from = from.max(header_len);
    let body = &bytes[from..];
    let first_line = 1 + memchr::memchr_iter(b'\n', &bytes[..from]).count();
    if let Some(at) = first_long_line(body) {
        let line = first_line + memchr::memchr_iter(b'\n', &body[..at]).count();
        return Err(bad(line, format!("line longer than {MAX_LINE} bytes")));
    }
    let text = Text {
        path,
        header: &bytes[..header_len],
        body,
        first_line,
        ids,
        zone: with.zone,
        countries: with.countries,
    };
    Ok(Folded {
        bytes: parsed,
        ..fold_text(&text, with.specs, max_bad_rows)?
    })
}

/// Folds a text's body (whole lines of at most `MAX_LINE` bytes): `parse_text`, then
/// `Parsed::fold`.
pub(crate) fn fold_text(text: &Text, specs: &[RollupSpec], max_bad_rows: u64) -> Result<Folded> {
    parse_text(text, max_bad_rows)?.fold(specs, text.countries)
}

/// A text's body parsed into table rows, not yet aggregated (its text may be dropped).
pub(crate) struct Parsed {
    table: RecordBatch,
    bad_rows: Vec<(usize, String)>,
    /// Bytes of the body.
    bytes: u64,
}

/// Parses a text's body (whole lines of at most `MAX_LINE` bytes): by the fast path when
/// it can, by the general one otherwise.
pub(crate) fn parse_text(text: &Text, max_bad_rows: u64) -> Result<Parsed> {
    let t = std::time::Instant::now();
    let names = read_header(&mut &text.header[..])
        .map_err(|e| Error::io(text.path, e))?
        .map(|h| split_header(&h))
        .unwrap_or_default();
    let (table, bad_rows) =
        match crate::ingest::fastcsv::parse(&names, text.body, text.ids, text.zone) {
            Some(table) => (table, Vec::new()),
            None => general_parse(text, max_bad_rows)?,
        };
    tracing::debug!(parse_ms = t.elapsed().as_millis() as u64, "parsed");
    Ok(Parsed {
        table,
        bad_rows,
        bytes: text.body.len() as u64,
    })
}

impl Parsed {
    /// The rows, sorted for the table.
    pub(crate) fn rows(&self) -> &RecordBatch {
        &self.table
    }

    /// The rows with their partial for each of `specs` (country codes from `countries`).
    pub(crate) fn fold(self, specs: &[RollupSpec], countries: &Countries) -> Result<Folded> {
        let t = std::time::Instant::now();
        let partial = crate::rollup::partial::build(&self.table, specs, countries)?;
        tracing::debug!(partial_ms = t.elapsed().as_millis() as u64, "aggregated");
        Ok(Folded {
            rows: self.table.num_rows() as u64,
            table: self.table,
            partial,
            bytes: self.bytes,
            bad_rows: self.bad_rows,
        })
    }
}

/// What the general parser reads: the header line and the body after it (whole lines),
/// with what error messages and table rows need.
pub(crate) struct Text<'a> {
    pub path: &'a Path,
    pub header: &'a [u8],
    pub body: &'a [u8],
    /// The file line number of the body's first line.
    pub first_line: usize,
    /// The file id and part number the rows get in the table.
    pub ids: (i32, i32),
    pub zone: Zone,
    /// Gives country texts their codes.
    pub countries: &'a Countries,
}

impl Text<'_> {
    /// `lines` (whole lines of this text's body, from file line `first_line` on) parsed
    /// by arrow-csv under this text's header.
    fn parse(&self, lines: &[u8], first_line: usize) -> Result<Vec<RecordBatch>> {
        parse_csv(
            self.path,
            self.header.chain(lines),
            first_line,
            self.ids,
            self.zone,
        )
    }
}

/// The general path: arrow-csv's parser (quotes and all), bad rows isolated up to
/// `max_bad_rows`, then the rows sorted for the table.
pub(crate) fn general_parse(
    text: &Text<'_>,
    max_bad_rows: u64,
) -> Result<(RecordBatch, Vec<(usize, String)>)> {
    let (batches, bad_rows) = match text.parse(text.body, text.first_line) {
        Ok(b) => (b, Vec::new()),
        Err(e @ Error::BadFile { .. }) if max_bad_rows == 0 => return Err(e),
        Err(_) => parse_tolerant(text, max_bad_rows)?,
    };
    let table = if batches.is_empty() {
        RecordBatch::new_empty(table_schema())
    } else {
        concat_batches(&table_schema(), &batches)?
    };
    drop(batches);
    Ok((sort_for_table(&table)?, bad_rows))
}

/// Rows parsed despite bad ones, and the bad ones: (line, reason).
type Tolerated = (Vec<RecordBatch>, Vec<(usize, String)>);

/// Parses line by line groups, isolating bad lines by bisection; fails once more than
/// `max_bad_rows` are bad. Lines are split at newlines (no quoted newlines here).
fn parse_tolerant(text: &Text<'_>, max_bad_rows: u64) -> Result<Tolerated> {
    let first_line = text.first_line;
    let mut lines: Vec<&[u8]> = text.body.split_inclusive(|b| *b == b'\n').collect();
    if lines
        .last()
        .is_some_and(|l| l.iter().all(|b| b.is_ascii_whitespace()))
    {
        lines.pop();
    }
    let mut batches = Vec::new();
    let mut bad = Vec::new();
    let mut stack = vec![(0, lines.len())];
    while let Some((a, b)) = stack.pop() {
        if a >= b {
            continue;
        }
        let chunk: Vec<u8> = lines[a..b].concat();
        match text.parse(&chunk, first_line + a) {
            Ok(mut ok) => batches.append(&mut ok),
            Err(e) if b - a == 1 => {
                bad.push((first_line + a, e.to_string()));
                if bad.len() as u64 > max_bad_rows {
                    bad.sort();
                    return Err(too_many_bad_rows(text.path, max_bad_rows, &bad));
                }
            }
            Err(_) => {
                let mid = (a + b) / 2;
                stack.push((mid, b));
                stack.push((a, mid));
            }
        }
    }
    bad.sort();
    Ok((batches, bad))
}

/// Parses CSV text into table batches.
/// `first_line` is the file line number of the first row after the header.
pub fn parse_csv<R: Read>(
    path: &Path,
    reader: R,
    first_line: usize,
    ids: (i32, i32),
    zone: Zone,
) -> Result<Vec<RecordBatch>> {
    let bad = |line: usize, reason: String| Error::BadFile {
        path: path.to_path_buf(),
        reason: if line > 0 {
            format!("line {line}: {reason}")
        } else {
            reason
        },
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let header = read_header(&mut reader).map_err(|e| Error::io(path, e))?;
    let Some(header) = header else {
        return Err(bad(0, "empty file (no header line)".into()));
    };
    let names = split_header(&header);
    let mut fields = Vec::with_capacity(names.len());
    for name in &names {
        // Extra columns are read as text (and left out by the projection).
        let ty = TableCol::raw(name).map_or(DataType::Utf8, |c| c.kind().parsed());
        fields.push(Field::new(name, ty, true));
    }
    let mut projection = Vec::with_capacity(RAW_COLUMNS.len());
    for want in RAW_COLUMNS {
        match names.iter().position(|n| n == want) {
            Some(i) => projection.push(i),
            None => return Err(bad(1, format!("missing column {want:?} in header"))),
        }
    }
    let csv = arrow_csv::ReaderBuilder::new(Arc::new(Schema::new(fields)))
        .with_header(false)
        .with_batch_size(BATCH_ROWS)
        .with_projection(projection)
        .build_buffered(reader)?;
    let mut clock = zone.clock();
    let mut out = Vec::new();
    let mut first_line = first_line;
    for batch in csv {
        let batch = batch.map_err(|e| bad(0, csv_error_text(e, first_line)))?;
        let rows = batch.num_rows();
        out.push(to_table_batch(&batch, ids, &mut clock).map_err(|(i, r)| bad(first_line + i, r))?);
        first_line += rows;
    }
    Ok(out)
}

/// arrow-csv numbers lines from the first record it reads (from 0 in value errors, from
/// 1 in the others); shift them to file lines.
fn csv_error_text(e: arrow::error::ArrowError, first_line: usize) -> String {
    let text = e.to_string();
    let base = if text.contains("Error while parsing value") {
        first_line
    } else {
        first_line - 1
    };
    let re_line = |t: &str| -> Option<(usize, usize)> {
        let at = t.find("line ")? + 5;
        let digits: String = t[at..].chars().take_while(char::is_ascii_digit).collect();
        Some((at, digits.parse().ok()?))
    };
    match re_line(&text) {
        Some((at, n)) => {
            let n_len = n.to_string().len();
            format!("{}{}{}", &text[..at], n + base, &text[at + n_len..])
        }
        None => text,
    }
}

/// Reads the header line: strips a UTF-8 BOM and the line ending. None for an empty file.
pub(crate) fn read_header<R: BufRead>(reader: &mut R) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let mut text = line.as_slice();
    text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    while let Some(rest) = text
        .strip_suffix(b"\n")
        .or_else(|| text.strip_suffix(b"\r"))
    {
        text = rest;
    }
    Ok(Some(String::from_utf8_lossy(text).into_owned()))
}

/// Splits a CSV header line into names, honouring double quotes.
pub(crate) fn split_header(line: &str) -> Vec<String> {
    let mut names = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                names.last_mut().expect("non-empty").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => names.push(String::new()),
            c => names.last_mut().expect("non-empty").push(c),
        }
    }
    names.iter().map(|n| n.trim().to_string()).collect()
}

/// Turns a parsed batch (raw columns in canonical order) into a table batch.
/// Errors carry the row index within the batch and a reason.
fn to_table_batch(
    raw: &RecordBatch,
    (file_id, part): (i32, i32),
    clock: &mut crate::model::schema::LocalClock,
) -> std::result::Result<RecordBatch, (usize, String)> {
    let n = raw.num_rows();
    let ts = raw.column(0).as_primitive::<Int64Type>();
    let types = raw.column(1).as_string::<i32>();
    for (i, t) in types.iter().enumerate() {
        if let Some(t) = t {
            if type_code(t).is_none() {
                return Err((i, format!("unknown event type {t:?}")));
            }
        }
    }
    let auctions = raw.column(2).as_string::<i32>();
    let mut uuid = FixedSizeBinaryBuilder::with_capacity(n, 16);
    for (i, a) in auctions.iter().enumerate() {
        match a {
            None => uuid.append_null(),
            Some(text) => match parse_uuid(text) {
                Some(bytes) => uuid.append_value(bytes).expect("16 bytes"),
                None => return Err((i, format!("bad auction_id {text:?}: not a UUID"))),
            },
        }
    }
    let mut days = Vec::with_capacity(n);
    let mut minutes = Vec::with_capacity(n);
    for (i, t) in ts.iter().enumerate() {
        match t {
            None => {
                days.push(None);
                minutes.push(None);
            }
            Some(ms) => match clock.local_minute(ms) {
                Some(m) => {
                    days.push(Some(m.div_euclid(1440)));
                    minutes.push(Some(m));
                }
                None => return Err((i, format!("ts {ms} out of range"))),
            },
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![file_id; n])),
        Arc::new(Int32Array::from(vec![part; n])),
        raw.column(0).clone(),
        raw.column(1).clone(),
        Arc::new(uuid.finish()),
        raw.column(3).clone(),
        raw.column(4).clone(),
        raw.column(5).clone(),
        raw.column(6).clone(),
        raw.column(7).clone(),
        raw.column(8).clone(),
        Arc::new(Date32Array::from(days)),
        Arc::new(Int32Array::from(minutes)),
    ];
    RecordBatch::try_new(table_schema(), columns).map_err(|e| (0, e.to_string()))
}

/// The value of each byte as a hex digit; 0xff for bytes that are not one.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses UUID text (with or without dashes, any case) into 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    parse_uuid_bytes(text.as_bytes())
}

/// `parse_uuid` of text as bytes.
pub fn parse_uuid_bytes(b: &[u8]) -> Option<[u8; 16]> {
    if b.len() == 36 && b[8] == b'-' && b[13] == b'-' && b[18] == b'-' && b[23] == b'-' {
        // The canonical form: hex pairs at fixed places.
        const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut out = [0u8; 16];
        for (o, at) in out.iter_mut().zip(AT) {
            let (hi, lo) = (HEX[b[at] as usize], HEX[b[at + 1] as usize]);
            if (hi | lo) & 0xf0 != 0 {
                return None;
            }
            *o = (hi << 4) | lo;
        }
        return Some(out);
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for &b in b {
        let v = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b'-' => continue,
            _ => return None,
        };
        if nibbles == 32 {
            return None;
        }
        out[nibbles / 2] |= v << (4 * (1 - nibbles % 2));
        nibbles += 1;
    }
    (nibbles == 32).then_some(out)
}

/// The sort key of a table row: its local day, then its type code, then the rank of its
/// country's name among the file's (from 1), each NULL last.
pub(crate) fn table_order(day: Option<i32>, typ: Option<u8>, country_rank: Option<u64>) -> u64 {
    let day = day.map_or(1 << 32, |d| (i64::from(d) - i64::from(i32::MIN)) as u64);
    let typ = typ.map_or(5, u64::from);
    (day << 24) | (typ << 16) | country_rank.unwrap_or(0xffff)
}

/// Sorts a file's rows by day (NULL last), type and country so DuckDB's zone maps stay
/// useful. Sorts one integer key per row rather than comparing strings.
fn sort_for_table(batch: &RecordBatch) -> Result<RecordBatch> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(batch.clone());
    }
    let day = batch
        .column(TableCol::Day.at())
        .as_primitive::<arrow::datatypes::Date32Type>();
    let types = batch.column(TableCol::Type.at()).as_string::<i32>();
    let countries = batch.column(TableCol::Country.at()).as_string::<i32>();
    let mut codes: FxHashMap<&str, u64> = FxHashMap::default();
    let mut names: Vec<&str> = countries.iter().flatten().collect();
    names.sort_unstable();
    names.dedup();
    for (i, name) in names.into_iter().enumerate() {
        codes.insert(name, i as u64 + 1);
    }
    let mut keys: Vec<(u64, u32)> = (0..n)
        .map(|i| {
            let key = table_order(
                day.is_valid(i).then(|| day.value(i)),
                types
                    .is_valid(i)
                    .then(|| type_code(types.value(i)).unwrap_or(0)),
                countries.is_valid(i).then(|| codes[countries.value(i)]),
            );
            (key, i as u32)
        })
        .collect();
    keys.sort_unstable();
    let idx = arrow::array::UInt32Array::from_iter_values(keys.into_iter().map(|k| k.1));
    Ok(take_record_batch(batch, &idx)?)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn header_split_and_bom() {
        let mut r = &b"\xEF\xBB\xBF\"ts\",type,\"a,b\"\r\n1,2,3\n"[..];
        let h = read_header(&mut r).unwrap().unwrap();
        assert_eq!(split_header(&h), vec!["ts", "type", "a,b"]);
    }

    #[test]
    fn uuid_text() {
        let u = parse_uuid("123e4567-e89b-12d3-a456-426614174000").unwrap();
        assert_eq!(u[0], 0x12);
        assert_eq!(u[15], 0x00);
        assert!(parse_uuid("123e4567").is_none());
        assert!(parse_uuid("zz3e4567-e89b-12d3-a456-426614174000").is_none());
        assert!(parse_uuid("123e4567-e89b-12d3-a456-42661417400g").is_none());
        let canonical = "123E4567-e89b-12d3-A456-426614174000";
        assert_eq!(
            parse_uuid(canonical),
            parse_uuid(&canonical.replace('-', ""))
        );
        assert_eq!(parse_uuid(canonical), Some(u));
    }

    /// The long-line search finds what looking at every line finds, for lines of every
    /// length around the limit, with and without a last newline.
    #[test]
    fn long_lines_found_as_line_by_line() {
        let every_line = |text: &[u8], max: usize| {
            let mut start = 0;
            for nl in memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len())) {
                if nl - start > max {
                    return Some(start);
                }
                start = nl + 1;
            }
            None
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let max = rng.gen_range(1..12);
            let mut text = Vec::new();
            for _ in 0..rng.gen_range(0..8) {
                text.extend(std::iter::repeat_n(b'x', rng.gen_range(0..max + 3)));
                text.push(b'\n');
            }
            if rng.gen_bool(0.5) {
                text.extend(std::iter::repeat_n(b'y', rng.gen_range(0..max + 3)));
            }
            assert_eq!(
                first_line_over(&text, max),
                every_line(&text, max),
                "{text:?}"
            );
        }
    }
}
