//! Query results and their encodings: JSON rows, CSV text and Arrow IPC streams.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Serialize, Serializer};

use crate::error::Result;

/// One result value.
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

/// A query result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultSet {
    pub columns: Vec<String>,
    #[serde(skip)]
    pub types: Vec<OutType>,
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    /// CSV text: a header line, then rows; NULL is an empty field.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut out = String::new();
        let line = |out: &mut String, fields: &mut dyn Iterator<Item = String>| {
            let mut first = true;
            for f in fields {
                if !first {
                    out.push(',');
                }
                first = false;
                if f.contains([',', '"', '\n', '\r']) {
                    out.push('"');
                    out.push_str(&f.replace('"', "\"\""));
                    out.push('"');
                } else {
                    out.push_str(&f);
                }
            }
            out.push('\n');
        };
        line(&mut out, &mut self.columns.iter().cloned());
        for row in &self.rows {
            line(
                &mut out,
                &mut row.iter().map(|v| match v {
                    Value::Null => String::new(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    Value::Text(t) => t.clone(),
                }),
            );
        }
        out.into_bytes()
    }

    /// The result as one Arrow record batch.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (c, (name, ty)) in self.columns.iter().zip(&self.types).enumerate() {
            let values = self.rows.iter().map(|r| &r[c]);
            let (dt, array): (DataType, ArrayRef) = match ty {
                OutType::Int => {
                    let mut b = Int64Builder::new();
                    values.for_each(|v| match v {
                        Value::Int(i) => b.append_option(i64::try_from(*i).ok()),
                        _ => b.append_null(),
                    });
                    (DataType::Int64, Arc::new(b.finish()))
                }
                OutType::BigInt => {
                    let mut b = Decimal128Builder::new();
                    values.for_each(|v| match v {
                        Value::Int(i) => b.append_value(*i),
                        _ => b.append_null(),
                    });
                    let dt = DataType::Decimal128(38, 0);
                    (dt.clone(), Arc::new(b.finish().with_data_type(dt)))
                }
                OutType::Float => {
                    let mut b = Float64Builder::new();
                    values.for_each(|v| match v {
                        Value::Float(f) => b.append_value(*f),
                        Value::Int(i) => b.append_value(*i as f64),
                        _ => b.append_null(),
                    });
                    (DataType::Float64, Arc::new(b.finish()))
                }
                OutType::Text => {
                    let mut b = StringBuilder::new();
                    values.for_each(|v| match v {
                        Value::Text(t) => b.append_value(t),
                        _ => b.append_null(),
                    });
                    (DataType::Utf8, Arc::new(b.finish()))
                }
            };
            fields.push(Field::new(name, dt, true));
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }

    /// An Arrow IPC stream holding the result.
    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>> {
        let batch = self.to_batch()?;
        let mut out = Vec::new();
        {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())?;
            w.write(&batch)?;
            w.finish()?;
        }
        Ok(out)
    }
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
    }

    #[test]
    fn encodings() {
        let r = ResultSet {
            columns: vec!["country".into(), "SUM(bid_price)".into(), "n".into()],
            types: vec![OutType::Text, OutType::Float, OutType::BigInt],
            rows: vec![
                vec![
                    Value::Text("a,b".into()),
                    Value::Null,
                    Value::Int(i128::MAX),
                ],
                vec![Value::Text("US".into()), Value::Float(1.5), Value::Int(2)],
            ],
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
}
