//! Arrow → Postgres: the type each column is announced as, and each value's
//! text or binary encoding.
//!
//! | Arrow | Postgres |
//! |---|---|
//! | Boolean | `bool` |
//! | Int8, Int16, UInt8 | `int2` |
//! | Int32, UInt16 | `int4` |
//! | Int64, UInt32 | `int8` |
//! | UInt64 | `numeric` (values beyond `int8`, such as perceptual hashes) |
//! | Float16, Float32 | `float4` |
//! | Float64 | `float8` |
//! | Decimal128 (precision ≤ 28) | `numeric` |
//! | Utf8, LargeUtf8, Utf8View | `text` |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | `bytea` (encoded images) |
//! | Date32, Date64 | `date` |
//! | Timestamp without / with time zone | `timestamp` / `timestamptz` |
//! | List, LargeList, FixedSizeList of Float32 / Float64 / Int16 / Int32 / Int64 / Boolean / Utf8 | `float4[]` (embeddings, tensors) / `float8[]` / `int2[]` / `int4[]` / `int8[]` / `bool[]` / `text[]` |
//! | List of Int32 marked as oids (`CAST(… AS oid[])`, the catalog's oid columns) | `oid[]` |
//! | anything else (structs, maps, intervals, times, wider decimals) | `text`, as DataFusion prints it |

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use rust_decimal::Decimal;

/// The field metadata the catalog (`datafusion-pg-catalog`) puts on Int32
/// columns that hold Postgres oids.
pub const OID_ALIAS_KEY: &str = "pg.oid_alias";

/// The Postgres type a column is sent as: [`pg_type`] of its Arrow type,
/// except that a list of Int32 marked as oids (`pg.oid_alias` on the
/// field) is an `oid[]`.
pub fn pg_field_type(field: &datafusion::arrow::datatypes::Field) -> Type {
    match field.data_type() {
        DataType::List(item)
            if item.data_type() == &DataType::Int32
                && field.metadata().contains_key(OID_ALIAS_KEY) =>
        {
            Type::OID_ARRAY
        }
        data_type => pg_type(data_type),
    }
}

/// The Postgres type a column of `data_type` is sent as.
pub fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal128(p, _) if *p <= 28 => Type::NUMERIC,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match f.data_type() {
                DataType::Float32 | DataType::Float16 => Type::FLOAT4_ARRAY,
                DataType::Float64 => Type::FLOAT8_ARRAY,
                DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2_ARRAY,
                DataType::Int32 if f.metadata().contains_key(OID_ALIAS_KEY) => Type::OID_ARRAY,
                DataType::Int32 | DataType::UInt16 => Type::INT4_ARRAY,
                DataType::Int64 | DataType::UInt32 => Type::INT8_ARRAY,
                DataType::Boolean => Type::BOOL_ARRAY,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT_ARRAY,
                _ => Type::TEXT,
            }
        }
        _ => Type::TEXT,
    }
}

/// The row description of `schema`, in `format`.
pub fn fields(
    schema: &datafusion::arrow::datatypes::Schema,
    format: impl Fn(usize) -> FieldFormat,
) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                pg_column_name(f.name()),
                None,
                None,
                pg_field_type(f),
                format(i),
            )
        })
        .collect()
}

/// The name Postgres gives an unaliased column: `count(*)` is `count`,
/// `upper(name)` is `upper`, and a bare literal (`Int64(1)` in DataFusion)
/// is `?column?`. Other names (columns, aliases) are kept.
pub fn pg_column_name(name: &str) -> String {
    let Some(open) = name.find('(') else {
        return name.to_string();
    };
    let function = &name[..open];
    let is_call = name.ends_with(')')
        && !function.is_empty()
        && function
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && function
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !is_call {
        return name.to_string();
    }
    const LITERALS: &[&str] = &[
        "Boolean",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float16",
        "Float32",
        "Float64",
        "Utf8",
        "LargeUtf8",
        "Utf8View",
        "Binary",
        "Decimal128",
        "Date32",
        "Date64",
        "TimestampSecond",
        "TimestampMillisecond",
        "TimestampMicrosecond",
        "TimestampNanosecond",
        "IntervalMonthDayNano",
        "List",
        "FixedSizeList",
        "Struct",
    ];
    if LITERALS.contains(&function) {
        "?column?".to_string()
    } else {
        function.to_ascii_lowercase()
    }
}

