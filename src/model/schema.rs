//! The event data model: raw and derived columns, event types, time zones and time buckets.
//!
//! Time is handled as *local minutes*: minutes since 1970-01-01 00:00 of the configured
//! time zone's wall clock. Every derived time column is a bucket of that number, so a
//! coarser grain is always derivable from a finer one (minute → hour → day → week).

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime, Offset, TimeZone as _};

use crate::error::{Error, Result};

/// The columns of the DuckDB `events` table, in table order: the one place their names,
/// types and positions come from (the Arrow schema of table batches, the table's DDL,
/// the CSV parser's types and the positions code reads columns at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCol {
    FileId,
    Part,
    Ts,
    Type,
    AuctionId,
    AdvertiserId,
    PublisherId,
    BidPrice,
    UserId,
    TotalPrice,
    Country,
    Day,
    LocalMinute,
}

/// The kind of a table column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int32,
    Int64,
    /// An event type: text of `EVENT_TYPES`, an `ENUM` in DuckDB.
    EventType,
    /// A country: text, an `ENUM` in DuckDB that starts with every code of two capital
    /// letters and is widened by the table when a file brings another text.
    Country,
    Uuid,
    /// An exact price: `DECIMAL(PRICE_PRECISION, PRICE_SCALE)`.
    Price,
    Date,
}

impl TableCol {
    pub const ALL: [TableCol; 13] = [
        TableCol::FileId,
        TableCol::Part,
        TableCol::Ts,
        TableCol::Type,
        TableCol::AuctionId,
        TableCol::AdvertiserId,
        TableCol::PublisherId,
        TableCol::BidPrice,
        TableCol::UserId,
        TableCol::TotalPrice,
        TableCol::Country,
        TableCol::Day,
        TableCol::LocalMinute,
    ];

    /// The raw CSV columns, in the canonical header order of the input files.
    pub const RAW: [TableCol; 9] = [
        TableCol::Ts,
        TableCol::Type,
        TableCol::AuctionId,
        TableCol::AdvertiserId,
        TableCol::PublisherId,
        TableCol::BidPrice,
        TableCol::UserId,
        TableCol::TotalPrice,
        TableCol::Country,
    ];

    /// Its position in the table (and in table batches).
    pub const fn at(self) -> usize {
        self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            TableCol::FileId => "file_id",
            TableCol::Part => "part",
            TableCol::Ts => "ts",
            TableCol::Type => "type",
            TableCol::AuctionId => "auction_id",
            TableCol::AdvertiserId => "advertiser_id",
            TableCol::PublisherId => "publisher_id",
            TableCol::BidPrice => "bid_price",
            TableCol::UserId => "user_id",
            TableCol::TotalPrice => "total_price",
            TableCol::Country => "country",
            TableCol::Day => "day",
            TableCol::LocalMinute => "local_minute",
        }
    }

    pub const fn kind(self) -> Kind {
        match self {
            TableCol::FileId | TableCol::Part | TableCol::AdvertiserId | TableCol::PublisherId => {
                Kind::Int32
            }
            TableCol::LocalMinute => Kind::Int32,
            TableCol::Ts | TableCol::UserId => Kind::Int64,
            TableCol::Type => Kind::EventType,
            TableCol::Country => Kind::Country,
            TableCol::AuctionId => Kind::Uuid,
            TableCol::BidPrice | TableCol::TotalPrice => Kind::Price,
            TableCol::Day => Kind::Date,
        }
    }

    /// Whether it may be NULL (every column of the data may; the file id and part not).
    pub const fn nullable(self) -> bool {
        !matches!(self, TableCol::FileId | TableCol::Part)
    }

    /// The raw column called `name`, if there is one.
    pub fn raw(name: &str) -> Option<TableCol> {
        TableCol::RAW.into_iter().find(|c| c.name() == name)
    }

    /// The column quoted for SQL.
    pub fn sql_name(self) -> String {
        format!("\"{}\"", self.name())
    }

    /// The column as SQL that reads it in the Arrow type table batches carry (an `ENUM`
    /// as text), named as the column.
    pub fn select_sql(self) -> String {
        match self.kind() {
            Kind::EventType | Kind::Country => {
                format!("CAST({0} AS VARCHAR) AS {0}", self.sql_name())
            }
            _ => self.sql_name(),
        }
    }
}

