//! Parsing and validating a JSON query (the query language of the README) into a typed `Query`.
//!
//! Every rejection is an `invalid_query` error whose message names the offending part.

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::ingest::fold::parse_uuid;
use crate::model::schema::{type_code, Column, ColumnKind, TimeCol};

/// Most rows a raw-row select may return.
pub const MAX_RAW_LIMIT: u64 = 100_000;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Sum,
    Avg,
    Count,
    Min,
    Max,
}

impl Func {
    fn parse(name: &str) -> Option<Func> {
        Some(match name.to_ascii_uppercase().as_str() {
            "SUM" => Func::Sum,
            "AVG" => Func::Avg,
            "COUNT" => Func::Count,
            "MIN" => Func::Min,
            "MAX" => Func::Max,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Func::Sum => "SUM",
            Func::Avg => "AVG",
            Func::Count => "COUNT",
            Func::Min => "MIN",
            Func::Max => "MAX",
        }
    }
}

/// An aggregate: a function over a column, or over `*` (COUNT only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregate {
    pub func: Func,
    pub arg: Option<Column>,
}

impl Aggregate {
    /// The result column name, e.g. `SUM(bid_price)` or `COUNT(*)`.
    pub fn label(&self) -> String {
        format!(
            "{}({})",
            self.func.name(),
            self.arg.map_or("*", Column::name)
        )
    }
}

/// One item of `select`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Column(Column),
    Agg(Aggregate),
}

impl Item {
    pub fn label(&self) -> String {
        match self {
            Item::Column(c) => c.name().to_string(),
            Item::Agg(a) => a.label(),
        }
    }
}

/// A comparison operator of `where`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "between" => Op::Between,
            "in" => Op::In,
            _ => return None,
        })
    }

    /// Whether `ord` (value compared with the first literal) satisfies a one-literal op.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => ord == Equal,
            Op::Neq => ord != Equal,
            Op::Lt => ord == Less,
            Op::Lte => ord != Greater,
            Op::Gt => ord == Greater,
            Op::Gte => ord != Less,
            Op::Between | Op::In => unreachable!("multi-literal op"),
        }
    }

    /// Evaluates the op for a non-NULL value against its literals; those of `in` sorted
    /// ascending (they are looked up by binary search).
    pub fn eval<T: Ord>(self, value: &T, lits: &[T]) -> bool {
        match self {
            Op::Between => *value >= lits[0] && *value <= lits[1],
            Op::In => lits.binary_search(value).is_ok(),
            op => op.holds(value.cmp(&lits[0])),
        }
    }
}

/// A literal of `where`, already typed for its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Int(i64),
    Float(f64),
    Text(String),
    /// Local minutes (time columns).
    Time(i32),
    Uuid([u8; 16]),
}

/// One predicate of `where`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub col: Column,
    pub op: Op,
    /// One literal, two for `between`, one or more for `in`.
    pub lits: Vec<Lit>,
}

/// One key of `order_by`: an index into `select` and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderKey {
    pub item: usize,
    pub desc: bool,
}

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub select: Vec<Item>,
    pub filters: Vec<Filter>,
    pub group_by: Vec<Column>,
    pub order_by: Vec<OrderKey>,
    pub limit: Option<u64>,
}

impl Query {
    /// Whether this query aggregates (has aggregates or a group_by).
    pub fn is_aggregate(&self) -> bool {
        !self.group_by.is_empty() || self.select.iter().any(|i| matches!(i, Item::Agg(_)))
    }

    pub fn labels(&self) -> Vec<String> {
        self.select.iter().map(Item::label).collect()
    }