fn encode_err(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(format!("encoding a result value: {e}").into())
}

/// A column prepared for encoding: cast once per batch to the Arrow type
/// whose values map one-to-one onto the Postgres type.
enum Column {
    Bool(ArrayRef),
    I16(ArrayRef),
    I32(ArrayRef),
    I64(ArrayRef),
    U64(ArrayRef),
    F32(ArrayRef),
    F64(ArrayRef),
    Decimal(ArrayRef, u32),
    Text(ArrayRef),
    Bytes(ArrayRef),
    Date(ArrayRef),
    Timestamp(ArrayRef, bool),
    List(ArrayRef, Type),
    Display(ArrayRef),
}

fn prepare(array: &ArrayRef, ty: &Type) -> PgWireResult<Column> {
    let to = |dt: &DataType| {
        if array.data_type() == dt {
            return Ok(Arc::clone(array));
        }
        cast(array, dt).map_err(encode_err)
    };
    Ok(match *ty {
        Type::BOOL => Column::Bool(Arc::clone(array)),
        Type::INT2 => Column::I16(to(&DataType::Int16)?),
        Type::INT4 => Column::I32(to(&DataType::Int32)?),
        Type::INT8 => Column::I64(to(&DataType::Int64)?),
        Type::NUMERIC => match array.data_type() {
            DataType::UInt64 => Column::U64(Arc::clone(array)),
            DataType::Decimal128(_, s) => Column::Decimal(Arc::clone(array), (*s).max(0) as u32),
            _ => Column::Display(Arc::clone(array)),
        },
        Type::FLOAT4 => Column::F32(to(&DataType::Float32)?),
        Type::FLOAT8 => Column::F64(to(&DataType::Float64)?),
        Type::TEXT => match array.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Column::Text(to(&DataType::Utf8)?)
            }
            _ => Column::Display(Arc::clone(array)),
        },
        Type::BYTEA => Column::Bytes(to(&DataType::Binary)?),
        Type::DATE => Column::Date(to(&DataType::Date32)?),
        Type::TIMESTAMP => Column::Timestamp(
            to(&DataType::Timestamp(TimeUnit::Microsecond, None))?,
            false,
        ),
        Type::TIMESTAMPTZ => Column::Timestamp(
            to(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into()),
            ))?,
            true,
        ),
        _ => {
            let item = match ty.clone() {
                Type::FLOAT4_ARRAY => DataType::Float32,
                Type::FLOAT8_ARRAY => DataType::Float64,
                Type::INT2_ARRAY => DataType::Int16,
                Type::INT4_ARRAY | Type::OID_ARRAY => DataType::Int32,
                Type::INT8_ARRAY => DataType::Int64,
                Type::BOOL_ARRAY => DataType::Boolean,
                Type::TEXT_ARRAY => DataType::Utf8,
                _ => return Ok(Column::Display(Arc::clone(array))),
            };
            let list = DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
                "item", item, true,
            )));
            Column::List(to(&list)?, ty.clone())
        }
    })
}

fn micros_to_naive(v: i64) -> PgWireResult<NaiveDateTime> {
    DateTime::from_timestamp_micros(v)
        .map(|d| d.naive_utc())
        .ok_or_else(|| encode_err(format!("timestamp {v} µs is out of range")))
}

/// A timestamp as Postgres prints it: `2024-01-02 03:04:05`, fractions
/// without trailing zeros, `+00` for `timestamptz` (the session is UTC).
fn pg_timestamp_text(t: NaiveDateTime, tz: bool) -> String {
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = t.and_utc().timestamp_subsec_micros();
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if tz {
        s.push_str("+00");
    }
    s
}

fn encode_list(
    enc: &mut DataRowEncoder,
    list: &ArrayRef,
    row: usize,
    ty: &Type,
) -> PgWireResult<()> {
    let list = list.as_list::<i32>();
    if list.is_null(row) {
        return enc.encode_field(&None::<Vec<Option<i64>>>);
    }
    let values = list.value(row);
    macro_rules! prim {
        ($t:ty) => {{
            let v: Vec<Option<_>> = values.as_primitive::<$t>().iter().collect();
            enc.encode_field(&v)
        }};
    }
    match *ty {
        Type::FLOAT4_ARRAY => prim!(Float32Type),
        Type::FLOAT8_ARRAY => prim!(Float64Type),
        Type::INT2_ARRAY => prim!(Int16Type),
        Type::INT4_ARRAY => prim!(Int32Type),
        Type::OID_ARRAY => {
            let v: Vec<Option<u32>> = values
                .as_primitive::<Int32Type>()
                .iter()
                .map(|oid| oid.map(i32::cast_unsigned))
                .collect();
            enc.encode_field(&v)
        }
        Type::INT8_ARRAY => prim!(Int64Type),
        Type::BOOL_ARRAY => {
            let v: Vec<Option<bool>> = values.as_boolean().iter().collect();
            enc.encode_field(&v)
        }
        _ => {
            let v: Vec<Option<&str>> = values.as_string::<i32>().iter().collect();
            enc.encode_field(&v)
        }
    }
}