/// Every text of two capital letters (`AA` … `ZZ`), in order: the countries the table's
/// `country` type holds from the start.
pub fn two_letter_codes() -> impl Iterator<Item = String> {
    (b'A'..=b'Z').flat_map(|a| (b'A'..=b'Z').map(move |b| String::from_utf8(vec![a, b]).unwrap()))
}

/// Whether a country text is one of `two_letter_codes`.
pub fn is_two_letter_code(text: &str) -> bool {
    matches!(text.as_bytes(), [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase())
}

/// A DuckDB `ENUM` type of `values`, which must be in byte order (an `ENUM` sorts by
/// its values' positions, so this keeps `ORDER BY` the same as on text).
pub fn enum_sql<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = values
        .into_iter()
        .map(|v| format!("'{}'", v.as_ref().replace('\'', "''")))
        .collect();
    format!("ENUM({})", quoted.join(", "))
}

impl Kind {
    /// The DuckDB type of a new table's column.
    pub fn sql(self) -> String {
        match self {
            Kind::Int32 => "INTEGER".into(),
            Kind::Int64 => "BIGINT".into(),
            Kind::EventType => {
                let mut types = EVENT_TYPES;
                types.sort_unstable();
                enum_sql(types)
            }
            Kind::Country => enum_sql(two_letter_codes()),
            Kind::Uuid => "UUID".into(),
            Kind::Price => format!("DECIMAL({PRICE_PRECISION}, {PRICE_SCALE})"),
            Kind::Date => "DATE".into(),
        }
    }

    /// The compression DuckDB is told to use for a column of this kind, where its own
    /// choice is a poor one: prices are mostly NULL (only some event types carry each), so
    /// DuckDB picks RLE, whose scans and skips walk run by run. Bit-packed, the file is
    /// the same size, a full scan of a price ~1.7x faster, an hour of `ts` ~20% faster.
    pub fn compression(self) -> Option<&'static str> {
        match self {
            Kind::Price => Some("bitpacking"),
            _ => None,
        }
    }

    /// The Arrow type table batches carry (a UUID as its 16 bytes).
    pub fn arrow(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::DataType;
        match self {
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::EventType | Kind::Country => DataType::Utf8,
            Kind::Uuid => DataType::FixedSizeBinary(16),
            Kind::Price => DataType::Decimal128(PRICE_PRECISION, PRICE_SCALE),
            Kind::Date => DataType::Date32,
        }
    }

    /// The Arrow type CSV text is parsed into (a UUID as text, checked afterwards).
    pub fn parsed(self) -> arrow::datatypes::DataType {
        match self {
            Kind::Uuid => arrow::datatypes::DataType::Utf8,
            k => k.arrow(),
        }
    }
}

/// The raw CSV columns' names, in the canonical header order of the input files.
pub const RAW_COLUMNS: [&str; 9] = {
    let mut names = [""; 9];
    let mut i = 0;
    while i < names.len() {
        names[i] = TableCol::RAW[i].name();
        i += 1;
    }
    names
};

/// Decimal scale of prices: values are kept as exact integers of 10^-9 units.
pub const PRICE_SCALE: i8 = 9;
/// Decimal precision of prices (fits an i64).
pub const PRICE_PRECISION: u8 = 18;
/// 10^PRICE_SCALE, for converting exact prices to floating point.
pub const PRICE_UNIT: f64 = 1e9;

/// The four event types, coded 1..=4; code 0 is NULL.
pub const EVENT_TYPES: [&str; 4] = ["serve", "impression", "click", "purchase"];

