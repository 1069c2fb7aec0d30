//! Test support: the DuckDB ground truth for the JSON query language (as the README
//! describes it), a random query generator, and a tolerant result comparison.
//!
//! * [`oracle`] / [`OracleDb`]: translate a JSON query into DuckDB SQL over the raw CSV files and
//!   return canonical JSON values (integers as JSON integers, DOUBLE as f64, time columns as their
//!   canonical text, NULL as null).
//! * [`random_query`] + [`query_context`]: seeded random queries valid per the contract.
//! * [`assert_same`]: compare a product result with the oracle's.
//! * [`self_check`]: hand-computed answers on two tiny CSV files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use duckdb::types::Value as Dv;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Number, Value};

/// The nine raw CSV columns, in the canonical header order.
pub const RAW_COLUMNS: [&str; 9] = [
    "ts",
    "type",
    "auction_id",
    "advertiser_id",
    "publisher_id",
    "bid_price",
    "user_id",
    "total_price",
    "country",
];
/// The derived time columns.
pub const TIME_COLUMNS: [&str; 4] = ["day", "week", "hour", "minute"];
/// The four event types.
pub const EVENT_TYPES: [&str; 4] = ["serve", "impression", "click", "purchase"];
/// Columns a query may group by in generated queries.
pub const GROUP_COLUMNS: [&str; 8] = [
    "type",
    "country",
    "advertiser_id",
    "publisher_id",
    "day",
    "week",
    "hour",
    "minute",
];
/// Filter columns of the "rollup-friendly" shape (same as the group columns).
pub const FRIENDLY_FILTER_COLUMNS: [&str; 8] = GROUP_COLUMNS;
/// Aggregate functions of the query language.
pub const AGG_FUNCS: [&str; 5] = ["SUM", "AVG", "COUNT", "MIN", "MAX"];

const CSV_TYPES: &str = "{'ts':'BIGINT','type':'VARCHAR','auction_id':'VARCHAR',\
'advertiser_id':'INTEGER','publisher_id':'INTEGER','bid_price':'DOUBLE','user_id':'BIGINT',\
'total_price':'DOUBLE','country':'VARCHAR'}";

const MS_PER_DAY: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Column metadata
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Double,
    Text,
    Date,
    Timestamp,
}

fn col_kind(col: &str) -> Option<Kind> {
    Some(match col {
        "ts" | "advertiser_id" | "publisher_id" | "user_id" => Kind::Int,
        "bid_price" | "total_price" => Kind::Double,
        "type" | "auction_id" | "country" => Kind::Text,
        "day" | "week" => Kind::Date,
        "hour" | "minute" => Kind::Timestamp,
        _ => return None,
    })
}

fn is_time_col(col: &str) -> bool {
    TIME_COLUMNS.contains(&col)
}

/// How a result value of an output column is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fmt {
    Plain,
    /// `2024-06-01 13:45` (the `minute` column and MIN/MAX of it).
    Minute,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------------
// Calendar helpers (proleptic Gregorian, days since 1970-01-01)
// ---------------------------------------------------------------------------------------------

/// Days since the Unix epoch of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (m as i64, d as i64);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number (days since the Unix epoch).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