/// Encodes every row of `batch` against `fields` (which carry each
/// column's type and format).
pub fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(a, f)| prepare(a, f.datatype()))
        .collect::<PgWireResult<_>>()?;
    let options = FormatOptions::default();
    let formatters: Vec<Option<ArrayFormatter>> = columns
        .iter()
        .map(|c| match c {
            Column::Display(a) => ArrayFormatter::try_new(a.as_ref(), &options)
                .map(Some)
                .map_err(encode_err),
            _ => Ok(None),
        })
        .collect::<PgWireResult<_>>()?;
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for ((col, formatter), field) in columns.iter().zip(&formatters).zip(fields.iter()) {
            let e = &mut encoder;
            match col {
                Column::Bool(a) => {
                    let a = a.as_boolean();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::I16(a) => {
                    let a = a.as_primitive::<Int16Type>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::I32(a) => {
                    let a = a.as_primitive::<Int32Type>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::I64(a) => {
                    let a = a.as_primitive::<Int64Type>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::U64(a) => {
                    let a = a.as_primitive::<UInt64Type>();
                    e.encode_field(&(a.is_valid(row).then(|| Decimal::from(a.value(row)))))?
                }
                Column::F32(a) => {
                    let a = a.as_primitive::<Float32Type>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::F64(a) => {
                    let a = a.as_primitive::<Float64Type>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::Decimal(a, scale) => {
                    let a = a.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
                    let v = if a.is_valid(row) {
                        Some(
                            Decimal::try_from_i128_with_scale(a.value(row), *scale)
                                .map_err(encode_err)?,
                        )
                    } else {
                        None
                    };
                    e.encode_field(&v)?
                }
                Column::Text(a) => {
                    let a = a.as_string::<i32>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::Bytes(a) => {
                    let a = a.as_binary::<i32>();
                    e.encode_field(&(a.is_valid(row).then(|| a.value(row))))?
                }
                Column::Date(a) => {
                    let a = a.as_primitive::<Date32Type>();
                    let v: Option<NaiveDate> = if a.is_valid(row) {
                        Some(
                            Date32Type::to_naive_date_opt(a.value(row))
                                .ok_or_else(|| encode_err("date out of range"))?,
                        )
                    } else {
                        None
                    };
                    e.encode_field(&v)?
                }
                Column::Timestamp(a, tz) => {
                    let a = a.as_primitive::<TimestampMicrosecondType>();
                    if !a.is_valid(row) {
                        e.encode_field(&None::<NaiveDateTime>)?
                    } else if field.format() == FieldFormat::Text {
                        e.encode_field(&pg_timestamp_text(micros_to_naive(a.value(row))?, *tz))?
                    } else if *tz {
                        let v: DateTime<Utc> = micros_to_naive(a.value(row))?.and_utc();
                        e.encode_field(&v)?
                    } else {
                        e.encode_field(&micros_to_naive(a.value(row))?)?
                    }
                }
                Column::List(a, ty) => encode_list(e, a, row, ty)?,
                Column::Display(a) => {
                    let v = match formatter {
                        Some(f) if a.is_valid(row) => Some(f.value(row).to_string()),
                        _ => None,
                    };
                    e.encode_field(&v)?
                }
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::pg_column_name;

    #[test]
    fn column_names_as_postgres_gives_them() {
        assert_eq!(pg_column_name("count(*)"), "count");
        assert_eq!(pg_column_name("sum(t.amount)"), "sum");
        assert_eq!(pg_column_name("Int64(1)"), "?column?");
        assert_eq!(pg_column_name("country"), "country");
        assert_eq!(pg_column_name("my col"), "my col");
        assert_eq!(pg_column_name("a + b"), "a + b");
    }
}