    /// Every column the query reads for grouping, filtering or plain selection.
    pub fn key_columns(&self) -> impl Iterator<Item = Column> + '_ {
        self.select
            .iter()
            .filter_map(|i| match i {
                Item::Column(c) => Some(*c),
                Item::Agg(_) => None,
            })
            .chain(self.filters.iter().map(|f| f.col))
            .chain(self.group_by.iter().copied())
    }

    /// Parses and validates JSON query text.
    pub fn parse_text(text: &str) -> Result<Query> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("query is not valid JSON: {e}")))?;
        Query::parse(&json)
    }

    /// Validates a JSON query.
    pub fn parse(json: &Json) -> Result<Query> {
        let obj = json
            .as_object()
            .ok_or_else(|| Error::invalid("query must be a JSON object"))?;
        for key in obj.keys() {
            if !["select", "from", "where", "group_by", "order_by", "limit"].contains(&key.as_str())
            {
                return Err(Error::invalid(format!("unknown key {key:?} in query")));
            }
        }
        match obj.get("from") {
            None => {}
            Some(Json::String(s)) if s == "events" => {}
            Some(other) => {
                return Err(Error::invalid(format!(
                    "from: unknown table {other}, the only table is \"events\""
                )))
            }
        }
        let select = parse_select(obj)?;
        let filters = match obj.get("where") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, f)| parse_filter(i, f))
                .collect::<Result<_>>()?,
            Some(_) => return Err(Error::invalid("where must be a list of predicates")),
        };
        let mut group_by = Vec::new();
        match obj.get("group_by") {
            None | Some(Json::Null) => {}
            Some(Json::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let name = item.as_str().ok_or_else(|| {
                        Error::invalid(format!("group_by[{i}] must be a column name"))
                    })?;
                    let col = column(name, &format!("group_by[{i}]"))?;
                    if !group_by.contains(&col) {
                        group_by.push(col);
                    }
                }
            }
            Some(_) => return Err(Error::invalid("group_by must be a list of column names")),
        }
        let mut query = Query {
            select,
            filters,
            group_by,
            order_by: Vec::new(),
            limit: None,
        };
        if query.is_aggregate() {
            for item in &query.select {
                if let Item::Column(c) = item {
                    if !query.group_by.contains(c) {
                        return Err(Error::invalid(format!(
                            "select column {:?} must be in group_by when aggregates are present",
                            c.name()
                        )));
                    }
                }
            }
        }
        query.order_by = parse_order_by(obj, &query.labels())?;
        query.limit = match obj.get("limit") {
            None | Some(Json::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::invalid(format!("limit must be a non-negative integer, got {v}"))
            })?),
        };
        if !query.is_aggregate() {
            match query.limit {
                Some(n) if n <= MAX_RAW_LIMIT => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "a raw-row select (no aggregates, no group_by) needs a limit of at most {MAX_RAW_LIMIT}"
                    )))
                }
            }
        }
        Ok(query)
    }
}

fn column(name: &str, at: &str) -> Result<Column> {
    name.parse::<Column>()
        .map_err(|_| Error::invalid(format!("unknown column {name:?} in {at}")))
}

fn parse_select(obj: &Map<String, Json>) -> Result<Vec<Item>> {
    let items = match obj.get("select") {
        Some(Json::Array(items)) if !items.is_empty() => items,
        Some(Json::Array(_)) => return Err(Error::invalid("select must not be empty")),
        Some(_) => return Err(Error::invalid("select must be a list")),
        None => return Err(Error::invalid("missing select")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("select[{i}]");
            match item {
                Json::String(name) => Ok(Item::Column(column(name, &at)?)),
                Json::Object(agg) if agg.len() == 1 => {
                    let (fname, arg) = agg.iter().next().expect("one entry");
                    let func = Func::parse(fname).ok_or_else(|| {
                        Error::invalid(format!(
                            "unknown aggregate {fname:?} in {at}: use SUM, AVG, COUNT, MIN or MAX"
                        ))
                    })?;
                    let arg = match arg.as_str() {
                        Some("*") if func == Func::Count => None,
                        Some("*") => {
                            return Err(Error::invalid(format!(
                                "{}(*) in {at}: only COUNT takes \"*\"",
                                func.name()
                            )))
                        }
                        Some(name) => Some(column(name, &at)?),
                        None => {
                            return Err(Error::invalid(format!(
                                "{at}: the argument of {} must be a column name or \"*\"",
                                func.name()
                            )))
                        }
                    };
                    if let (Func::Sum | Func::Avg, Some(c)) = (func, arg) {
                        if !matches!(c.kind(), ColumnKind::Int | ColumnKind::Price) {
                            return Err(Error::invalid(format!(
                                "{}({}) in {at}: {} needs a numeric column",
                                func.name(),
                                c.name(),
                                func.name()
                            )));
                        }
                    }
                    Ok(Item::Agg(Aggregate { func, arg }))
                }
                _ => Err(Error::invalid(format!(
                    "{at} must be a column name or an aggregate like {{\"SUM\": \"bid_price\"}}"
                ))),
            }
        })
        .collect()
}