/// The code of an event type name (1..=4), or None for anything else.
pub fn type_code(name: &str) -> Option<u8> {
    type_code_of(name.as_bytes())
}

/// `type_code` of a name as bytes.
pub fn type_code_of(name: &[u8]) -> Option<u8> {
    EVENT_TYPES
        .iter()
        .position(|t| t.as_bytes() == name)
        .map(|i| i as u8 + 1)
}

/// The name of a non-NULL event type code.
pub fn type_name(code: u8) -> &'static str {
    EVENT_TYPES[code as usize - 1]
}

/// A derived time column. Ordered from finest to coarsest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TimeCol {
    Minute,
    Hour,
    Day,
    Week,
}

impl TimeCol {
    pub const ALL: [TimeCol; 4] = [TimeCol::Minute, TimeCol::Hour, TimeCol::Day, TimeCol::Week];

    pub fn name(self) -> &'static str {
        match self {
            TimeCol::Minute => "minute",
            TimeCol::Hour => "hour",
            TimeCol::Day => "day",
            TimeCol::Week => "week",
        }
    }

    /// The bucket (its first local minute) that local minute `m` falls in.
    pub fn bucket(self, m: i32) -> i32 {
        match self {
            TimeCol::Minute => m,
            TimeCol::Hour => m - m.rem_euclid(60),
            TimeCol::Day => m - m.rem_euclid(1440),
            TimeCol::Week => {
                let day = m.div_euclid(1440);
                // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
                (day - (day + 3).rem_euclid(7)) * 1440
            }
        }
    }

    /// The canonical text of a bucket, as queries take and answer it.
    pub fn format(self, bucket: i32) -> String {
        let dt = minute_to_datetime(bucket);
        match self {
            TimeCol::Minute => dt.format("%Y-%m-%d %H:%M").to_string(),
            TimeCol::Hour => dt.format("%Y-%m-%d %H:00:00").to_string(),
            TimeCol::Day | TimeCol::Week => dt.format("%Y-%m-%d").to_string(),
        }
    }

    /// Parses the text of a value of this column into local minutes.
    ///
    /// Day and week take `YYYY-MM-DD`; hour and minute take `YYYY-MM-DD HH:MM[:SS]` with
    /// zero seconds. A value that is not on a bucket boundary (a Tuesday for `week`,
    /// 13:30 for `hour`) is accepted and compared chronologically, as SQL would.
    pub fn parse(self, text: &str) -> Result<i32> {
        let bad = || {
            Error::invalid(format!(
                "bad {} value {text:?}: expected {}",
                self.name(),
                match self {
                    TimeCol::Day | TimeCol::Week => "YYYY-MM-DD",
                    TimeCol::Hour => "YYYY-MM-DD HH:00:00",
                    TimeCol::Minute => "YYYY-MM-DD HH:MM",
                }
            ))
        };
        let dt = match self {
            TimeCol::Day | TimeCol::Week => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| bad())?
                .and_hms_opt(0, 0, 0)
                .ok_or_else(bad)?,
            TimeCol::Hour | TimeCol::Minute => {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
                    .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
                    .map_err(|_| bad())?
            }
        };
        if dt.and_utc().timestamp().rem_euclid(60) != 0 {
            return Err(bad());
        }
        i32::try_from(dt.and_utc().timestamp().div_euclid(60)).map_err(|_| bad())
    }
}

fn minute_to_datetime(m: i32) -> NaiveDateTime {
    chrono::DateTime::from_timestamp(m as i64 * 60, 0)
        .expect("i32 minutes are always a valid timestamp")
        .naive_utc()
}

/// Every column a query may name: the raw ones and the derived time columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    Ts,
    Type,
    AuctionId,
    AdvertiserId,
    PublisherId,
    BidPrice,
    UserId,
    TotalPrice,
    Country,
    Time(TimeCol),
}