/// `YYYY-MM-DD` of a day number.
pub fn format_day(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Day number of a `YYYY-MM-DD` string.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Day number of the Monday starting the ISO week that contains `days`.
pub fn monday_of(days: i64) -> i64 {
    // 1970-01-01 was a Thursday (Monday-based weekday 3).
    days - (days + 3).rem_euclid(7)
}

/// Epoch milliseconds of a UTC civil date-time.
pub fn epoch_ms(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> i64 {
    days_from_civil(y, mo, d) * MS_PER_DAY
        + (h as i64) * 3_600_000
        + (mi as i64) * 60_000
        + (s as i64) * 1000
        + ms as i64
}

fn format_micros(us: i64, fmt: Fmt) -> String {
    let days = us.div_euclid(86_400_000_000);
    let rem = us.rem_euclid(86_400_000_000) / 1_000_000;
    let (h, mi, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    match fmt {
        Fmt::Minute => format!("{} {h:02}:{mi:02}", format_day(days)),
        Fmt::Plain => format!("{} {h:02}:{mi:02}:{s:02}", format_day(days)),
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/// A ground-truth result: column labels and canonical JSON rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Oracle {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Ground truth for one query over `files`.
///
/// The files are loaded into an in-memory DuckDB. Loaded databases are cached process-wide
/// (a few entries, least recently used evicted) keyed by the paths and a hash of their full
/// contents, so repeated calls over unchanged files skip the CSV parse while any change to a
/// file's bytes reloads.
///
/// The cache is a `static`, deliberately not a `thread_local!`: with a thread-local cache the
/// databases were dropped during thread teardown, and test binaries intermittently died with
/// SIGSEGV inside glibc `malloc_trim` called from a DuckDB worker thread (DuckDB's
/// `~BlockAllocator` and buffer frees touch DuckDB's own C++ `thread_local` allocator state,
/// which may already be destroyed at that point). Never drop a DuckDB database in a
/// thread-local destructor.
pub fn oracle(files: &[PathBuf], query: &Value) -> Result<Oracle, String> {
    let key = fingerprint(files)?;
    let db = match cache_get(&key) {
        Some(db) => db,
        None => {
            let db = Arc::new(Mutex::new(OracleDb::open(files)?));
            cache_put(key, db)
        }
    };
    let db = db.lock().unwrap_or_else(|e| e.into_inner());
    db.query(query)
}

/// Paths with the length and a hash of each file's bytes.
type Fingerprint = Vec<(PathBuf, u64, u64)>;

struct CacheEntry {
    key: Fingerprint,
    db: Arc<Mutex<OracleDb>>,
    last_used: u64,
}

const CACHE_CAPACITY: usize = 4;

static CACHE: Mutex<(u64, Vec<CacheEntry>)> = Mutex::new((0, Vec::new()));

fn cache_get(key: &Fingerprint) -> Option<Arc<Mutex<OracleDb>>> {
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let (tick, entries) = &mut *guard;
    *tick += 1;
    let e = entries.iter_mut().find(|e| e.key == *key)?;
    e.last_used = *tick;
    Some(Arc::clone(&e.db))
}

/// Insert (or, if another thread won the race, return the existing entry). An evicted
/// database is dropped here, outside the lock, on an ordinary call path.
fn cache_put(key: Fingerprint, db: Arc<Mutex<OracleDb>>) -> Arc<Mutex<OracleDb>> {
    let evicted;
    let result;
    {
        let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let (tick, entries) = &mut *guard;
        *tick += 1;
        if let Some(e) = entries.iter_mut().find(|e| e.key == key) {
            e.last_used = *tick;
            return Arc::clone(&e.db);
        }
        evicted = if entries.len() >= CACHE_CAPACITY {
            let oldest = (0..entries.len())
                .min_by_key(|&i| entries[i].last_used)
                .expect("non-empty");
            Some(entries.swap_remove(oldest))
        } else {
            None
        };
        result = Arc::clone(&db);
        entries.push(CacheEntry {
            key,
            db,
            last_used: *tick,
        });
    }
    drop(evicted);
    result
}

/// Drop every cached database (e.g. at the end of a test that loaded big files).
pub fn clear_oracle_cache() {
    let entries = {
        let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut guard.1)
    };
    drop(entries);
}

fn fingerprint(files: &[PathBuf]) -> Result<Fingerprint, String> {
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            Ok((p.clone(), bytes.len() as u64, h.finish()))
        })
        .collect()
}

/// An in-memory DuckDB holding the events of some CSV files (table `ev`, with the derived
/// time columns), for running many oracle queries without re-reading the files.
pub struct OracleDb {
    conn: duckdb::Connection,
}

impl OracleDb {
    /// Load `files` (any number, including zero) into a fresh in-memory DuckDB.
    pub fn open(files: &[PathBuf]) -> Result<OracleDb, String> {
        let conn = duckdb::Connection::open_in_memory().map_err(|e| format!("duckdb open: {e}"))?;
        let source = if files.is_empty() {
            "SELECT CAST(NULL AS BIGINT) AS ts, CAST(NULL AS VARCHAR) AS type, \
             CAST(NULL AS VARCHAR) AS auction_id, CAST(NULL AS INTEGER) AS advertiser_id, \
             CAST(NULL AS INTEGER) AS publisher_id, CAST(NULL AS DOUBLE) AS bid_price, \
             CAST(NULL AS BIGINT) AS user_id, CAST(NULL AS DOUBLE) AS total_price, \
             CAST(NULL AS VARCHAR) AS country WHERE false"
                .to_string()
        } else {
            let paths: Vec<String> = files
                .iter()
                .map(|p| quote_str(&p.to_string_lossy()))
                .collect();
            let cols: Vec<String> = RAW_COLUMNS.iter().map(|c| quote_ident(c)).collect();
            format!(
                "SELECT {} FROM read_csv([{}], header=true, union_by_name=true, delim=',', \
                 types={CSV_TYPES})",
                cols.join(", "),
                paths.join(", ")
            )
        };
        let sql = format!(
            "CREATE TABLE ev AS SELECT \"ts\", \"type\", lower(\"auction_id\") AS \"auction_id\", \
             \"advertiser_id\", \"publisher_id\", \"bid_price\", \"user_id\", \"total_price\", \
             \"country\", \
             CAST(epoch_ms(\"ts\") AS DATE) AS \"day\", \
             CAST(date_trunc('week', epoch_ms(\"ts\")) AS DATE) AS \"week\", \
             date_trunc('hour', epoch_ms(\"ts\")) AS \"hour\", \
             date_trunc('minute', epoch_ms(\"ts\")) AS \"minute\" \
             FROM ({source}) AS src"
        );
        conn.execute_batch(&sql)
            .map_err(|e| format!("duckdb load failed: {e}\nSQL: {sql}"))?;
        Ok(OracleDb { conn })
    }

    /// The underlying connection (table `ev` holds the events with the derived columns).
    pub fn connection(&self) -> &duckdb::Connection {
        &self.conn
    }

    /// Number of event rows loaded.
    pub fn row_count(&self) -> Result<i64, String> {
        self.conn
            .query_row("SELECT COUNT(*) FROM ev", [], |r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string())
    }

    /// Run one JSON query.
    pub fn query(&self, query: &Value) -> Result<Oracle, String> {
        let plan = to_sql(query)?;
        self.run(&plan)
            .map_err(|e| format!("{e}\nquery: {query}\nSQL: {}", plan.sql))
    }

    /// The SQL the oracle would run for `query` (for debugging).
    pub fn sql_for(query: &Value) -> Result<String, String> {
        to_sql(query).map(|p| p.sql)
    }

    fn run(&self, plan: &Plan) -> Result<Oracle, String> {
        let mut stmt = self.conn.prepare(&plan.sql).map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let mut vals = Vec::with_capacity(plan.columns.len());
            for (i, fmt) in plan.formats.iter().enumerate() {
                let v: Dv = row.get(i).map_err(|e| e.to_string())?;
                vals.push(to_json(v, *fmt)?);
            }
            out.push(vals);
        }
        Ok(Oracle {
            columns: plan.columns.clone(),
            rows: out,
        })
    }

    /// Context for [`random_query`] from the loaded data.
    pub fn context(&self) -> Result<QueryContext, String> {
        let strings = |sql: &str| -> Result<Vec<String>, String> {
            let mut stmt = self.conn.prepare(sql).map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        };
        let ints = |sql: &str| -> Result<Vec<i32>, String> {
            let mut stmt = self.conn.prepare(sql).map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([], |r| r.get::<_, i32>(0))
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        };
        Ok(QueryContext {
            days: strings(
                "SELECT DISTINCT strftime(\"day\", '%Y-%m-%d') AS d FROM ev \
                 WHERE \"day\" IS NOT NULL ORDER BY d",
            )?,
            advertisers: ints(
                "SELECT DISTINCT advertiser_id FROM ev WHERE advertiser_id IS NOT NULL ORDER BY 1",
            )?,
            publishers: ints(
                "SELECT DISTINCT publisher_id FROM ev WHERE publisher_id IS NOT NULL ORDER BY 1",
            )?,
            countries: strings(
                "SELECT DISTINCT country FROM ev WHERE country IS NOT NULL ORDER BY 1",
            )?,
        })
    }
}

fn to_json(v: Dv, fmt: Fmt) -> Result<Value, String> {
    Ok(match v {
        Dv::Null => Value::Null,
        Dv::Boolean(b) => Value::Bool(b),
        Dv::TinyInt(i) => json!(i),
        Dv::SmallInt(i) => json!(i),
        Dv::Int(i) => json!(i),
        Dv::BigInt(i) => json!(i),
        Dv::UTinyInt(i) => json!(i),
        Dv::USmallInt(i) => json!(i),
        Dv::UInt(i) => json!(i),
        Dv::UBigInt(i) => json!(i),
        Dv::HugeInt(i) => Value::Number(
            Number::from_i128(i).ok_or_else(|| format!("HUGEINT {i} does not fit in i64/u64"))?,
        ),
        Dv::UHugeInt(i) => Value::Number(
            Number::from_u128(i).ok_or_else(|| format!("UHUGEINT {i} does not fit in u64"))?,
        ),
        Dv::Float(f) => float_json(f as f64)?,
        Dv::Double(f) => float_json(f)?,
        Dv::Text(s) => Value::String(s),
        Dv::Date32(d) => Value::String(format_day(d as i64)),
        Dv::Timestamp(unit, t) => Value::String(format_micros(unit.to_micros(t), fmt)),
        other => return Err(format!("unexpected DuckDB value {other:?}")),
    })
}

fn float_json(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("non-finite float {f}"))
}

struct Plan {
    sql: String,
    columns: Vec<String>,
    formats: Vec<Fmt>,
}

fn field_str<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{what}: expected a string, got {v}"))
}

fn check_col(col: &str, what: &str) -> Result<Kind, String> {
    col_kind(col).ok_or_else(|| format!("{what}: unknown column {col:?}"))
}

