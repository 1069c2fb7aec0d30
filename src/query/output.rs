//! Query results as typed columns, and their encodings: JSON rows, CSV text and Arrow
//! IPC streams, each written straight from the columns (no per-cell values in between).

use std::cmp::Ordering;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, StringBuilder};
use arrow::buffer::NullBuffer;
use arrow::datatypes::ArrowPrimitiveType;
use arrow::datatypes::{DataType, Decimal128Type, Field, Float64Type, Int32Type, Int64Type};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use serde::ser::Serializer;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::arrays::utf8;
use crate::model::schema::TimeCol;
use crate::rollup::NULL_TIME;

/// One result value (a cell read out of typed columns).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i128),
    Float(f64),
    Text(String),
}

impl Value {
    /// SQL ordering of two values of one column with NULLs last, in the given direction.
    pub fn order(&self, other: &Value, desc: bool) -> Ordering {
        let ord = match (self, other) {
            (Value::Null, Value::Null) => return Ordering::Equal,
            (Value::Null, _) => return Ordering::Greater,
            (_, Value::Null) => return Ordering::Less,
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).total_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.total_cmp(&(*b as f64)),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Text(_), _) => Ordering::Greater,
            (_, Value::Text(_)) => Ordering::Less,
        };
        if desc {
            ord.reverse()
        } else {
            ord
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => s.serialize_i64(v),
                Err(_) => s.serialize_i128(*i),
            },
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

/// The type of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    Int,
    /// An integer that may exceed 64 bits (sums of integer columns).
    BigInt,
    Float,
    Text,
}

/// The cells of one result column; `None` is NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Int(Vec<Option<i64>>),
    BigInt(Vec<Option<i128>>),
    Float(Vec<Option<f64>>),
    /// Bucket starts (local minutes) of a time column, shown as its text; `NULL_TIME` is
    /// NULL.
    Time(TimeCol, Vec<i32>),
    /// Codes into a list of texts (event types, countries); code 0 is NULL.
    Code(Arc<[String]>, Vec<u16>),
    Text(Vec<Option<String>>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Int(v) => v.len(),
            Data::BigInt(v) => v.len(),
            Data::Float(v) => v.len(),
            Data::Time(_, v) => v.len(),
            Data::Code(_, v) => v.len(),
            Data::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell of row `r`.
    pub fn value(&self, r: usize) -> Value {
        match self {
            Data::Int(v) => v[r].map_or(Value::Null, |i| Value::Int(i.into())),
            Data::BigInt(v) => v[r].map_or(Value::Null, Value::Int),
            Data::Float(v) => v[r].map_or(Value::Null, Value::Float),
            Data::Time(t, v) if v[r] != NULL_TIME => Value::Text(t.format(v[r])),
            Data::Code(names, v) if v[r] != 0 => Value::Text(names[v[r] as usize].clone()),
            Data::Time(..) | Data::Code(..) => Value::Null,
            Data::Text(v) => v[r].clone().map_or(Value::Null, Value::Text),
        }
    }

    /// Rows `order` of this column, in that order.
    pub fn gather(&self, order: &[u32]) -> Data {
        /// Each a read from anywhere in `v`: on every core when they are many.
        fn pick<T: Clone + Send + Sync>(v: &[T], order: &[u32]) -> Vec<T> {
            match order.len() >= PARALLEL_PICKS {
                true => order.par_iter().map(|&i| v[i as usize].clone()).collect(),
                false => order.iter().map(|&i| v[i as usize].clone()).collect(),
            }
        }
        match self {
            Data::Int(v) => Data::Int(pick(v, order)),
            Data::BigInt(v) => Data::BigInt(pick(v, order)),
            Data::Float(v) => Data::Float(pick(v, order)),
            Data::Time(t, v) => Data::Time(*t, pick(v, order)),
            Data::Code(n, v) => Data::Code(n.clone(), pick(v, order)),
            Data::Text(v) => Data::Text(pick(v, order)),
        }
    }

    /// An integer that orders row `r` as `compare` does (for numbers; other columns
    /// compare by `compare`, and all of their rows share one key).
    pub fn sort_key(&self, r: usize, desc: bool) -> u128 {
        let bits = match self {
            Data::Int(v) => v[r].map(|i| (i as u64) ^ (1 << 63)),
            Data::Float(v) => v[r].map(|f| {
                let b = f.to_bits();
                if b >> 63 == 1 {
                    !b
                } else {
                    b | (1 << 63)
                }
            }),
            _ => Some(0),
        };
        match bits {
            None => u128::MAX,
            Some(b) if desc => u128::from(!b),
            Some(b) => u128::from(b),
        }
    }

    /// Whether `sort_key` orders the rows as `compare` does (numbers), rather than giving
    /// them all one key.
    pub fn keyed(&self) -> bool {
        matches!(self, Data::Int(_) | Data::Float(_))
    }

    /// SQL order of rows `a` and `b` (NULLs last in both directions).
    pub fn compare(&self, a: usize, b: usize, desc: bool) -> Ordering {
        fn nulls_last<T>(
            x: Option<T>,
            y: Option<T>,
            desc: bool,
            cmp: impl Fn(T, T) -> Ordering,
        ) -> Ordering {
            match (x, y) {
                (None, None) => Ordering::Equal,
                (None, _) => Ordering::Greater,
                (_, None) => Ordering::Less,
                (Some(x), Some(y)) if desc => cmp(y, x),
                (Some(x), Some(y)) => cmp(x, y),
            }
        }
        let opt = |v: i32| (v != NULL_TIME).then_some(v);
        match self {
            Data::Int(v) => nulls_last(v[a], v[b], desc, |x, y| x.cmp(&y)),
            Data::BigInt(v) => nulls_last(v[a], v[b], desc, |x, y| x.cmp(&y)),
            Data::Float(v) => nulls_last(v[a], v[b], desc, |x, y| x.total_cmp(&y)),
            Data::Time(_, v) => nulls_last(opt(v[a]), opt(v[b]), desc, |x, y| x.cmp(&y)),
            Data::Code(n, v) => {
                let name = |c: u16| (c != 0).then(|| &n[c as usize]);
                nulls_last(name(v[a]), name(v[b]), desc, |x, y| x.cmp(y))
            }
            Data::Text(v) => nulls_last(v[a].as_ref(), v[b].as_ref(), desc, |x, y| x.cmp(y)),
        }
    }
}