fn parse_filter(i: usize, json: &Json) -> Result<Filter> {
    let at = format!("where[{i}]");
    let obj = json
        .as_object()
        .ok_or_else(|| Error::invalid(format!("{at} must be an object {{col, op, val}}")))?;
    for key in obj.keys() {
        if !["col", "op", "val"].contains(&key.as_str()) {
            return Err(Error::invalid(format!("unknown key {key:?} in {at}")));
        }
    }
    let name = obj
        .get("col")
        .and_then(Json::as_str)
        .ok_or_else(|| Error::invalid(format!("{at}.col must be a column name")))?;
    let col = column(name, &at)?;
    let op_name = obj
        .get("op")
        .and_then(Json::as_str)
        .ok_or_else(|| Error::invalid(format!("{at}.op must be a string")))?;
    let op = Op::parse(op_name).ok_or_else(|| {
        Error::invalid(format!(
            "unknown op {op_name:?} in {at}: use eq, neq, lt, lte, gt, gte, between or in"
        ))
    })?;
    let val = obj
        .get("val")
        .ok_or_else(|| Error::invalid(format!("{at} needs a val")))?;
    let vals: Vec<&Json> = match (op, val) {
        (Op::Between, Json::Array(v)) if v.len() == 2 => v.iter().collect(),
        (Op::Between, _) => {
            return Err(Error::invalid(format!(
                "{at}: between takes val = [low, high]"
            )))
        }
        (Op::In, Json::Array(v)) if !v.is_empty() => v.iter().collect(),
        (Op::In, _) => {
            return Err(Error::invalid(format!(
                "{at}: in takes a non-empty list of values"
            )))
        }
        (_, v) => vec![v],
    };
    let lits = vals
        .into_iter()
        .map(|v| literal(col, v, &at))
        .collect::<Result<_>>()?;
    Ok(Filter { col, op, lits })
}

/// Types one JSON value for `col`.
fn literal(col: Column, v: &Json, at: &str) -> Result<Lit> {
    let wrong = |expected: &str| {
        Error::invalid(format!(
            "wrong value type in {at}: {} takes {expected}, got {v}",
            col.name()
        ))
    };
    match col.kind() {
        ColumnKind::Int => {
            let n = match v {
                Json::Number(n) => n.as_i64(),
                Json::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            n.map(Lit::Int).ok_or_else(|| wrong("an integer"))
        }
        ColumnKind::Price => {
            let n = match v {
                Json::Number(n) => n.as_f64(),
                Json::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
                _ => None,
            };
            n.map(Lit::Float).ok_or_else(|| wrong("a number"))
        }
        ColumnKind::Text => {
            let s = v.as_str().ok_or_else(|| wrong("a string"))?;
            if col == Column::Type && type_code(s).is_none() {
                return Err(Error::invalid(format!(
                    "unknown event type {s:?} in {at}: use serve, impression, click or purchase"
                )));
            }
            if col == Column::Country
                && (s.is_empty()
                    || s.len() > 16
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Err(Error::invalid(format!(
                    "bad country {s:?} in {at}: countries are codes like \"US\""
                )));
            }
            Ok(Lit::Text(s.to_string()))
        }
        ColumnKind::Uuid => {
            let s = v.as_str().ok_or_else(|| wrong("UUID text"))?;
            parse_uuid(s)
                .map(Lit::Uuid)
                .ok_or_else(|| Error::invalid(format!("bad auction_id {s:?} in {at}: not a UUID")))
        }
        ColumnKind::Time(t) => {
            let s = v
                .as_str()
                .ok_or_else(|| wrong("text like \"2024-06-01\""))?;
            t.parse(s)
                .map(Lit::Time)
                .map_err(|e| Error::invalid(format!("{e} in {at}")))
        }
    }
}

fn parse_order_by(obj: &Map<String, Json>, labels: &[String]) -> Result<Vec<OrderKey>> {
    let items = match obj.get("order_by") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(_) => return Err(Error::invalid("order_by must be a list of {col, dir}")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("order_by[{i}]");
            let obj = item
                .as_object()
                .ok_or_else(|| Error::invalid(format!("{at} must be an object {{col, dir}}")))?;
            for key in obj.keys() {
                if key != "col" && key != "dir" {
                    return Err(Error::invalid(format!("unknown key {key:?} in {at}")));
                }
            }
            let col = obj
                .get("col")
                .and_then(Json::as_str)
                .ok_or_else(|| Error::invalid(format!("{at}.col must be a string")))?;
            let item = labels.iter().position(|l| l == col).ok_or_else(|| {
                Error::invalid(format!(
                    "{at}: {col:?} is not a selected column or aggregate (selected: {})",
                    labels.join(", ")
                ))
            })?;
            let desc = match obj.get("dir").map(|d| d.as_str()) {
                None | Some(Some("asc")) => false,
                Some(Some("desc")) => true,
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "{at}.dir must be \"asc\" or \"desc\""
                    )))
                }
            };
            Ok(OrderKey { item, desc })
        })
        .collect()
}