/// How a column's values are typed in queries and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Integers (ts, ids).
    Int,
    /// Exact decimals shown as floating point (prices).
    Price,
    /// Free text (type, country).
    Text,
    /// UUID text.
    Uuid,
    /// A derived time column.
    Time(TimeCol),
}

impl Column {
    pub const ALL: [Column; 13] = [
        Column::Ts,
        Column::Type,
        Column::AuctionId,
        Column::AdvertiserId,
        Column::PublisherId,
        Column::BidPrice,
        Column::UserId,
        Column::TotalPrice,
        Column::Country,
        Column::Time(TimeCol::Day),
        Column::Time(TimeCol::Week),
        Column::Time(TimeCol::Hour),
        Column::Time(TimeCol::Minute),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Time(t) => t.name(),
            raw => raw.raw().expect("a raw column").name(),
        }
    }

    /// The table column a raw column is (`None` for the derived time columns).
    pub fn raw(self) -> Option<TableCol> {
        Some(match self {
            Column::Ts => TableCol::Ts,
            Column::Type => TableCol::Type,
            Column::AuctionId => TableCol::AuctionId,
            Column::AdvertiserId => TableCol::AdvertiserId,
            Column::PublisherId => TableCol::PublisherId,
            Column::BidPrice => TableCol::BidPrice,
            Column::UserId => TableCol::UserId,
            Column::TotalPrice => TableCol::TotalPrice,
            Column::Country => TableCol::Country,
            Column::Time(_) => return None,
        })
    }

    pub fn kind(self) -> ColumnKind {
        match self {
            Column::Ts | Column::AdvertiserId | Column::PublisherId | Column::UserId => {
                ColumnKind::Int
            }
            Column::BidPrice | Column::TotalPrice => ColumnKind::Price,
            Column::Type | Column::Country => ColumnKind::Text,
            Column::AuctionId => ColumnKind::Uuid,
            Column::Time(t) => ColumnKind::Time(t),
        }
    }
}

impl FromStr for Column {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Column::ALL.into_iter().find(|c| c.name() == s).ok_or(())
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The time zone derived time columns are computed in (UTC by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    #[default]
    Utc,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// The time zone called `name` in the IANA database (`UTC` included).
    pub fn parse(name: &str) -> Result<Zone> {
        if name.eq_ignore_ascii_case("utc") {
            return Ok(Zone::Utc);
        }
        name.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| Error::Internal(format!("unknown time zone {name:?}")))
    }

    pub fn name(&self) -> String {
        match self {
            Zone::Utc => "UTC".to_string(),
            Zone::Named(tz) => tz.name().to_string(),
        }
    }

    /// A converter from epoch milliseconds to local minutes, caching the zone offset.
    pub fn clock(&self) -> LocalClock {
        LocalClock {
            zone: *self,
            cached_slot: i64::MIN,
            cached_offset_min: 0,
        }
    }
}

/// Converts epoch milliseconds to local minutes, caching the zone's UTC offset per
/// 15-minute slot of UTC time (zone offsets change on quarter-hour boundaries).
#[derive(Debug, Clone)]
pub struct LocalClock {
    zone: Zone,
    cached_slot: i64,
    cached_offset_min: i64,
}

impl LocalClock {
    /// Local minutes of the instant `ts_ms`, or None when out of range.
    pub fn local_minute(&mut self, ts_ms: i64) -> Option<i32> {
        let utc_min = ts_ms.div_euclid(60_000);
        let local = match self.zone {
            Zone::Utc => utc_min,
            Zone::Named(tz) => {
                let slot = utc_min.div_euclid(15);
                if slot != self.cached_slot {
                    let dt = chrono::DateTime::from_timestamp(slot * 15 * 60, 0)?;
                    let offset = tz.offset_from_utc_datetime(&dt.naive_utc()).fix();
                    self.cached_offset_min = offset.local_minus_utc() as i64 / 60;
                    self.cached_slot = slot;
                }
                utc_min + self.cached_offset_min
            }
        };
        i32::try_from(local).ok()
    }
}