/// Parse a JSON query and build the SQL.
fn to_sql(q: &Value) -> Result<Plan, String> {
    let obj = q
        .as_object()
        .ok_or_else(|| format!("query is not an object: {q}"))?;
    for key in obj.keys() {
        if !["select", "from", "where", "group_by", "order_by", "limit"].contains(&key.as_str()) {
            return Err(format!("unknown query key {key:?}"));
        }
    }
    if let Some(from) = obj.get("from") {
        if from != "events" {
            return Err(format!("from: expected \"events\", got {from}"));
        }
    }
    let select = obj
        .get("select")
        .and_then(Value::as_array)
        .ok_or("select: missing or not a list")?;
    if select.is_empty() {
        return Err("select: empty".into());
    }

    // group_by
    let mut group_by: Vec<String> = Vec::new();
    if let Some(g) = obj.get("group_by") {
        let g = g.as_array().ok_or("group_by: not a list")?;
        for c in g {
            let c = field_str(c, "group_by")?;
            check_col(c, "group_by")?;
            if group_by.iter().any(|x| x == c) {
                return Err(format!("group_by: duplicate column {c:?}"));
            }
            group_by.push(c.to_string());
        }
    }

    // select
    let mut labels: Vec<String> = Vec::new();
    let mut exprs: Vec<String> = Vec::new();
    let mut formats: Vec<Fmt> = Vec::new();
    let mut plain: Vec<String> = Vec::new();
    let mut n_aggs = 0;
    for item in select {
        match item {
            Value::String(c) => {
                check_col(c, "select")?;
                labels.push(c.clone());
                exprs.push(quote_ident(c));
                formats.push(if c == "minute" {
                    Fmt::Minute
                } else {
                    Fmt::Plain
                });
                plain.push(c.clone());
            }
            Value::Object(m) if m.len() == 1 => {
                let (func, arg) = m.iter().next().expect("one entry");
                let func = func.to_ascii_uppercase();
                if !AGG_FUNCS.contains(&func.as_str()) {
                    return Err(format!("select: unknown aggregate {func:?}"));
                }
                let arg = field_str(arg, "select aggregate argument")?;
                let (label, expr, fmt) = if arg == "*" {
                    if func != "COUNT" {
                        return Err(format!("select: {func}(*) is not allowed"));
                    }
                    ("COUNT(*)".to_string(), "COUNT(*)".to_string(), Fmt::Plain)
                } else {
                    let kind = check_col(arg, "select aggregate")?;
                    if (func == "SUM" || func == "AVG") && !matches!(kind, Kind::Int | Kind::Double)
                    {
                        return Err(format!("select: {func} of non-numeric column {arg:?}"));
                    }
                    let fmt = if arg == "minute" && (func == "MIN" || func == "MAX") {
                        Fmt::Minute
                    } else {
                        Fmt::Plain
                    };
                    (
                        format!("{func}({arg})"),
                        format!("{func}({})", quote_ident(arg)),
                        fmt,
                    )
                };
                labels.push(label);
                exprs.push(expr);
                formats.push(fmt);
                n_aggs += 1;
            }
            other => return Err(format!("select: bad item {other}")),
        }
    }
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].contains(l) {
            return Err(format!("select: duplicate output column {l:?}"));
        }
    }
    let aggregated = n_aggs > 0 || !group_by.is_empty();
    if aggregated {
        for c in &plain {
            if !group_by.contains(c) {
                return Err(format!("select: column {c:?} is not in group_by"));
            }
        }
    }

    // where
    let mut preds: Vec<String> = Vec::new();
    if let Some(w) = obj.get("where") {
        let w = w.as_array().ok_or("where: not a list")?;
        for p in w {
            preds.push(predicate_sql(p)?);
        }
    }

    // order_by
    let mut order: Vec<String> = Vec::new();
    if let Some(o) = obj.get("order_by") {
        let o = o.as_array().ok_or("order_by: not a list")?;
        for e in o {
            let col = field_str(
                e.get("col")
                    .ok_or_else(|| format!("order_by: no col in {e}"))?,
                "order_by.col",
            )?;
            if !labels.iter().any(|l| l == col) {
                return Err(format!("order_by: {col:?} is not a selected column"));
            }
            let dir = match e.get("dir") {
                None => "ASC",
                Some(d) => match field_str(d, "order_by.dir")?.to_ascii_lowercase().as_str() {
                    "asc" => "ASC",
                    "desc" => "DESC",
                    other => return Err(format!("order_by: bad dir {other:?}")),
                },
            };
            order.push(format!("{} {dir} NULLS LAST", quote_ident(col)));
        }
    }
    // Deterministic tie-breaks.
    if aggregated {
        for g in &group_by {
            order.push(format!("{} ASC NULLS LAST", quote_ident(g)));
        }
    } else {
        for l in &labels {
            order.push(format!("{} ASC NULLS LAST", quote_ident(l)));
        }
    }

    let limit = match obj.get("limit") {
        None | Some(Value::Null) => None,
        Some(l) => Some(
            l.as_u64()
                .ok_or_else(|| format!("limit: not a non-negative integer: {l}"))?,
        ),
    };

    let mut sql = String::from("SELECT ");
    let items: Vec<String> = exprs
        .iter()
        .zip(&labels)
        .map(|(e, l)| format!("{e} AS {}", quote_ident(l)))
        .collect();
    sql.push_str(&items.join(", "));
    sql.push_str(" FROM ev");
    if !preds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&preds.join(" AND "));
    }
    if !group_by.is_empty() {
        let g: Vec<String> = group_by.iter().map(|c| quote_ident(c)).collect();
        sql.push_str(" GROUP BY ");
        sql.push_str(&g.join(", "));
    }
    if !order.is_empty() {
        sql.push_str(" ORDER BY ");
        sql.push_str(&order.join(", "));
    }
    if let Some(n) = limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    Ok(Plan {
        sql,
        columns: labels,
        formats,
    })
}

fn predicate_sql(p: &Value) -> Result<String, String> {
    let col = field_str(
        p.get("col")
            .ok_or_else(|| format!("where: no col in {p}"))?,
        "where.col",
    )?;
    let kind = check_col(col, "where")?;
    let op = field_str(
        p.get("op").ok_or_else(|| format!("where: no op in {p}"))?,
        "where.op",
    )?;
    let val = p
        .get("val")
        .ok_or_else(|| format!("where: no val in {p}"))?;
    let c = quote_ident(col);
    let lit = |v: &Value| literal(col, kind, v);
    Ok(match op {
        "eq" => format!("{c} = {}", lit(val)?),
        "neq" => format!("{c} <> {}", lit(val)?),
        "lt" => format!("{c} < {}", lit(val)?),
        "lte" => format!("{c} <= {}", lit(val)?),
        "gt" => format!("{c} > {}", lit(val)?),
        "gte" => format!("{c} >= {}", lit(val)?),
        "between" => match val.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => format!("({c} BETWEEN {} AND {})", lit(lo)?, lit(hi)?),
            _ => return Err(format!("where: between needs [lo, hi], got {val}")),
        },
        "in" => {
            let list = val
                .as_array()
                .ok_or_else(|| format!("where: in needs a list, got {val}"))?;
            if list.is_empty() {
                return Err("where: in with an empty list".into());
            }
            let items = list.iter().map(lit).collect::<Result<Vec<_>, _>>()?;
            format!("{c} IN ({})", items.join(", "))
        }
        other => return Err(format!("where: unknown op {other:?}")),
    })
}