/// Result rows, held column by column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    len: usize,
    columns: Vec<Data>,
}

impl Rows {
    /// Rows of these columns (all of one length).
    pub fn new(columns: Vec<Data>) -> Rows {
        let len = columns.first().map_or(0, Data::len);
        debug_assert!(columns.iter().all(|c| c.len() == len));
        Rows { len, columns }
    }

    /// Rows of generic values, typed by `types`.
    pub fn from_values(types: &[OutType], rows: &[Vec<Value>]) -> Rows {
        let column = |c: usize, ty: OutType| {
            let cells = rows.iter().map(|r| &r[c]);
            match ty {
                OutType::Int => Data::Int(
                    cells
                        .map(|v| match v {
                            Value::Int(i) => i64::try_from(*i).ok(),
                            _ => None,
                        })
                        .collect(),
                ),
                OutType::BigInt => Data::BigInt(
                    cells
                        .map(|v| match v {
                            Value::Int(i) => Some(*i),
                            _ => None,
                        })
                        .collect(),
                ),
                OutType::Float => Data::Float(
                    cells
                        .map(|v| match v {
                            Value::Float(f) => Some(*f),
                            Value::Int(i) => Some(*i as f64),
                            _ => None,
                        })
                        .collect(),
                ),
                OutType::Text => Data::Text(
                    cells
                        .map(|v| match v {
                            Value::Text(t) => Some(t.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
            }
        };
        Rows {
            len: rows.len(),
            columns: types
                .iter()
                .enumerate()
                .map(|(c, t)| column(c, *t))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn columns(&self) -> &[Data] {
        &self.columns
    }

    /// Row `r` as values.
    pub fn row(&self, r: usize) -> Vec<Value> {
        self.columns.iter().map(|c| c.value(r)).collect()
    }
}

/// Bytes of JSON gathered before they are handed to the writer.
const JSON_CHUNK: usize = 64 << 10;

impl Rows {
    /// The rows as JSON, a list of rows each a list of cells: the bytes `serde_json`
    /// writes for them (integers by `itoa`, finite floats by `zmij`, other floats as null,
    /// texts escaped by `serde_json`), written from the typed columns into a buffer a
    /// chunk at a time rather than a writer call per token.
    pub fn write_json(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut out: Vec<u8> = Vec::with_capacity(JSON_CHUNK + 4096);
        let (mut ints, mut floats) = (itoa::Buffer::new(), zmij::Buffer::new());
        let mut text = TimeText::default();
        let escaped = |out: &mut Vec<u8>, t: &str| {
            serde_json::to_writer(out, t).map_err(std::io::Error::from)
        };
        out.push(b'[');
        for r in 0..self.len {
            out.extend_from_slice(if r == 0 { b"[" } else { b",[" });
            for (i, c) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match c {
                    Data::Int(v) => match v[r] {
                        Some(x) => out.extend_from_slice(ints.format(x).as_bytes()),
                        None => out.extend_from_slice(b"null"),
                    },
                    Data::BigInt(v) => match v[r] {
                        Some(x) => out.extend_from_slice(ints.format(x).as_bytes()),
                        None => out.extend_from_slice(b"null"),
                    },
                    Data::Float(v) => match v[r].filter(|f| f.is_finite()) {
                        Some(f) => out.extend_from_slice(floats.format_finite(f).as_bytes()),
                        None => out.extend_from_slice(b"null"),
                    },
                    // Canonical time texts are ASCII digits, dashes, colons and spaces.
                    Data::Time(t, v) if v[r] != NULL_TIME => {
                        out.push(b'"');
                        text.write(*t, v[r], &mut out);
                        out.push(b'"');
                    }
                    Data::Code(n, v) if v[r] != 0 => escaped(&mut out, &n[v[r] as usize])?,
                    Data::Time(..) | Data::Code(..) => out.extend_from_slice(b"null"),
                    Data::Text(v) => match &v[r] {
                        Some(t) => escaped(&mut out, t)?,
                        None => out.extend_from_slice(b"null"),
                    },
                }
            }
            out.push(b']');
            if out.len() >= JSON_CHUNK {
                w.write_all(&out)?;
                out.clear();
            }
        }
        out.push(b']');
        w.write_all(&out)
    }
}

/// Rows serialize as `write_json` writes them (a list of rows, each a list of cells:
/// numbers, text, null), for the JSON serializer they are part of.
impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut json = Vec::new();
        self.write_json(&mut json).map_err(S::Error::custom)?;
        let text = String::from_utf8(json).map_err(S::Error::custom)?;
        let raw = serde_json::value::RawValue::from_string(text).map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

/// Formats time buckets as their canonical text (`2024-06-01`, `2024-06-01 13:00:00`,
/// `2024-06-01 13:05`) without allocating: a day's date is computed once and kept (the
/// dates of the last 512 distinct days, so rows in any order reuse them), the time of day
/// is written digit by digit, each piece appended at its fixed size.
#[derive(Default)]
pub struct TimeText {
    /// The text `format` returns.
    buf: Vec<u8>,
    /// The last day asked for and its date.
    day: Option<(i64, [u8; 10])>,
    /// Dates of four-digit years by day, at the day's slot modulo `DATE_SLOTS`.
    dates: Vec<(i64, [u8; 10])>,
}

/// Slots of `TimeText`'s dates.
const DATE_SLOTS: usize = 512;

impl TimeText {
    /// The text of bucket `m` (local minutes) of column `t`.
    pub fn format(&mut self, t: TimeCol, m: i32) -> &str {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.write(t, m, &mut buf);
        self.buf = buf;
        std::str::from_utf8(&self.buf).expect("ASCII")
    }

    /// Appends the text of bucket `m` of column `t` to `out` (ASCII).
    #[inline]
    pub fn write(&mut self, t: TimeCol, m: i32, out: &mut Vec<u8>) {
        let day = m.div_euclid(1440);
        match self.day {
            Some((d, date)) if d == i64::from(day) => out.extend_from_slice(&date),
            _ => self.write_date(i64::from(day), out),
        }
        if let TimeCol::Minute | TimeCol::Hour = t {
            let minute = i64::from(m.rem_euclid(1440));
            let (h, mi) = (two(minute / 60), two(minute % 60));
            match t {
                TimeCol::Minute => {
                    out.extend_from_slice(&[b' ', h[0], h[1], b':', mi[0], mi[1]]);
                }
                _ => out.extend_from_slice(&[b' ', h[0], h[1], b':', b'0', b'0', b':', b'0', b'0']),
            }
        }
    }

    /// Appends the date of `day` (another than the last one written) and keeps it as the
    /// last one.
    #[inline(never)]
    fn write_date(&mut self, day: i64, out: &mut Vec<u8>) {
        match self.date(day) {
            Some(date) => {
                self.day = Some((day, date));
                out.extend_from_slice(&date);
            }
            None => {
                let (y, mo, d) = civil_from_days(day);
                let _ = write!(out, "{y:04}-{mo:02}-{d:02}");
            }
        }
    }

    /// The date of `day` when its year has four digits.
    fn date(&mut self, day: i64) -> Option<[u8; 10]> {
        if self.dates.is_empty() {
            self.dates = vec![(i64::MIN, [0; 10]); DATE_SLOTS];
        }
        let slot = &mut self.dates[day.rem_euclid(DATE_SLOTS as i64) as usize];
        if slot.0 == day {
            return Some(slot.1);
        }
        let (y, mo, d) = civil_from_days(day);
        let y = i64::from(u16::try_from(y).ok().filter(|y| *y <= 9999)?);
        let (mo, d) = (i64::from(mo), i64::from(d));
        let (c, yy, m2, d2) = (two(y / 100), two(y % 100), two(mo), two(d));
        let text = [
            c[0], c[1], yy[0], yy[1], b'-', m2[0], m2[1], b'-', d2[0], d2[1],
        ];
        *slot = (day, text);
        Some(text)
    }
}

/// The two decimal digits of `v` (0 to 99).
fn two(v: i64) -> [u8; 2] {
    [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A query result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultSet {
    pub columns: Vec<String>,
    #[serde(skip)]
    pub types: Vec<OutType>,
    pub rows: Rows,
}

impl ResultSet {
    /// CSV text: a header line, then rows; NULL is an empty field.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_csv(&mut out).expect("writing to memory");
        out
    }

    /// Writes the CSV text to `w`, stopping at its first error (a byte cap).
    pub fn write_csv(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(256);
        for (i, name) in self.columns.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            csv_field(&mut line, name);
        }
        line.push(b'\n');
        let mut text = TimeText::default();
        for r in 0..self.rows.len {
            for (i, c) in self.rows.columns.iter().enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                csv_cell(&mut line, c, r, &mut text);
            }
            line.push(b'\n');
            if line.len() >= 1 << 16 {
                w.write_all(&line)?;
                line.clear();
            }
        }
        w.write_all(&line)
    }

    /// The result's Arrow schema.
    fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .zip(&self.rows.columns)
            .map(|(name, c)| Field::new(name, arrow_type(c), true))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The result as one Arrow record batch.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        self.batch(self.schema(), 0..self.rows.len)
    }

    /// Rows `rows` of the result as an Arrow record batch of `schema`.
    fn batch(&self, schema: SchemaRef, rows: Range<usize>) -> Result<RecordBatch> {
        let arrays = self
            .rows
            .columns
            .iter()
            .map(|c| arrow_array(c, rows.clone()))
            .collect();
        Ok(RecordBatch::try_new(schema, arrays)?)
    }

    /// An Arrow IPC stream holding the result.
    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_arrow_ipc(&mut out)?;
        Ok(out)
    }

    /// Writes the result as an Arrow IPC stream to `w`: record batches of at most
    /// `BATCH_ROWS` rows (one when the result is empty), built a few at a time on every
    /// core, each few written before the next are built.
    pub fn write_arrow_ipc(&self, w: &mut impl Write) -> Result<()> {
        let schema = self.schema();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(w, &schema)?;
        let starts: Vec<usize> = (0..self.rows.len.max(1)).step_by(BATCH_ROWS).collect();
        for few in starts.chunks(crate::query::cores()) {
            let batches: Vec<Result<RecordBatch>> = few
                .par_iter()
                .map(|&start| {
                    let end = (start + BATCH_ROWS).min(self.rows.len);
                    self.batch(schema.clone(), start..end)
                })
                .collect();
            for batch in batches {
                writer.write(&batch?)?;
            }
        }
        writer.finish()?;
        Ok(())
    }
}

/// Rows of a column gathered on every core from this many on.
const PARALLEL_PICKS: usize = 1 << 16;

/// The most rows of one Arrow record batch of an answer.
pub const BATCH_ROWS: usize = 1 << 16;

fn csv_field(out: &mut Vec<u8>, f: &str) {
    if f.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(f.as_bytes());
    }
}

fn csv_cell(out: &mut Vec<u8>, c: &Data, r: usize, text: &mut TimeText) {
    let _ = match c {
        Data::Int(v) => v[r].map_or(Ok(()), |i| write!(out, "{i}")),
        Data::BigInt(v) => v[r].map_or(Ok(()), |i| write!(out, "{i}")),
        Data::Float(v) => v[r].map_or(Ok(()), |f| write!(out, "{f}")),
        Data::Time(t, v) if v[r] != NULL_TIME => {
            text.write(*t, v[r], out);
            Ok(())
        }
        Data::Code(n, v) if v[r] != 0 => {
            csv_field(out, &n[v[r] as usize]);
            Ok(())
        }
        Data::Time(..) | Data::Code(..) => Ok(()),
        Data::Text(v) => {
            if let Some(t) = &v[r] {
                csv_field(out, t);
            }
            Ok(())
        }
    };
}

fn arrow_type(c: &Data) -> DataType {
    match c {
        Data::Int(_) => DataType::Int64,
        Data::BigInt(_) => DataType::Decimal128(38, 0),
        Data::Float(_) => DataType::Float64,
        Data::Time(..) | Data::Code(..) | Data::Text(_) => DataType::Utf8,
    }
}

/// An Arrow array of typed cells: the values copied in one pass, a validity bitmap only
/// when a cell is NULL.
fn primitive<T: ArrowPrimitiveType>(v: &[Option<T::Native>]) -> PrimitiveArray<T> {
    let values: Vec<T::Native> = v.iter().map(|x| x.unwrap_or_default()).collect();
    let nulls = v
        .iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from_iter(v.iter().map(Option::is_some)));
    PrimitiveArray::new(values.into(), nulls)
}

