//! DuckDB through its C API, where the `duckdb` crate falls short of what the table needs:
//! the database file is attached here with the table's row group size and the crate's
//! connections are made on it, and the table's write transactions run on a connection of
//! their own whose appends write table batches straight into DuckDB vectors. Event types
//! and countries go in as their `ENUM` codes, prices as their 64-bit integers, UUIDs as
//! DuckDB keeps them. Through the crate's Arrow appender every text became a DuckDB
//! string, which the appender then looked up to cast it to the `ENUM`, and every value
//! took a call: a fifth of DuckDB's thread in a cold build.
//!
//! Every handle here belongs to the table's DuckDB thread.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::ptr;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, Int32Type, Int64Type,
};
use duckdb::{ffi, Connection};

use crate::error::{Error, Result};
use crate::model::codes::TextCodes;

/// A DuckDB failure with its message.
fn failure(message: impl Into<String>) -> Error {
    Error::DuckDb(duckdb::Error::DuckDBFailure(
        ffi::Error::new(ffi::DuckDBError),
        Some(message.into()),
    ))
}

/// A C string of `text`, which must hold no NUL byte.
fn c_string(text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| failure(format!("{text:?} holds a NUL byte")))
}

/// A message DuckDB gave (not to be freed), or `otherwise`.
///
/// # Safety
/// `message` is null or a NUL-terminated string.
unsafe fn message(message: *const c_char, otherwise: &str) -> String {
    match message.is_null() {
        true => otherwise.to_string(),
        false => CStr::from_ptr(message).to_string_lossy().into_owned(),
    }
}

/// A database opened through the C API. Closing it (on drop) leaves the database itself
/// open while connections made from it are.
pub struct Database(ffi::duckdb_database);

// SAFETY: DuckDB's database handle may be used from any thread.
unsafe impl Send for Database {}

/// The name the database file is attached under. DuckDB's main database is an in-memory
/// one holding nothing, because only an attached database takes a row group size; every
/// connection made here reads and writes the attached one.
pub const ATTACHED: &str = "rollupd";

/// Rows per row group of the database file (DuckDB's default is 122,880). The table's rows
/// are in file order, each file's by day, so a day of every file sits in a row group of
/// each; DuckDB skips row groups by their columns' ranges, so a time range reads a
/// quarter as many rows as in row groups of the default size. Measured on copies of the
/// bench table: an hour of `ts` as fast as with 16,384 rows, and full scans as fast as
/// with the default (16,384 rows made them ~10% slower; 8,192 and 4,096 no faster for
/// time ranges). It applies to row groups written from then on (the table's schema
/// version 2 is copied anew on open).
pub const ROW_GROUP_ROWS: u64 = 32_768;

impl Database {
    /// Opens the database file at `path` (created if missing) with `settings`: DuckDB
    /// configuration options by name. DuckDB spills to `<path>.tmp`.
    pub fn open(path: &Path, settings: &[(&str, String)]) -> Result<Database> {
        let mut spill = path.as_os_str().to_owned();
        spill.push(".tmp");
        let spill = ("temp_directory", spill.to_string_lossy().into_owned());
        let db = Database::open_memory(settings.iter().chain([&spill]))?;
        db.connect()?.execute(&attach_sql(path, ATTACHED))?;
        Ok(db)
    }