fn literal(col: &str, kind: Kind, v: &Value) -> Result<String, String> {
    match kind {
        Kind::Text => {
            let s = field_str(v, &format!("where value for {col}"))?;
            if col == "auction_id" {
                Ok(quote_str(&s.to_ascii_lowercase()))
            } else {
                Ok(quote_str(s))
            }
        }
        Kind::Int | Kind::Double => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(format!("where value for {col}: not a number: {v}")),
            };
            if kind == Kind::Int {
                if let Ok(i) = text.parse::<i64>() {
                    return Ok(format!("CAST({i} AS BIGINT)"));
                }
            }
            let f: f64 = text
                .parse()
                .map_err(|_| format!("where value for {col}: not numeric: {v}"))?;
            if !f.is_finite() {
                return Err(format!("where value for {col}: not finite: {v}"));
            }
            Ok(format!("CAST({} AS DOUBLE)", quote_str(&format!("{f:?}"))))
        }
        Kind::Date => Ok(format!(
            "CAST({} AS DATE)",
            quote_str(field_str(v, &format!("where value for {col}"))?)
        )),
        Kind::Timestamp => Ok(format!(
            "CAST({} AS TIMESTAMP)",
            quote_str(field_str(v, &format!("where value for {col}"))?)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

fn num_eq(a: &Number, b: &Number) -> bool {
    let ai = if a.is_f64() { None } else { a.as_i128() };
    let bi = if b.is_f64() { None } else { b.as_i128() };
    match (ai, bi) {
        (Some(x), Some(y)) => x == y,
        (Some(i), None) => int_float_eq(i, b.as_f64().unwrap_or(f64::NAN)),
        (None, Some(i)) => int_float_eq(i, a.as_f64().unwrap_or(f64::NAN)),
        (None, None) => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            floats_close(x, y)
        }
    }
}

fn int_float_eq(i: i128, f: f64) -> bool {
    f.is_finite() && f.fract() == 0.0 && f.abs() < 1.8e38 && f as i128 == i
}

/// Relative 1e-9, or both within 1e-12 of zero.
pub fn floats_close(x: f64, y: f64) -> bool {
    if x == y {
        return true;
    }
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || (x.abs() <= 1e-12 && y.abs() <= 1e-12)
}

/// Whether two canonical result values are equal (integers exact, floats 1e-9 relative).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

fn show_row(row: Option<&Vec<Value>>) -> String {
    match row {
        Some(r) => Value::Array(r.clone()).to_string(),
        None => "<none>".into(),
    }
}

/// Compare a product result with the oracle's. The error names the query, the first differing
/// row index and both rows.
pub fn assert_same(
    query: &Value,
    got_columns: &[String],
    got_rows: &[Vec<Value>],
    want: &Oracle,
) -> Result<(), String> {
    if got_columns != want.columns.as_slice() {
        return Err(format!(
            "query {query}\ncolumns differ: got {got_columns:?}, want {:?}",
            want.columns
        ));
    }
    let n = got_rows.len().max(want.rows.len());
    for i in 0..n {
        let (g, w) = (got_rows.get(i), want.rows.get(i));
        let same = match (g, w) {
            (Some(g), Some(w)) => {
                g.len() == w.len() && g.iter().zip(w).all(|(a, b)| values_equal(a, b))
            }
            _ => false,
        };
        if !same {
            let col = match (g, w) {
                (Some(g), Some(w)) => g
                    .iter()
                    .zip(w)
                    .position(|(a, b)| !values_equal(a, b))
                    .and_then(|j| want.columns.get(j))
                    .map(|c| format!(" (column {c:?})"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(format!(
                "query {query}\nrow count got {} want {}; first difference at row {i}{col}:\n  got  {}\n  want {}",
                got_rows.len(),
                want.rows.len(),
                show_row(g),
                show_row(w)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Random queries
// ---------------------------------------------------------------------------------------------

/// What the generator knows about the data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryContext {
    /// Canonical days present in the data, sorted.
    pub days: Vec<String>,
    pub advertisers: Vec<i32>,
    pub publishers: Vec<i32>,
    pub countries: Vec<String>,
}

/// Compute a [`QueryContext`] from the CSV files with DuckDB.
pub fn query_context(files: &[PathBuf]) -> QueryContext {
    OracleDb::open(files)
        .and_then(|db| db.context())
        .unwrap_or_else(|e| panic!("query_context: {e}"))
}

fn pick_weighted<R: Rng + ?Sized, T: Copy>(rng: &mut R, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|x| x.1).sum();
    let mut r = rng.gen_range(0..total);
    for &(v, w) in items {
        if r < w {
            return v;
        }
        r -= w;
    }
    items[items.len() - 1].0
}

/// A typed value before JSON rendering (sortable, for `between`).
#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Raw {
    I(i64),
    F(f64),
    S(String),
}

struct Gen<'a, R: Rng + ?Sized> {
    rng: &'a mut R,
    ctx: &'a QueryContext,
    /// A day most time values of the current query are drawn from (keeps filters consistent).
    focus: Option<i64>,
}

/// Non-group columns for predicates of the "anything" queries.
const OTHER_FILTER_COLUMNS: [(&str, u32); 5] = [
    ("ts", 10),
    ("bid_price", 10),
    ("total_price", 10),
    ("user_id", 10),
    ("auction_id", 3),
];

/// Operator weights for columns with few distinct values.
const OPS_BROAD: [(&str, u32); 8] = [
    ("eq", 30),
    ("neq", 10),
    ("lt", 8),
    ("lte", 8),
    ("gt", 8),
    ("gte", 8),
    ("between", 14),
    ("in", 14),
];
/// Operator weights for near-unique columns (eq/in would almost always match nothing).
const OPS_NARROW: [(&str, u32); 8] = [
    ("eq", 10),
    ("neq", 10),
    ("lt", 12),
    ("lte", 12),
    ("gt", 12),
    ("gte", 12),
    ("between", 26),
    ("in", 10),
];

impl<R: Rng + ?Sized> Gen<'_, R> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    /// A day number near the data (mostly a day present in it).
    fn day(&mut self) -> i64 {
        if let Some(f) = self.focus {
            if self.chance(0.8) {
                return f;
            }
        }
        self.any_day()
    }

    fn any_day(&mut self) -> i64 {
        let base = if self.ctx.days.is_empty() {
            days_from_civil(2024, 6, 1)
        } else {
            let d = self.ctx.days.choose(self.rng).expect("non-empty");
            parse_day(d).unwrap_or_else(|| days_from_civil(2024, 6, 1))
        };
        if self.chance(0.9) {
            base
        } else {
            base + self.rng.gen_range(-3..=3)
        }
    }

    fn raw_value(&mut self, col: &str) -> Raw {
        match col {
            "type" => Raw::S(EVENT_TYPES.choose(self.rng).expect("types").to_string()),
            "country" => {
                if !self.ctx.countries.is_empty() && self.chance(0.85) {
                    Raw::S(self.ctx.countries.choose(self.rng).expect("c").clone())
                } else {
                    Raw::S(
                        ["ZZ", "AA", "US", "JP", "DE"]
                            .choose(self.rng)
                            .expect("c")
                            .to_string(),
                    )
                }
            }
            "advertiser_id" | "publisher_id" => {
                let ids = if col == "advertiser_id" {
                    &self.ctx.advertisers
                } else {
                    &self.ctx.publishers
                };
                if !ids.is_empty() && self.chance(0.85) {
                    Raw::I(*ids.choose(self.rng).expect("ids") as i64)
                } else {
                    let (lo, hi) = match (ids.first(), ids.last()) {
                        (Some(&a), Some(&b)) => (a as i64 - 3, b as i64 + 3),
                        _ => (0, 100),
                    };
                    Raw::I(self.rng.gen_range(lo..=hi))
                }
            }
            "ts" => {
                let d = self.day();
                Raw::I(d * MS_PER_DAY + self.rng.gen_range(0..MS_PER_DAY))
            }
            "user_id" => Raw::I(if self.chance(0.7) {
                self.rng.gen_range(0..1_000_000)
            } else {
                self.rng.gen_range(0..i64::MAX / 2)
            }),
            "bid_price" | "total_price" => {
                let scales: &[f64] = if col == "bid_price" {
                    &[1.0, 1.0, 1.0, 10.0]
                } else {
                    &[1.0, 10.0, 100.0, 1000.0]
                };
                let s = *scales.choose(self.rng).expect("scales");
                let x = (self.rng.gen_range(0.0..1.0) * s * 1e6).round() / 1e6;
                Raw::F(x)
            }
            "auction_id" => {
                let a: u128 = self.rng.gen();
                let h = format!("{a:032x}");
                Raw::S(format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            "day" => Raw::S(format_day(self.day())),
            "week" => {
                let d = self.day();
                Raw::S(format_day(monday_of(d)))
            }
            "hour" => {
                let d = self.day();
                Raw::S(format!(
                    "{} {:02}:00:00",
                    format_day(d),
                    self.rng.gen_range(0..24)
                ))
            }
            "minute" => {
                let d = self.day();
                Raw::S(format!(
                    "{} {:02}:{:02}",
                    format_day(d),
                    self.rng.gen_range(0..24),
                    self.rng.gen_range(0..60)
                ))
            }
            other => panic!("raw_value: unknown column {other}"),
        }
    }

    /// Render as JSON; numeric values sometimes as numeric strings.
    fn render(&mut self, v: Raw) -> Value {
        let as_string = self.chance(0.15);
        match v {
            Raw::I(i) if as_string => Value::String(i.to_string()),
            Raw::I(i) => json!(i),
            Raw::F(f) if as_string => Value::String(f.to_string()),
            Raw::F(f) => json!(f),
            Raw::S(s) => Value::String(s),
        }
    }

    fn predicate(&mut self, col: &str) -> Value {
        let ops = match col {
            "type" | "country" | "advertiser_id" | "publisher_id" | "day" | "week" => &OPS_BROAD,
            _ => &OPS_NARROW,
        };
        let op = pick_weighted(self.rng, ops);
        self.predicate_op(col, op)
    }

    fn predicate_op(&mut self, col: &str, op: &str) -> Value {
        let val = match op {
            "between" if matches!(col, "hour" | "minute") && self.chance(0.7) => {
                // A short window starting at a random time of a data day.
                let d = self.day();
                let start = d * 1440 + self.rng.gen_range(0..1440);
                let (step, max_steps, fmt) = if col == "hour" {
                    (60, 12, Fmt::Plain)
                } else {
                    (1, 180, Fmt::Minute)
                };
                let start = start - start.rem_euclid(step);
                let end = start + step * self.rng.gen_range(0..=max_steps);
                let show = |m: i64| format_micros(m * 60_000_000, fmt);
                json!([show(start), show(end)])
            }
            "between" => {
                let a = self.raw_value(col);
                let b = self.raw_value(col);
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let (lo, hi) = (self.render(lo), self.render(hi));
                json!([lo, hi])
            }
            "in" => {
                let n = self.rng.gen_range(1..=4);
                let vals: Vec<Value> = (0..n)
                    .map(|_| {
                        let v = self.raw_value(col);
                        self.render(v)
                    })
                    .collect();
                Value::Array(vals)
            }
            _ => {
                let v = self.raw_value(col);
                self.render(v)
            }
        };
        json!({"col": col, "op": op, "val": val})
    }

    /// Filters keeping one or a few days (for hour/minute group-bys).
    fn push_day_restriction(&mut self, preds: &mut Vec<Value>, max_days: i64) {
        let d = self.day();
        match self.rng.gen_range(0..4) {
            0 => preds.push(json!({"col": "day", "op": "eq", "val": format_day(d)})),
            1 => {
                let k = self.rng.gen_range(0..max_days);
                preds.push(json!({"col": "day", "op": "between",
                                  "val": [format_day(d), format_day(d + k)]}));
            }
            2 => {
                let n = self.rng.gen_range(1..=max_days);
                let vals: Vec<String> = (0..n).map(|_| format_day(self.day())).collect();
                preds.push(json!({"col": "day", "op": "in", "val": vals}));
            }
            _ => {
                let k = self.rng.gen_range(0..max_days);
                preds.push(json!({"col": "day", "op": "gte", "val": format_day(d)}));
                preds.push(json!({"col": "day", "op": "lte", "val": format_day(d + k)}));
            }
        }
    }

    fn empty_predicate(&mut self) -> Value {
        match self.rng.gen_range(0..6) {
            0 => json!({"col": "day", "op": "eq", "val": "2023-07-04"}),
            1 => json!({"col": "day", "op": "between", "val": ["2025-01-01", "2025-03-01"]}),
            2 => json!({"col": "country", "op": "eq", "val": "ZZ"}),
            3 => json!({"col": "week", "op": "eq", "val": "2019-12-30"}),
            4 => json!({"col": "advertiser_id", "op": "in", "val": [-7, -8]}),
            _ => json!({"col": "minute", "op": "lt", "val": "2020-01-01 00:00"}),
        }
    }

    fn n_preds(&mut self, friendly: bool) -> usize {
        if friendly {
            pick_weighted(self.rng, &[(0usize, 25), (1, 40), (2, 25), (3, 10)])
        } else {
            pick_weighted(self.rng, &[(0usize, 10), (1, 35), (2, 35), (3, 20)])
        }
    }

    fn func_name(&mut self, f: &str) -> String {
        match self.rng.gen_range(0..10) {
            0 => f.to_ascii_lowercase(),
            1 => {
                let mut s = f[..1].to_string();
                s.push_str(&f[1..].to_ascii_lowercase());
                s
            }
            _ => f.to_string(),
        }
    }

    fn aggregate(&mut self, friendly: bool) -> (String, String) {
        if friendly || self.chance(0.25) {
            if self.chance(0.25) {
                return ("COUNT".into(), "*".into());
            }
            let f = *AGG_FUNCS.choose(self.rng).expect("f");
            let c = *["bid_price", "total_price"].choose(self.rng).expect("c");
            return (f.into(), c.into());
        }
        self.unfriendly_aggregate()
    }

    /// An aggregate outside the rollup-friendly set (integer columns, COUNT of other columns,
    /// MIN/MAX of time and text columns).
    fn unfriendly_aggregate(&mut self) -> (String, String) {
        match pick_weighted(self.rng, &[(0, 55), (1, 20), (2, 25)]) {
            0 => {
                let f = *AGG_FUNCS.choose(self.rng).expect("f");
                let c = *["advertiser_id", "publisher_id", "ts", "user_id"]
                    .choose(self.rng)
                    .expect("c");
                (f.into(), c.into())
            }
            1 => {
                let c = *["type", "country", "day", "auction_id", "minute"]
                    .choose(self.rng)
                    .expect("c");
                ("COUNT".into(), c.into())
            }
            _ => {
                let f = *["MIN", "MAX"].choose(self.rng).expect("f");
                let c = *["day", "week", "hour", "minute", "type", "country"]
                    .choose(self.rng)
                    .expect("c");
                (f.into(), c.into())
            }
        }
    }

    fn aggregate_query(&mut self, friendly: bool) -> Value {
        let ngroup = pick_weighted(self.rng, &[(0usize, 22), (1, 40), (2, 26), (3, 12)]);
        let group_by: Vec<&str> = GROUP_COLUMNS
            .choose_multiple(self.rng, ngroup)
            .copied()
            .collect();

        // Aggregates (distinct labels).
        let nagg = if friendly {
            pick_weighted(self.rng, &[(1usize, 55), (2, 30), (3, 15)])
        } else {
            pick_weighted(self.rng, &[(1usize, 30), (2, 40), (3, 30)])
        };
        let mut aggs: Vec<(String, String)> = Vec::new();
        let null_flavor = self.chance(0.1);
        if null_flavor {
            // Aggregates over values that are all NULL in the filtered groups.
            if self.chance(0.6) {
                let f = *["SUM", "AVG", "MIN", "MAX", "COUNT"]
                    .choose(self.rng)
                    .expect("f");
                aggs.push((f.into(), "total_price".into()));
            } else {
                let f = *["SUM", "AVG", "MIN", "MAX"].choose(self.rng).expect("f");
                aggs.push((f.into(), "bid_price".into()));
            }
        }
        for attempt in 0..50 {
            if aggs.len() >= nagg {
                break;
            }
            // "Anything" queries carry at least one aggregate outside the rollup-friendly set.
            let a = if !friendly && attempt == 0 {
                self.unfriendly_aggregate()
            } else {
                self.aggregate(friendly)
            };
            if !aggs.contains(&a) {
                aggs.push(a);
            }
        }

        // Filters.
        let mut preds: Vec<Value> = Vec::new();
        if group_by.contains(&"minute") || group_by.contains(&"hour") || self.chance(0.5) {
            self.focus = Some(self.any_day());
        }
        let n = self.n_preds(friendly);
        for _ in 0..n {
            let col = if friendly || self.chance(0.4) {
                *FRIENDLY_FILTER_COLUMNS.choose(self.rng).expect("col")
            } else {
                pick_weighted(self.rng, &OTHER_FILTER_COLUMNS)
            };
            let p = self.predicate(col);
            preds.push(p);
        }
        if null_flavor {
            let p = if aggs[0].1 == "total_price" {
                match self.rng.gen_range(0..3) {
                    0 => json!({"col": "type", "op": "eq", "val": "serve"}),
                    1 => json!({"col": "type", "op": "neq", "val": "purchase"}),
                    _ => json!({"col": "type", "op": "in", "val": ["impression", "click"]}),
                }
            } else {
                json!({"col": "type", "op": "eq", "val": "purchase"})
            };
            preds.push(p);
        }
        if self.chance(0.06) {
            let p = self.empty_predicate();
            preds.push(p);
        }
        if group_by.contains(&"minute") {
            self.push_day_restriction(&mut preds, 1);
        } else if group_by.contains(&"hour") {
            self.push_day_restriction(&mut preds, 3);
        }
        preds.shuffle(self.rng);

        // Select list.
        let mut shown: Vec<&str> = group_by.clone();
        if !friendly && shown.len() >= 2 && self.chance(0.15) {
            let i = self.rng.gen_range(0..shown.len());
            shown.remove(i);
        }
        shown.shuffle(self.rng);
        let mut select: Vec<Value> = shown.iter().map(|c| json!(c)).collect();
        let mut labels: Vec<String> = shown.iter().map(|c| c.to_string()).collect();
        for (f, c) in &aggs {
            let name = self.func_name(f);
            let mut m = serde_json::Map::new();
            m.insert(name, json!(c));
            select.push(Value::Object(m));
            labels.push(format!("{f}({c})"));
        }
        if self.chance(0.2) {
            select.shuffle(self.rng);
        }

        let mut q = json!({"select": select, "from": "events"});
        if !preds.is_empty() || self.chance(0.05) {
            q["where"] = Value::Array(preds);
        }
        if !group_by.is_empty() {
            q["group_by"] = json!(group_by);
            if self.chance(0.5) {
                q["order_by"] = self.order_by(&labels);
            }
            if self.chance(0.3) {
                q["limit"] = json!(self.rng.gen_range(0..=50));
            }
        } else if self.chance(0.04) {
            q["limit"] = json!(self.rng.gen_range(0..=2));
        }
        q
    }

    fn order_by(&mut self, labels: &[String]) -> Value {
        let n = self.rng.gen_range(1..=2.min(labels.len()));
        let cols: Vec<&String> = labels.choose_multiple(self.rng, n).collect();
        let entries: Vec<Value> = cols
            .into_iter()
            .map(|c| match self.rng.gen_range(0..3) {
                0 => json!({"col": c}),
                1 => json!({"col": c, "dir": "asc"}),
                _ => json!({"col": c, "dir": "desc"}),
            })
            .collect();
        Value::Array(entries)
    }

    fn raw_query(&mut self) -> Value {
        let all: Vec<&str> = RAW_COLUMNS
            .iter()
            .chain(TIME_COLUMNS.iter())
            .copied()
            .collect();
        let n = self.rng.gen_range(1..=4);
        let cols: Vec<&str> = all.choose_multiple(self.rng, n).copied().collect();
        let mut preds: Vec<Value> = Vec::new();
        if self.chance(0.5) {
            self.focus = Some(self.any_day());
        }
        let np = self.n_preds(false);
        for _ in 0..np {
            let col = if self.chance(0.5) {
                *all.choose(self.rng).expect("col")
            } else {
                pick_weighted(self.rng, &OTHER_FILTER_COLUMNS)
            };
            let p = self.predicate(col);
            preds.push(p);
        }
        if self.chance(0.05) {
            let p = self.empty_predicate();
            preds.push(p);
        }
        let labels: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        let mut q = json!({"select": cols, "from": "events"});
        if !preds.is_empty() {
            q["where"] = Value::Array(preds);
        }
        if self.chance(0.5) {
            q["order_by"] = self.order_by(&labels);
        }
        q["limit"] = json!(if self.chance(0.05) {
            0
        } else {
            self.rng.gen_range(1..=20)
        });
        q
    }
}

/// A random query valid per the contract: ~70% rollup-friendly aggregates, ~14% raw-row selects
/// (always with `limit` ≤ 20), ~16% aggregates over anything.
pub fn random_query(rng: &mut impl Rng, ctx: &QueryContext) -> Value {
    let mut g = Gen {
        rng,
        ctx,
        focus: None,
    };
    let r: f64 = g.rng.gen();
    if r < 0.70 {
        g.aggregate_query(true)
    } else if r < 0.84 {
        g.raw_query()
    } else {
        g.aggregate_query(false)
    }
}

/// All comparison ops, evenly weighted.
const OPS_ALL: [(&str, u32); 8] = [
    ("eq", 1),
    ("neq", 1),
    ("lt", 1),
    ("lte", 1),
    ("gt", 1),
    ("gte", 1),
    ("between", 1),
    ("in", 1),
];

/// A random aggregate query on rollup columns only: filters on every group column with
/// every op, price aggregates and COUNTs of key columns, often order_by and limit.
pub fn rollup_query(rng: &mut impl Rng, ctx: &QueryContext) -> Value {
    let mut g = Gen {
        rng,
        ctx,
        focus: None,
    };
    g.focus = Some(g.any_day());
    let ngroup = g.rng.gen_range(0..=3);
    let group_by: Vec<&str> = GROUP_COLUMNS
        .choose_multiple(g.rng, ngroup)
        .copied()
        .collect();
    let mut preds: Vec<Value> = Vec::new();
    for _ in 0..g.rng.gen_range(1..=3) {
        let col = *FRIENDLY_FILTER_COLUMNS.choose(g.rng).expect("col");
        let op = pick_weighted(g.rng, &OPS_ALL);
        preds.push(g.predicate_op(col, op));
    }
    if group_by.contains(&"minute") {
        g.push_day_restriction(&mut preds, 1);
    } else if group_by.contains(&"hour") {
        g.push_day_restriction(&mut preds, 3);
    }
    let mut select: Vec<Value> = group_by.iter().map(|c| json!(c)).collect();
    let mut labels: Vec<String> = group_by.iter().map(|c| c.to_string()).collect();
    for _ in 0..g.rng.gen_range(1..=3) {
        let (f, c) = if g.chance(0.2) {
            let c = *GROUP_COLUMNS.choose(g.rng).expect("col");
            ("COUNT".to_string(), c.to_string())
        } else {
            g.aggregate(true)
        };
        let label = format!("{f}({c})");
        if !labels.contains(&label) {
            select.push(json!({ f: c }));
            labels.push(label);
        }
    }
    let mut q = json!({"select": select, "where": preds});
    if !group_by.is_empty() {
        q["group_by"] = json!(group_by);
    }
    if g.chance(0.6) {
        q["order_by"] = g.order_by(&labels);
    }
    if g.chance(0.5) {
        q["limit"] = json!(g.rng.gen_range(0..=20));
    }
    q
}

/// Descriptive tags of a query (for coverage statistics): `shape:raw|global|grouped`,
/// `friendly`, `op:<op>`, `pred:<col>`, `pred:<col>:<op>`, `agg:<FUNC>`, `agg:<FUNC(col)>`,
/// `group:<col>`, `ngroup:<n>`, `order_by`, `limit`, `hidden_group` (a group column not selected).
pub fn query_tags(q: &Value) -> Vec<String> {
    let mut tags = Vec::new();
    let select = q["select"].as_array().cloned().unwrap_or_default();
    let group_by: Vec<String> = q["group_by"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let aggs: Vec<(String, String)> = select
        .iter()
        .filter_map(|s| s.as_object())
        .filter_map(|m| m.iter().next())
        .map(|(f, c)| (f.to_ascii_uppercase(), c.as_str().unwrap_or("").to_string()))
        .collect();
    let shape = if aggs.is_empty() && group_by.is_empty() {
        "raw"
    } else if group_by.is_empty() {
        "global"
    } else {
        "grouped"
    };
    tags.push(format!("shape:{shape}"));
    let mut friendly = shape != "raw";
    for p in q["where"].as_array().cloned().unwrap_or_default() {
        let col = p["col"].as_str().unwrap_or("").to_string();
        let op = p["op"].as_str().unwrap_or("").to_string();
        if !FRIENDLY_FILTER_COLUMNS.contains(&col.as_str()) {
            friendly = false;
        }
        tags.push(format!("op:{op}"));
        tags.push(format!("pred:{col}"));
        tags.push(format!("pred:{col}:{op}"));
    }
    for (f, c) in &aggs {
        if !(c == "*" || c == "bid_price" || c == "total_price") {
            friendly = false;
        }
        tags.push(format!("agg:{f}"));
        tags.push(format!("agg:{f}({c})"));
    }
    for g in &group_by {
        tags.push(format!("group:{g}"));
        if !select.iter().any(|s| s.as_str() == Some(g)) {
            tags.push("hidden_group".into());
        }
    }
    tags.push(format!("ngroup:{}", group_by.len()));
    if friendly {
        tags.push("friendly".into());
    }
    if q.get("order_by").is_some() {
        tags.push("order_by".into());
    }
    if q.get("limit").is_some() {
        tags.push("limit".into());
    }
    tags.sort();
    tags.dedup();
    tags
}

/// Count tags over many queries.
pub fn tag_counts<'a>(queries: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for q in queries {
        for t in query_tags(q) {
            *m.entry(t).or_insert(0) += 1;
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Self-check
// ---------------------------------------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

fn check(files: &[PathBuf], q: Value, want_cols: &[&str], want_rows: Value) {
    let got = oracle(files, &q).unwrap_or_else(|e| panic!("oracle failed: {e}"));
    let want = Oracle {
        columns: want_cols.iter().map(|s| s.to_string()).collect(),
        rows: want_rows
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").clone())
            .collect(),
    };
    if let Err(e) = assert_same(&q, &got.columns, &got.rows, &want) {
        panic!(
            "oracle self-check failed:\n{e}\nSQL: {:?}",
            OracleDb::sql_for(&q)
        );
    }
}

/// Hand-computed oracle answers over two tiny CSV files (one with columns in another order and
/// an extra column, with empty fields), plus comparison and zero-file checks. Panics on failure.
pub fn self_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = |d: u32, h: u32, mi: u32, s: u32, ms: u32| {
        if d == 31 {
            epoch_ms(2024, 5, 31, h, mi, s, ms)
        } else {
            epoch_ms(2024, 6, d, h, mi, s, ms)
        }
    };
    let u = |i: u32| format!("00000000-0000-4000-8000-{i:012}");
    let a = format!(
        "ts,type,auction_id,advertiser_id,publisher_id,bid_price,user_id,total_price,country\n\
         {},impression,{},1,10,0.5,100,,US\n\
         {},impression,{},2,10,0.25,101,,JP\n\
         {},serve,{},1,11,,102,,US\n\
         {},click,{},1,10,,100,,US\n\
         {},purchase,{},2,11,,103,12.5,JP\n\
         {},impression,{},1,11,1.0,,,\n",
        t(1, 13, 45, 12, 345),
        u(1).to_ascii_uppercase().replace("0000-4000", "ABCD-4000"),
        t(1, 13, 46, 0, 0),
        u(2),
        t(1, 23, 59, 59, 999),
        u(3),
        t(2, 0, 0, 0, 0),
        u(4),
        t(3, 8, 0, 0, 0),
        u(5),
        t(2, 10, 0, 0, 0),
        u(6),
    );
    let b = format!(
        "country,note,total_price,user_id,bid_price,publisher_id,advertiser_id,auction_id,type,ts\n\
         JP,x,,104,0.75,10,2,{},impression,{}\n\
         US,y,7.5,100,,11,1,{},purchase,{}\n\
         US,,,105,,10,3,{},serve,{}\n\
         DE,z,,106,0.125,12,3,{},impression,{}\n",
        u(7),
        t(2, 10, 30, 0, 0),
        u(8),
        t(9, 12, 0, 0, 0),
        u(9),
        t(31, 23, 59, 59, 999),
        u(10),
        t(1, 0, 0, 0, 0),
    );
    let files = vec![
        write(dir.path(), "a.csv", &a),
        write(dir.path(), "b.csv", &b),
    ];

    // Calendar helpers.
    assert_eq!(format_day(days_from_civil(2024, 2, 29)), "2024-02-29");
    assert_eq!(
        format_day(monday_of(days_from_civil(2024, 6, 9))),
        "2024-06-03"
    );
    assert_eq!(
        format_day(monday_of(days_from_civil(2024, 6, 3))),
        "2024-06-03"
    );
    assert_eq!(parse_day("2024-12-31"), Some(days_from_civil(2024, 12, 31)));

    // Comparison rules.
    let o = |rows: Value| Oracle {
        columns: vec!["x".into()],
        rows: vec![rows.as_array().expect("row").clone()],
    };
    let cols = vec!["x".to_string()];
    let same = |got: Value, want: Value| {
        assert_same(
            &json!({}),
            &cols,
            &[got.as_array().unwrap().clone()],
            &o(want),
        )
    };
    assert!(same(json!([1]), json!([1.0])).is_ok());
    assert!(same(json!([1.5]), json!([1])).is_err());
    assert!(same(json!([0.30000000000000004]), json!([0.3])).is_ok());
    assert!(same(json!([0.3001]), json!([0.3])).is_err());
    assert!(same(json!([null]), json!([0])).is_err());
    assert!(same(json!([2]), json!([3])).is_err());
    assert!(same(json!(["a"]), json!(["a"])).is_ok());
    assert!(assert_same(&json!({}), &cols, &[], &o(json!([1]))).is_err());

    // COUNT(*) by type (default order: group column ascending).
    check(
        &files,
        json!({"select": ["type", {"COUNT": "*"}], "from": "events", "group_by": ["type"]}),
        &["type", "COUNT(*)"],
        json!([
            ["click", 1],
            ["impression", 5],
            ["purchase", 2],
            ["serve", 2]
        ]),
    );
    // Reference query 1 shape: SUM(bid_price) by day for impressions.
    check(
        &files,
        json!({"select": ["day", {"sum": "bid_price"}], "from": "events",
               "where": [{"col": "type", "op": "eq", "val": "impression"}], "group_by": ["day"]}),
        &["day", "SUM(bid_price)"],
        json!([["2024-06-01", 0.875], ["2024-06-02", 1.75]]),
    );
    // NULL aggregates sort last under desc, ties broken by the group column.
    check(
        &files,
        json!({"select": ["type", {"SUM": "total_price"}, {"Count": "total_price"}, {"COUNT": "*"}],
               "group_by": ["type"], "order_by": [{"col": "SUM(total_price)", "dir": "desc"}]}),
        &["type", "SUM(total_price)", "COUNT(total_price)", "COUNT(*)"],
        json!([
            ["purchase", 20.0, 2, 2],
            ["click", null, 0, 1],
            ["impression", null, 0, 5],
            ["serve", null, 0, 2]
        ]),
    );
    // Raw rows: order_by, then ties by selected columns; empty country is NULL; UUIDs lowercase.
    check(
        &files,
        json!({"select": ["minute", "auction_id", "country"],
               "where": [{"col": "advertiser_id", "op": "eq", "val": 1}],
               "order_by": [{"col": "minute", "dir": "desc"}], "limit": 3}),
        &["minute", "auction_id", "country"],
        json!([
            ["2024-06-09 12:00", u(8), "US"],
            ["2024-06-02 10:00", u(6), null],
            ["2024-06-02 00:00", u(4), "US"]
        ]),
    );
    check(
        &files,
        json!({"select": ["auction_id", "user_id"],
               "where": [{"col": "ts", "op": "eq", "val": t(1, 13, 45, 12, 345).to_string()}],
               "limit": 5}),
        &["auction_id", "user_id"],
        json!([["00000000-abcd-4000-8000-000000000001", 100]]),
    );
    // Week starts on Monday (2024-05-31 is a Friday, 2024-06-09 a Sunday).
    check(
        &files,
        json!({"select": ["week", {"COUNT": "*"}], "group_by": ["week"]}),
        &["week", "COUNT(*)"],
        json!([["2024-05-27", 8], ["2024-06-03", 2]]),
    );
    // Hours of one day; MAX over only NULLs is NULL.
    check(
        &files,
        json!({"select": ["hour", {"MAX": "bid_price"}],
               "where": [{"col": "day", "op": "eq", "val": "2024-06-01"}], "group_by": ["hour"]}),
        &["hour", "MAX(bid_price)"],
        json!([
            ["2024-06-01 00:00:00", 0.125],
            ["2024-06-01 13:00:00", 0.5],
            ["2024-06-01 23:00:00", null]
        ]),
    );
    // Global aggregate over nothing: one row, COUNT 0, SUM NULL.
    check(
        &files,
        json!({"select": [{"COUNT": "*"}, {"SUM": "bid_price"}],
               "where": [{"col": "country", "op": "eq", "val": "ZZ"}]}),
        &["COUNT(*)", "SUM(bid_price)"],
        json!([[0, null]]),
    );
    // minute between (inclusive), numeric strings, `in`.
    check(
        &files,
        json!({"select": [{"COUNT": "*"}],
               "where": [{"col": "minute", "op": "between", "val": ["2024-06-01 13:45", "2024-06-01 13:46"]},
                         {"col": "advertiser_id", "op": "in", "val": ["1", 2]}]}),
        &["COUNT(*)"],
        json!([[2]]),
    );
    // Time MIN/MAX as canonical text; AVG of an integer column; SUM of an integer column;
    // COUNT of a column with a NULL; numeric comparisons on doubles.
    check(
        &files,
        json!({"select": [{"MIN": "day"}, {"MAX": "minute"}, {"MAX": "hour"}, {"AVG": "advertiser_id"},
                          {"SUM": "user_id"}, {"COUNT": "country"}, {"MIN": "week"}]}),
        &[
            "MIN(day)",
            "MAX(minute)",
            "MAX(hour)",
            "AVG(advertiser_id)",
            "SUM(user_id)",
            "COUNT(country)",
            "MIN(week)",
        ],
        json!([[
            "2024-05-31",
            "2024-06-09 12:00",
            "2024-06-09 12:00:00",
            1.7,
            921,
            9,
            "2024-05-27"
        ]]),
    );
    check(
        &files,
        json!({"select": ["bid_price"], "where": [{"col": "bid_price", "op": "gte", "val": "0.25"},
                                                  {"col": "bid_price", "op": "lt", "val": 1}],
               "order_by": [{"col": "bid_price", "dir": "desc"}], "limit": 10}),
        &["bid_price"],
        json!([[0.75], [0.5], [0.25]]),
    );
    // Group columns not selected, ordering by an aggregate, limit.
    check(
        &files,
        json!({"select": ["country", {"COUNT": "*"}], "group_by": ["country", "type"],
               "where": [{"col": "day", "op": "lte", "val": "2024-06-02"}],
               "order_by": [{"col": "COUNT(*)", "dir": "desc"}], "limit": 3}),
        &["country", "COUNT(*)"],
        json!([["JP", 2], ["US", 2], ["DE", 1]]),
    );
    // Quotes in string values are escaped.
    check(
        &files,
        json!({"select": [{"COUNT": "*"}], "where": [{"col": "country", "op": "neq", "val": "O'Brien"}]}),
        &["COUNT(*)"],
        json!([[9]]),
    );
    // Context.
    let ctx = query_context(&files);
    assert_eq!(
        ctx,
        QueryContext {
            days: [
                "2024-05-31",
                "2024-06-01",
                "2024-06-02",
                "2024-06-03",
                "2024-06-09"
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            advertisers: vec![1, 2, 3],
            publishers: vec![10, 11, 12],
            countries: vec!["DE".into(), "JP".into(), "US".into()],
        }
    );
    // Zero files.
    check(
        &[],
        json!({"select": [{"COUNT": "*"}, {"AVG": "bid_price"}]}),
        &["COUNT(*)", "AVG(bid_price)"],
        json!([[0, null]]),
    );
    check(
        &[],
        json!({"select": ["day", {"COUNT": "*"}], "group_by": ["day"]}),
        &["day", "COUNT(*)"],
        json!([]),
    );
    // Invalid queries are errors, not panics.
    for bad in [
        json!({"select": ["day", {"COUNT": "*"}]}),
        json!({"select": [{"SUM": "type"}]}),
        json!({"select": ["nope"]}),
        json!({"select": ["day"], "order_by": [{"col": "hour"}]}),
        json!({"select": ["day"], "where": [{"col": "day", "op": "like", "val": "x"}]}),
    ] {
        assert!(oracle(&files, &bad).is_err(), "expected an error for {bad}");
    }
}