/// Formats an exact price (10^-9 units) as a float.
#[inline]
pub fn price_to_f64(v: i128) -> f64 {
    exact_to_f64(v) / PRICE_UNIT
}

/// The float nearest an exact sum. A value within 64 bits converts in one instruction
/// (rounding the same as from 128 bits, which is a library call).
#[inline]
pub fn exact_to_f64(v: i128) -> f64 {
    match i64::try_from(v) {
        Ok(v) => v as f64,
        Err(_) => wide_to_f64(v),
    }
}

/// `v as f64` out of line: inlined, the compiler sees that both of `exact_to_f64`'s
/// arms give the same value and keeps only the library call.
#[inline(never)]
fn wide_to_f64(v: i128) -> f64 {
    v as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prices convert to the nearest float whether they fit 64 bits or not, as a
    /// conversion from 128 bits rounds them.
    #[test]
    fn prices_convert_as_from_128_bits() {
        let edges = [
            0,
            1,
            -1,
            1 << 53,
            (1 << 53) + 1,
            (1 << 62) + 3,
            i64::MAX as i128,
        ];
        let wide = [
            i64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            3 << 90,
            -(1 << 100) - 7,
        ];
        for v in edges.iter().flat_map(|v| [*v, -*v]).chain(wide) {
            assert_eq!(
                price_to_f64(v).to_bits(),
                (v as f64 / PRICE_UNIT).to_bits(),
                "{v}"
            );
        }
    }

    #[test]
    fn buckets_and_text() {
        let m = TimeCol::Minute.parse("2024-06-01 13:45").unwrap();
        assert_eq!(TimeCol::Minute.format(m), "2024-06-01 13:45");
        assert_eq!(
            TimeCol::Hour.format(TimeCol::Hour.bucket(m)),
            "2024-06-01 13:00:00"
        );
        assert_eq!(TimeCol::Day.format(TimeCol::Day.bucket(m)), "2024-06-01");
        // 2024-06-01 is a Saturday; its ISO week starts Monday 2024-05-27.
        assert_eq!(TimeCol::Week.format(TimeCol::Week.bucket(m)), "2024-05-27");
        assert_eq!(
            TimeCol::Hour.parse("2024-06-01 13:00:00").unwrap(),
            TimeCol::Hour.bucket(m)
        );
        assert!(TimeCol::Day.parse("2024-13-01").is_err());
        assert!(TimeCol::Hour.parse("2024-06-01 13:00:30").is_err());
        assert!(TimeCol::Day.parse("2024-06-01 13:00").is_err());
    }

    #[test]
    fn buckets_before_1970_floor() {
        let m = TimeCol::Minute.parse("1969-12-31 23:59").unwrap();
        assert_eq!(m, -1);
        assert_eq!(TimeCol::Day.format(TimeCol::Day.bucket(m)), "1969-12-31");
        assert_eq!(TimeCol::Week.format(TimeCol::Week.bucket(m)), "1969-12-29");
    }

    #[test]
    fn zones_shift_local_time() {
        let ts = 1_717_249_500_000; // 2024-06-01 13:45 UTC
        let mut utc = Zone::Utc.clock();
        let mut tokyo = Zone::parse("Asia/Tokyo").unwrap().clock();
        let mut ny = Zone::parse("America/New_York").unwrap().clock();
        assert_eq!(
            TimeCol::Minute.format(utc.local_minute(ts).unwrap()),
            "2024-06-01 13:45"
        );
        assert_eq!(
            TimeCol::Minute.format(tokyo.local_minute(ts).unwrap()),
            "2024-06-01 22:45"
        );
        assert_eq!(
            TimeCol::Minute.format(ny.local_minute(ts).unwrap()),
            "2024-06-01 09:45"
        );
    }
}