    /// An in-memory database with `settings`, before the file is attached.
    fn open_memory<'a>(
        settings: impl IntoIterator<Item = &'a (&'a str, String)>,
    ) -> Result<Database> {
        let c_path = c_string(":memory:")?;
        // SAFETY: the config is created, used and destroyed here; the out-pointers are
        // valid, and the error string DuckDB allocates is freed once read.
        unsafe {
            let mut config: ffi::duckdb_config = ptr::null_mut();
            if ffi::duckdb_create_config(&mut config) != ffi::DuckDBSuccess {
                return Err(failure("DuckDB could not create a configuration"));
            }
            for (name, value) in settings {
                let (c_name, c_value) = (c_string(name)?, c_string(value)?);
                if ffi::duckdb_set_config(config, c_name.as_ptr(), c_value.as_ptr())
                    != ffi::DuckDBSuccess
                {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(failure(format!(
                        "DuckDB refused the setting {name} = {value}"
                    )));
                }
            }
            let (mut db, mut error): (ffi::duckdb_database, *mut c_char) =
                (ptr::null_mut(), ptr::null_mut());
            let state = ffi::duckdb_open_ext(c_path.as_ptr(), &mut db, config, &mut error);
            ffi::duckdb_destroy_config(&mut config);
            if state != ffi::DuckDBSuccess {
                let why = message(error, "DuckDB could not open the database");
                if !error.is_null() {
                    ffi::duckdb_free(error.cast());
                }
                return Err(failure(why));
            }
            Ok(Database(db))
        }
    }

    /// A connection of the `duckdb` crate (it may outlive this handle).
    pub fn connection(&self) -> Result<Connection> {
        // SAFETY: the handle is open, and connections made from it keep the database
        // alive; the crate does not close a database it did not open.
        let conn = unsafe { Connection::open_from_raw(self.0) }?;
        conn.execute_batch(&use_attached())?;
        Ok(conn)
    }

    /// A connection for write transactions.
    pub fn writer(&self) -> Result<Writer> {
        let writer = self.connect()?;
        writer.execute(&use_attached())?;
        Ok(writer)
    }

    /// A connection of the C API, on the in-memory database until told otherwise.
    fn connect(&self) -> Result<Writer> {
        let mut conn: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: the handle is open and the out-pointer valid.
        match unsafe { ffi::duckdb_connect(self.0, &mut conn) } {
            ffi::DuckDBSuccess => Ok(Writer(conn)),
            _ => Err(failure("DuckDB could not open a connection")),
        }
    }
}

/// The statement that attaches the database file at `path` as `name`, its new row groups
/// of `ROW_GROUP_ROWS` rows.
pub fn attach_sql(path: &Path, name: &str) -> String {
    format!(
        "ATTACH '{}' AS {name} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})",
        path.to_string_lossy().replace('\'', "''")
    )
}

/// The statement that makes a connection read and write the attached database file.
fn use_attached() -> String {
    format!("USE {ATTACHED}")
}

/// Another connection to `conn`'s database, reading and writing the attached file as
/// every connection made here does.
pub fn another(conn: &Connection) -> Result<Connection> {
    let other = conn.try_clone()?;
    other.execute_batch(&use_attached())?;
    Ok(other)
}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: closed once; the crate's connections hold the database itself.
        unsafe { ffi::duckdb_close(&mut self.0) }
    }
}

/// A connection for the table's write transactions: statements without answers, and
/// appends of table batches.
pub struct Writer(ffi::duckdb_connection);

// SAFETY: a connection may move between threads; it is used by one at a time.
unsafe impl Send for Writer {}

impl Drop for Writer {
    fn drop(&mut self) {
        // SAFETY: disconnected once.
        unsafe { ffi::duckdb_disconnect(&mut self.0) }
    }
}

impl Writer {
    /// Runs one statement, whose answer (if any) is dropped.
    pub fn execute(&self, sql: &str) -> Result<()> {
        let c_sql = c_string(sql)?;
        // SAFETY: the result is zero-initialised as DuckDB expects, read for its error
        // and destroyed once.
        unsafe {
            let mut result: ffi::duckdb_result = std::mem::zeroed();
            let state = ffi::duckdb_query(self.0, c_sql.as_ptr(), &mut result);
            let outcome = match state {
                ffi::DuckDBSuccess => Ok(()),
                _ => Err(failure(message(
                    ffi::duckdb_result_error(&mut result),
                    "the statement failed",
                ))),
            };
            ffi::duckdb_destroy_result(&mut result);
            outcome
        }
    }