/// Rows `rows` of column `c` as an Arrow array.
fn arrow_array(c: &Data, rows: Range<usize>) -> ArrayRef {
    match c {
        Data::Int(v) => Arc::new(primitive::<Int64Type>(&v[rows])),
        Data::BigInt(v) => Arc::new(
            primitive::<Decimal128Type>(&v[rows]).with_data_type(DataType::Decimal128(38, 0)),
        ),
        Data::Float(v) => Arc::new(primitive::<Float64Type>(&v[rows])),
        Data::Time(t, v) => {
            let mut text = TimeText::default();
            Arc::new(utf8(&v[rows], 16, |&m, out| match m {
                NULL_TIME => false,
                m => {
                    text.write(*t, m, out);
                    true
                }
            }))
        }
        Data::Code(n, v) => Arc::new(utf8(&v[rows], 4, |&code, out| match code {
            0 => false,
            c => {
                out.extend_from_slice(n[c as usize].as_bytes());
                true
            }
        })),
        Data::Text(v) => {
            let mut b = StringBuilder::new();
            for t in &v[rows] {
                b.append_option(t.as_deref());
            }
            Arc::new(b.finish())
        }
    }
}

/// A column of a DuckDB answer (Arrow) as result cells of type `ty`; a time column's
/// local minutes (`time`) become its buckets.
pub fn from_arrow(array: &dyn Array, ty: OutType, time: Option<TimeCol>) -> Result<Data> {
    let cast = |to: &DataType| arrow::compute::cast(array, to).map_err(Error::from);
    Ok(match (time, ty) {
        (Some(t), _) => {
            let a = cast(&DataType::Int32)?;
            let a = a.as_primitive::<Int32Type>();
            Data::Time(t, a.iter().map(|m| m.unwrap_or(NULL_TIME)).collect())
        }
        (None, OutType::Int) => {
            let a = cast(&DataType::Int64)?;
            Data::Int(a.as_primitive::<Int64Type>().iter().collect())
        }
        (None, OutType::BigInt) => {
            let a = cast(&DataType::Decimal128(38, 0))?;
            Data::BigInt(a.as_primitive::<Decimal128Type>().iter().collect())
        }
        (None, OutType::Float) => {
            let a = cast(&DataType::Float64)?;
            Data::Float(a.as_primitive::<Float64Type>().iter().collect())
        }
        (None, OutType::Text) => {
            let a = cast(&DataType::Utf8)?;
            Data::Text(
                a.as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect(),
            )
        }
    })
}