/// Whether `t` is a time column.
pub fn time_of(c: Column) -> Option<TimeCol> {
    match c {
        Column::Time(t) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        match Query::parse_text(q) {
            Err(Error::InvalidQuery(m)) => m,
            other => panic!("expected invalid_query for {q}, got {other:?}"),
        }
    }

    #[test]
    fn reference_query_parses() {
        let q = Query::parse_text(
            r#"{"select":["day",{"sum":"bid_price"}],"from":"events",
                "where":[{"col":"type","op":"eq","val":"impression"},
                         {"col":"day","op":"between","val":["2024-10-20","2024-10-23"]}],
                "group_by":["day"],"order_by":[{"col":"SUM(bid_price)","dir":"desc"}],"limit":10}"#,
        )
        .unwrap();
        assert_eq!(q.labels(), vec!["day", "SUM(bid_price)"]);
        assert_eq!(
            q.order_by,
            vec![OrderKey {
                item: 1,
                desc: true
            }]
        );
        assert_eq!(q.filters[1].lits.len(), 2);
    }

    #[test]
    fn messages_name_the_offending_part() {
        assert!(err(r#"{"select":["nope"]}"#).contains("\"nope\""));
        assert!(err(r#"{"select":[{"MEDIAN":"bid_price"}]}"#).contains("MEDIAN"));
        assert!(err(r#"{"select":[{"SUM":"type"}]}"#).contains("SUM(type)"));
        assert!(err(
            r#"{"select":[{"COUNT":"*"}],"where":[{"col":"type","op":"like","val":"x"}]}"#
        )
        .contains("like"));
        assert!(err(r#"{"select":["country",{"COUNT":"*"}]}"#).contains("group_by"));
        assert!(err(r#"{"select":[{"COUNT":"*"}],"limit":-1}"#).contains("limit"));
        assert!(err(r#"{"select":["ts"]}"#).contains("limit"));
        assert!(err(
            r#"{"select":[{"COUNT":"*"}],"where":[{"col":"day","op":"eq","val":"2024-02-30"}]}"#
        )
        .contains("bad day"));
        assert!(err(r#"{"select":[{"COUNT":"*"}],"where":[{"col":"advertiser_id","op":"eq","val":"x' OR '1'='1"}]}"#)
            .contains("wrong value type"));
        assert!(err(
            r#"{"select":[{"COUNT":"*"}],"where":[{"col":"type","op":"eq","val":"x' OR '1'='1"}]}"#
        )
        .contains("event type"));
        assert!(err(r#"{"select":[{"COUNT":"*"}],"where":[{"col":"country","op":"eq","val":"x' OR '1'='1"}]}"#)
            .contains("bad country"));
        assert!(
            err(r#"{"select":[{"COUNT":"*"}],"order_by":[{"col":"SUM(bid_price)"}]}"#)
                .contains("order_by[0]")
        );
        assert!(err(r#"{"select":[{"COUNT":"*"}],"frm":"events"}"#).contains("frm"));
    }
}