    /// Runs `f` in a transaction: committed when it succeeds, rolled back when it fails.
    pub fn transaction<R>(&self, f: impl FnOnce(&Writer) -> Result<R>) -> Result<R> {
        self.execute("BEGIN TRANSACTION")?;
        match f(self).and_then(|r| self.execute("COMMIT").map(|()| r)) {
            Ok(r) => Ok(r),
            Err(e) => {
                let _ = self.execute("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Appends `batch` to `table`, whose columns it has, in order: integers, dates,
    /// `DECIMAL`s of up to 18 digits, UUIDs (16 bytes), and text for `ENUM` or `VARCHAR`
    /// columns. Fails on a text an `ENUM` does not hold, or columns that do not match.
    pub fn append(&self, table: &str, batch: &RecordBatch) -> Result<()> {
        let appender = Appender::create(self.0, table)?;
        let types = appender.column_types();
        if types.len() != batch.num_columns() {
            return Err(failure(format!(
                "{table} has {} columns, the batch {}",
                types.len(),
                batch.num_columns()
            )));
        }
        let columns = (batch.columns().iter().zip(&types))
            .map(|(array, ty)| Column::new(array, ty))
            .collect::<Result<Vec<_>>>()?;
        // SAFETY: a vector holds `duckdb_vector_size()` values.
        let size = unsafe { ffi::duckdb_vector_size() } as usize;
        let mut raw_types: Vec<ffi::duckdb_logical_type> = types.iter().map(|t| t.0).collect();
        // SAFETY: the types are the appender's, alive for the call.
        let chunk = Chunk(unsafe {
            ffi::duckdb_create_data_chunk(raw_types.as_mut_ptr(), raw_types.len() as u64)
        });
        for from in (0..batch.num_rows()).step_by(size) {
            let len = size.min(batch.num_rows() - from);
            // SAFETY: the chunk has the appender's column types, it is reset before each
            // use (its validity all valid, its vectors' pointers fetched again), and each
            // vector is written for `len` ≤ its capacity rows.
            unsafe {
                ffi::duckdb_data_chunk_reset(chunk.0);
                for (i, c) in columns.iter().enumerate() {
                    c.write(
                        ffi::duckdb_data_chunk_get_vector(chunk.0, i as u64),
                        from,
                        len,
                    )?;
                }
                ffi::duckdb_data_chunk_set_size(chunk.0, len as u64);
                if ffi::duckdb_append_data_chunk(appender.0, chunk.0) != ffi::DuckDBSuccess {
                    return Err(appender.error());
                }
            }
        }
        appender.flush()
    }
}

/// A data chunk, destroyed on drop.
struct Chunk(ffi::duckdb_data_chunk);

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the chunk was created by `duckdb_create_data_chunk` and is not used after.
        unsafe { ffi::duckdb_destroy_data_chunk(&mut self.0) };
    }
}

/// An appender, destroyed on drop.
struct Appender(ffi::duckdb_appender);

impl Appender {
    fn create(conn: ffi::duckdb_connection, table: &str) -> Result<Appender> {
        let c_table = c_string(table)?;
        let mut appender: ffi::duckdb_appender = ptr::null_mut();
        // SAFETY: the connection is open; a failed appender is still destroyed on drop.
        let state = unsafe {
            ffi::duckdb_appender_create(conn, ptr::null(), c_table.as_ptr(), &mut appender)
        };
        let appender = Appender(appender);
        match state {
            ffi::DuckDBSuccess => Ok(appender),
            _ => Err(appender.error()),
        }
    }

    fn column_types(&self) -> Vec<LogicalType> {
        // SAFETY: the appender is valid; each type returned is owned and destroyed on drop.
        unsafe {
            (0..ffi::duckdb_appender_column_count(self.0))
                .map(|i| LogicalType(ffi::duckdb_appender_column_type(self.0, i)))
                .collect()
        }
    }

    fn error(&self) -> Error {
        // SAFETY: the appender's error string lives as long as the appender.
        failure(unsafe { message(ffi::duckdb_appender_error(self.0), "the append failed") })
    }

    fn flush(&self) -> Result<()> {
        // SAFETY: the appender is valid.
        match unsafe { ffi::duckdb_appender_flush(self.0) } {
            ffi::DuckDBSuccess => Ok(()),
            _ => Err(self.error()),
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: destroyed once (it flushes nothing: `append` flushed what it had).
            unsafe { ffi::duckdb_appender_destroy(&mut self.0) };
        }
    }
}

/// A logical type DuckDB gave, destroyed on drop.
struct LogicalType(ffi::duckdb_logical_type);

impl Drop for LogicalType {
    fn drop(&mut self) {
        // SAFETY: destroyed once.
        unsafe { ffi::duckdb_destroy_logical_type(&mut self.0) }
    }
}

impl LogicalType {
    fn id(&self) -> ffi::duckdb_type {
        // SAFETY: the type is valid.
        unsafe { ffi::duckdb_get_type_id(self.0) }
    }

    /// An `ENUM`'s values, in code order, and the integer type of its codes.
    fn dictionary(&self) -> (Vec<String>, ffi::duckdb_type) {
        // SAFETY: the type is an ENUM; each value string is copied, then freed.
        unsafe {
            let values = (0..ffi::duckdb_enum_dictionary_size(self.0))
                .map(|i| {
                    let v = ffi::duckdb_enum_dictionary_value(self.0, u64::from(i));
                    let text = message(v, "");
                    ffi::duckdb_free(v.cast());
                    text
                })
                .collect();
            (values, ffi::duckdb_enum_internal_type(self.0))
        }
    }
}

/// How one column of a batch is written into DuckDB vectors.
struct Column<'a> {
    array: &'a ArrayRef,
    how: Write,
}

enum Write {
    /// Fixed-width values copied as they are (4 or 8 bytes).
    Copy,
    /// Decimal128 values as DuckDB's 64-bit decimals.
    Decimal64,
    /// 16 bytes as DuckDB's UUID (a 128-bit integer, its top bit flipped).
    Uuid,
    /// Text as an `ENUM`'s codes of `width` bytes.
    Enum(Codes, usize),
    /// Text as DuckDB strings.
    Text,
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, ty: &LogicalType) -> Result<Column<'a>> {
        let how = match (ty.id(), array.data_type()) {
            (ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER, DataType::Int32)
            | (ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT, DataType::Int64)
            | (ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE, DataType::Date32) => Write::Copy,
            (ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL, DataType::Decimal128(p, s))
                // SAFETY: the type is a DECIMAL.
                if unsafe {
                    ffi::duckdb_decimal_internal_type(ty.0) == ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT
                        && ffi::duckdb_decimal_width(ty.0) == *p
                        && i16::from(ffi::duckdb_decimal_scale(ty.0)) == i16::from(*s)
                } =>
            {
                Write::Decimal64
            }
            (ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID, DataType::FixedSizeBinary(16)) => Write::Uuid,
            (ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM, DataType::Utf8) => {
                let (values, internal) = ty.dictionary();
                let width = match internal {
                    ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => 1,
                    ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => 2,
                    _ => 4,
                };
                Write::Enum(enum_codes(values), width)
            }
            (ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR, DataType::Utf8) => Write::Text,
            (id, t) => {
                return Err(failure(format!(
                    "no append of Arrow {t} into DuckDB type {id}"
                )))
            }
        };
        Ok(Column { array, how })
    }

    /// Writes rows `from..from + len` into `vector`, NULLs included.
    ///
    /// # Safety
    /// `vector` has this column's type and room for `len` values.
    unsafe fn write(&self, vector: ffi::duckdb_vector, from: usize, len: usize) -> Result<()> {
        let data = ffi::duckdb_vector_get_data(vector);
        let a = self.array;
        match &self.how {
            Write::Copy => match a.data_type() {
                DataType::Int32 => copy::<Int32Type>(a, data, from, len),
                DataType::Date32 => copy::<Date32Type>(a, data, from, len),
                _ => copy::<Int64Type>(a, data, from, len),
            },
            Write::Decimal64 => {
                let values = &a.as_primitive::<Decimal128Type>().values()[from..from + len];
                let out = data.cast::<i64>();
                for (j, v) in values.iter().enumerate() {
                    out.add(j).write(*v as i64);
                }
            }
            Write::Uuid => {
                let a = a.as_fixed_size_binary();
                let out = data.cast::<i128>();
                for j in 0..len {
                    let bytes: [u8; 16] = a.value(from + j).try_into().expect("16 bytes");
                    out.add(j)
                        .write_unaligned(i128::from_be_bytes(bytes) ^ i128::MIN);
                }
            }
            Write::Enum(codes, width) => {
                let texts = a.as_string::<i32>();
                let mut last: Option<(&str, u32)> = None;
                for j in 0..len {
                    if texts.is_null(from + j) {
                        continue;
                    }
                    let text = texts.value(from + j);
                    let code = match last {
                        Some((t, c)) if t == text => c,
                        _ => codes.get(text.as_bytes()).ok_or_else(|| {
                            failure(format!("{text:?} is not a value of the column's ENUM"))
                        })?,
                    };
                    last = Some((text, code));
                    match width {
                        1 => data.cast::<u8>().add(j).write(code as u8),
                        2 => data.cast::<u16>().add(j).write(code as u16),
                        _ => data.cast::<u32>().add(j).write(code),
                    }
                }
            }
            Write::Text => {
                let texts = a.as_string::<i32>();
                for j in 0..len {
                    if !texts.is_null(from + j) {
                        let t = texts.value(from + j);
                        ffi::duckdb_vector_assign_string_element_len(
                            vector,
                            j as u64,
                            t.as_ptr().cast(),
                            t.len() as u64,
                        );
                    }
                }
            }
        }
        if let Some(nulls) = a.nulls().filter(|n| n.null_count() > 0) {
            ffi::duckdb_vector_ensure_validity_writable(vector);
            let validity = ffi::duckdb_vector_get_validity(vector);
            for j in (0..len).filter(|j| nulls.is_null(from + j)) {
                *validity.add(j / 64) &= !(1u64 << (j % 64));
            }
        }
        Ok(())
    }
}