/// An empty column of type `ty` (a time column's buckets when `time` is given).
pub fn empty(ty: OutType, time: Option<TimeCol>) -> Data {
    match (time, ty) {
        (Some(t), _) => Data::Time(t, Vec::new()),
        (None, OutType::Int) => Data::Int(Vec::new()),
        (None, OutType::BigInt) => Data::BigInt(Vec::new()),
        (None, OutType::Float) => Data::Float(Vec::new()),
        (None, OutType::Text) => Data::Text(Vec::new()),
    }
}

/// Joins the columns of consecutive pieces of one answer.
pub fn concat(parts: Vec<Vec<Data>>) -> Vec<Data> {
    let mut parts = parts.into_iter();
    let Some(mut out) = parts.next() else {
        return Vec::new();
    };
    for part in parts {
        for (o, p) in out.iter_mut().zip(part) {
            match (o, p) {
                (Data::Int(a), Data::Int(b)) => a.extend(b),
                (Data::BigInt(a), Data::BigInt(b)) => a.extend(b),
                (Data::Float(a), Data::Float(b)) => a.extend(b),
                (Data::Time(_, a), Data::Time(_, b)) => a.extend(b),
                (Data::Code(_, a), Data::Code(_, b)) => a.extend(b),
                (Data::Text(a), Data::Text(b)) => a.extend(b),
                _ => unreachable!("pieces of one answer have one type per column"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_sort_last_both_ways() {
        let a = Value::Int(1);
        assert_eq!(Value::Null.order(&a, false), Ordering::Greater);
        assert_eq!(Value::Null.order(&a, true), Ordering::Greater);
        assert_eq!(a.order(&Value::Int(2), true), Ordering::Greater);
        let d = Data::Float(vec![None, Some(1.0), Some(2.0)]);
        assert_eq!(d.compare(0, 1, true), Ordering::Greater);
        assert_eq!(d.compare(1, 2, true), Ordering::Greater);
        assert_eq!(d.compare(1, 2, false), Ordering::Less);
    }

    #[test]
    fn encodings() {
        let r = ResultSet {
            columns: vec!["country".into(), "SUM(bid_price)".into(), "n".into()],
            types: vec![OutType::Text, OutType::Float, OutType::BigInt],
            rows: Rows::from_values(
                &[OutType::Text, OutType::Float, OutType::BigInt],
                &[
                    vec![
                        Value::Text("a,b".into()),
                        Value::Null,
                        Value::Int(i128::MAX),
                    ],
                    vec![Value::Text("US".into()), Value::Float(1.5), Value::Int(2)],
                ],
            ),
        };
        let csv = String::from_utf8(r.to_csv()).unwrap();
        assert_eq!(
            csv,
            format!(
                "country,SUM(bid_price),n\n\"a,b\",,{}\nUS,1.5,2\n",
                i128::MAX
            )
        );
        let json = serde_json::to_string(&r.rows).unwrap();
        assert!(json.contains(&i128::MAX.to_string()));
        let ipc = r.to_arrow_ipc().unwrap();
        let reader = arrow_ipc::reader::StreamReader::try_new(&ipc[..], None).unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches[0].num_rows(), 2);
    }

    /// Time text written without allocating equals the column's own formatting, and
    /// every encoding shows a typed column the way its generic values show.
    #[test]
    fn typed_columns_encode_like_values() {
        let mut text = TimeText::default();
        for m in [
            0,
            59,
            1440 * 366 + 61,
            -1,
            -1440 * 400 - 7,
            28_000_000,
            i32::MIN + 1,
        ] {
            for t in [TimeCol::Minute, TimeCol::Hour, TimeCol::Day, TimeCol::Week] {
                let b = t.bucket(m);
                assert_eq!(text.format(t, b), t.format(b), "{t:?} {m}");
            }
        }
        let names: Arc<[String]> = vec![String::new(), "US".into(), "x\"y".into()].into();
        let typed = Rows::new(vec![
            Data::Time(TimeCol::Hour, vec![120, NULL_TIME, 60]),
            Data::Code(names, vec![2, 0, 1]),
            Data::Int(vec![Some(-3), None, Some(i64::MAX)]),
        ]);
        let values: Vec<Vec<Value>> = (0..3).map(|r| typed.row(r)).collect();
        let types = [OutType::Text, OutType::Text, OutType::Int];
        let generic = Rows::from_values(&types, &values);
        let set = |rows: Rows| ResultSet {
            columns: vec!["hour".into(), "country".into(), "n".into()],
            types: types.to_vec(),
            rows,
        };
        let (a, b) = (set(typed), set(generic));
        assert_eq!(
            serde_json::to_string(&a.rows).unwrap(),
            serde_json::to_string(&b.rows).unwrap()
        );
        assert_eq!(a.to_csv(), b.to_csv());
        assert_eq!(a.to_batch().unwrap(), b.to_batch().unwrap());
    }

    /// The JSON written straight from the columns is the JSON serde writes for their cells
    /// as values, byte for byte: every kind of cell, NULLs, floats of any bits (not
    /// finite: null), sums past 64 bits, texts that need escaping, answers of many chunks.
    #[test]
    fn json_written_from_columns_is_serdes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let texts = [
            "",
            "US",
            "a\"b",
            "back\\slash",
            "tab\t",
            "\u{1}\u{1f}",
            "é✓",
            "</x>",
        ];
        let names: Arc<[String]> = texts.iter().map(|t| t.to_string()).collect();
        for rows in [0, 1, 7, 5_000] {
            let some = |rng: &mut rand_chacha::ChaCha8Rng| rng.gen_bool(0.9);
            let times = |t: TimeCol, rng: &mut rand_chacha::ChaCha8Rng| {
                let v = (0..rows)
                    .map(|_| match rng.gen_bool(0.9) {
                        true => t.bucket(rng.gen_range(-2_000_000..30_000_000)),
                        false => NULL_TIME,
                    })
                    .collect();
                Data::Time(t, v)
            };
            let columns = vec![
                Data::Int(
                    (0..rows)
                        .map(|_| some(&mut rng).then(|| rng.gen()))
                        .collect(),
                ),
                Data::BigInt(
                    (0..rows)
                        .map(|_| some(&mut rng).then(|| rng.gen::<i128>() >> rng.gen_range(0..100)))
                        .collect(),
                ),
                Data::Float(
                    (0..rows)
                        .map(|_| {
                            some(&mut rng).then(|| match rng.gen_range(0..3) {
                                0 => f64::from_bits(rng.gen()),
                                1 => rng.gen_range(-1e6..1e6),
                                _ => f64::from(rng.gen_range(-5..5)) / 4.0,
                            })
                        })
                        .collect(),
                ),
                times(TimeCol::Minute, &mut rng),
                times(TimeCol::Hour, &mut rng),
                times(TimeCol::Day, &mut rng),
                times(TimeCol::Week, &mut rng),
                Data::Code(
                    names.clone(),
                    (0..rows)
                        .map(|_| rng.gen_range(0..texts.len() as u16))
                        .collect(),
                ),
                Data::Text(
                    (0..rows)
                        .map(|_| {
                            some(&mut rng).then(|| texts[rng.gen_range(0..texts.len())].into())
                        })
                        .collect(),
                ),
            ];
            let rows = Rows::new(columns);
            let mut written = Vec::new();
            rows.write_json(&mut written).unwrap();
            let values: Vec<Vec<Value>> = (0..rows.len()).map(|r| rows.row(r)).collect();
            let want = serde_json::to_string(&values).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), want);
            assert_eq!(serde_json::to_string(&rows).unwrap(), want);
        }
    }
}