/// Copies values `from..from + len` of a primitive array to `data`.
///
/// # Safety
/// `data` has room for `len` values of the type.
unsafe fn copy<T: ArrowPrimitiveType>(a: &ArrayRef, data: *mut c_void, from: usize, len: usize) {
    let values = &a.as_primitive::<T>().values()[from..from + len];
    ptr::copy_nonoverlapping(values.as_ptr(), data.cast::<T::Native>(), len);
}

/// An `ENUM`'s codes by text.
type Codes = TextCodes<Vec<u8>, u32>;

/// The codes of an `ENUM` whose values are `values`, in order.
fn enum_codes(values: Vec<String>) -> Codes {
    let mut codes = Codes::default();
    for (code, value) in values.into_iter().enumerate() {
        codes.insert(value.into_bytes(), code as u32);
    }
    codes
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Decimal128Array, FixedSizeBinaryArray, Int32Array, Int64Array, StringArray,
    };
    use arrow::datatypes::{Field, Schema};

    use super::*;

    /// Every connection made here reads and writes the database file, whose new row groups
    /// hold `ROW_GROUP_ROWS` rows, also once it is opened again; DuckDB spills beside it.
    #[test]
    fn connections_share_the_file_in_row_groups_of_the_set_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("it's.duckdb");
        let rows = 2 * ROW_GROUP_ROWS + 100;
        let row_groups = |conn: &Connection| -> (i64, i64) {
            conn.query_row(
                "SELECT count(DISTINCT row_group_id), max(count) \
                 FROM pragma_storage_info('t') WHERE column_name = 'i'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        {
            let db = Database::open(&path, &[]).unwrap();
            let writer = db.writer().unwrap();
            writer
                .execute(&format!(
                    "CREATE TABLE t AS SELECT range AS i FROM range({rows})"
                ))
                .unwrap();
            writer.execute("CHECKPOINT").unwrap();
            let conn = db.connection().unwrap();
            let other = another(&conn).unwrap();
            for c in [&conn, &other] {
                let n: i64 = c
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(n as u64, rows);
                assert_eq!(row_groups(c), (3, ROW_GROUP_ROWS as i64));
            }
            let spill: String = conn
                .query_row("SELECT current_setting('temp_directory')", [], |r| r.get(0))
                .unwrap();
            assert_eq!(spill, format!("{}.tmp", path.display()));
        }
        let db = Database::open(&path, &[]).unwrap();
        assert_eq!(
            row_groups(&db.connection().unwrap()),
            (3, ROW_GROUP_ROWS as i64)
        );
    }

    /// Every kind of column the table has, with NULLs, across more than one DuckDB vector,
    /// reads back as appended; a text outside an `ENUM` fails the transaction, which
    /// leaves nothing behind.
    #[test]
    fn batches_append_as_duckdb_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("t.duckdb"), &[("threads", "1".into())]).unwrap();
        let conn = db.connection().unwrap();
        let countries: Vec<String> = (0..300).map(|i| format!("c{i:03}")).collect();
        conn.execute_batch(&format!(
            "CREATE TABLE t (i INTEGER NOT NULL, b BIGINT, d DATE, p DECIMAL(18, 9), u UUID, \
             e ENUM('a', 'bb', 'ccc'), w {}, s VARCHAR)",
            crate::model::schema::enum_sql(&countries)
        ))
        .unwrap();
        let n = 5000;
        let some = |i: usize| i % 7 != 3;
        let uuid = |i: usize| {
            let mut b = [0u8; 16];
            b[0] = (i % 256) as u8;
            b[15] = (i / 256) as u8;
            b
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32))),
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| some(i).then_some(-(i as i64) << 33)),
            )),
            Arc::new(Date32Array::from_iter(
                (0..n).map(|i| some(i).then_some(i as i32 - 900)),
            )),
            Arc::new(
                Decimal128Array::from_iter(
                    (0..n).map(|i| some(i).then_some(i as i128 * 1_000_001)),
                )
                .with_precision_and_scale(18, 9)
                .unwrap(),
            ),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    (0..n).map(|i| some(i).then(|| uuid(i))),
                    16,
                )
                .unwrap(),
            ),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| some(i).then_some(["a", "bb", "ccc"][i / 100 % 3])),
            )),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| some(i).then(|| countries[i * 7 % 300].clone())),
            )),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| some(i).then(|| format!("text {i}"))),
            )),
        ];
        let fields: Vec<Field> = ["i", "b", "d", "p", "u", "e", "w", "s"]
            .iter()
            .zip(&columns)
            .map(|(name, c)| Field::new(*name, c.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let writer = db.writer().unwrap();
        writer.transaction(|w| w.append("t", &batch)).unwrap();

        let mut stmt = conn
            .prepare(
                "SELECT i, b, d - DATE '1970-01-01', CAST(CAST(p AS DECIMAL(38, 9)) * 1000000000 AS BIGINT), \
                 CAST(u AS VARCHAR), CAST(e AS VARCHAR), CAST(w AS VARCHAR), s FROM t ORDER BY i",
            )
            .unwrap();
        type Row = (
            i32,
            Option<i64>,
            Option<i32>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .unwrap()
            .collect::<duckdb::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), n);
        for (i, row) in rows.iter().enumerate() {
            let u = uuid(i);
            let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
            let text = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            let want: Row = (
                i as i32,
                some(i).then_some(-(i as i64) << 33),
                some(i).then_some(i as i32 - 900),
                some(i).then_some(i as i64 * 1_000_001),
                some(i).then_some(text),
                some(i).then(|| ["a", "bb", "ccc"][i / 100 % 3].to_string()),
                some(i).then(|| countries[i * 7 % 300].clone()),
                some(i).then(|| format!("text {i}")),
            );
            assert_eq!(row, &want, "row {i}");
        }

        let bad = batch.slice(0, 10);
        let mut columns = bad.columns().to_vec();
        columns[5] = Arc::new(StringArray::from(
            vec!["a"; 9].into_iter().chain(["zz"]).collect::<Vec<_>>(),
        ));
        let bad = RecordBatch::try_new(bad.schema(), columns).unwrap();
        let err = writer
            .transaction(|w| {
                w.execute("DELETE FROM t WHERE i < 100")?;
                w.append("t", &bad)
            })
            .unwrap_err();
        assert!(err.to_string().contains("\"zz\""), "{err}");
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, n as i64, "the failed transaction was rolled back");
    }
}
