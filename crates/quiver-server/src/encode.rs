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

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, StringViewArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};
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
/// whose values map one-to-one onto the Postgres type, and downcast once.
enum Column {
    Bool(BooleanArray),
    I16(Int16Array),
    I32(Int32Array),
    I64(Int64Array),
    U64(UInt64Array),
    F32(Float32Array),
    F64(Float64Array),
    Decimal(Decimal128Array, u32),
    Text(StringArray),
    TextView(StringViewArray),
    Bytes(BinaryArray),
    Date(Date32Array),
    Timestamp(TimestampMicrosecondArray, bool),
    List(ListArray, Type),
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
        Type::BOOL => Column::Bool(array.as_boolean().clone()),
        Type::INT2 => Column::I16(to(&DataType::Int16)?.as_primitive().clone()),
        Type::INT4 => Column::I32(to(&DataType::Int32)?.as_primitive().clone()),
        Type::INT8 => Column::I64(to(&DataType::Int64)?.as_primitive().clone()),
        Type::NUMERIC => match array.data_type() {
            DataType::UInt64 => Column::U64(array.as_primitive().clone()),
            DataType::Decimal128(_, s) => {
                Column::Decimal(array.as_primitive().clone(), (*s).max(0) as u32)
            }
            _ => Column::Display(Arc::clone(array)),
        },
        Type::FLOAT4 => Column::F32(to(&DataType::Float32)?.as_primitive().clone()),
        Type::FLOAT8 => Column::F64(to(&DataType::Float64)?.as_primitive().clone()),
        Type::TEXT => match array.data_type() {
            DataType::Utf8View => Column::TextView(array.as_string_view().clone()),
            DataType::Utf8 | DataType::LargeUtf8 => {
                Column::Text(to(&DataType::Utf8)?.as_string().clone())
            }
            _ => Column::Display(Arc::clone(array)),
        },
        Type::BYTEA => Column::Bytes(to(&DataType::Binary)?.as_binary().clone()),
        Type::DATE => Column::Date(to(&DataType::Date32)?.as_primitive().clone()),
        Type::TIMESTAMP => Column::Timestamp(
            to(&DataType::Timestamp(TimeUnit::Microsecond, None))?
                .as_primitive()
                .clone(),
            false,
        ),
        Type::TIMESTAMPTZ => Column::Timestamp(
            to(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into()),
            ))?
            .as_primitive()
            .clone(),
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
            Column::List(to(&list)?.as_list().clone(), ty.clone())
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

/// A float as Postgres prints it with the default `extra_float_digits`
/// (1; drivers set 2 or 3, which print the same): the shortest digits that
/// read back as the same value (`shortest`, Ryu's, as `ryu` formats them),
/// in fixed notation for decimal exponents from -4 to `fixed_below` - 1
/// (15 for `float8`, 6 for `float4`) and without a trailing `.0`, otherwise
/// `d.ddde±XX`: `2`, `0.0001`, `1e-05`, `1.234567890123456e+15`.
fn put_pg_float(out: &mut BytesMut, shortest: &str, fixed_below: i32) {
    let (negative, text) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest),
    };
    let (mantissa, exponent) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    // Ryu writes at most 17 significant digits plus leading zeros.
    let mut digits = [0u8; 32];
    let mut n = 0;
    let mut point = None;
    for b in mantissa.bytes().take(digits.len()) {
        if b == b'.' {
            point = Some(n);
        } else {
            digits[n] = b;
            n += 1;
        }
    }
    let point = point.unwrap_or(n);
    let lead = digits[..n].iter().take_while(|&&d| d == b'0').count();
    let mut end = n;
    while end > lead && digits[end - 1] == b'0' {
        end -= 1;
    }
    let digits = &digits[lead..end];
    if negative {
        out.put_u8(b'-');
    }
    if digits.is_empty() {
        out.put_u8(b'0');
        return;
    }
    // The value is d.ddd × 10^e10.
    let e10 = point as i32 - lead as i32 + exponent - 1;
    if (-4..fixed_below).contains(&e10) {
        if e10 < 0 {
            out.put_slice(b"0.");
            out.put_bytes(b'0', (-e10 - 1) as usize);
            out.put_slice(digits);
        } else {
            let whole = e10 as usize + 1;
            if digits.len() <= whole {
                out.put_slice(digits);
                out.put_bytes(b'0', whole - digits.len());
            } else {
                out.put_slice(&digits[..whole]);
                out.put_u8(b'.');
                out.put_slice(&digits[whole..]);
            }
        }
    } else {
        out.put_u8(digits[0]);
        if digits.len() > 1 {
            out.put_u8(b'.');
            out.put_slice(&digits[1..]);
        }
        out.put_slice(if e10 < 0 { b"e-" } else { b"e+" });
        if e10.abs() < 10 {
            out.put_u8(b'0');
        }
        out.put_slice(itoa::Buffer::new().format(e10.unsigned_abs()).as_bytes());
    }
}

/// A `float8` (or, `single`, a `float4` widened losslessly) as Postgres
/// prints it: see [`put_pg_float`]; `NaN`, `Infinity`, `-Infinity`, `-0`.
fn put_float_text(out: &mut BytesMut, v: f64, single: bool) {
    if v.is_nan() {
        out.put_slice(b"NaN");
    } else if v.is_infinite() {
        out.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else if v == 0.0 {
        out.put_slice(if v.is_sign_negative() { b"-0" } else { b"0" });
    } else if single {
        put_pg_float(out, ryu::Buffer::new().format_finite(v as f32), 6);
    } else {
        put_pg_float(out, ryu::Buffer::new().format_finite(v), 15);
    }
}

/// The rows of a batch are written into one buffer taken in chunks of this
/// size; each row is split off as its `DataRow`, sharing the chunk.
const CHUNK: usize = 64 * 1024;

/// Writes DataRow fields (a length, -1 for NULL, then the value's bytes)
/// into the buffer the batch's rows share.
struct RowWriter {
    buf: BytesMut,
    /// A guess at a row's size: a new chunk is taken when less is left.
    row_room: usize,
}

impl RowWriter {
    fn null(&mut self) {
        self.buf.put_i32(-1);
    }

    fn bytes(&mut self, value: &[u8]) {
        self.buf.put_i32(value.len() as i32);
        self.buf.put_slice(value);
    }

    /// A value that `write` puts in the buffer; its length is filled in
    /// after.
    fn with<E>(&mut self, write: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<(), E> {
        let at = self.buf.len();
        self.buf.put_i32(0);
        write(&mut self.buf)?;
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// A value in `field`'s type and format, as pgwire's types write it.
    fn value<T: ToSql + ToSqlText>(&mut self, value: &T, field: &FieldInfo) -> PgWireResult<()> {
        let at = self.buf.len();
        self.buf.put_i32(-1);
        let is_null = if field.format() == FieldFormat::Text {
            value.to_sql_text(field.datatype(), &mut self.buf, field.format_options())
        } else {
            value.to_sql(field.datatype(), &mut self.buf)
        }
        .map_err(encode_err)?;
        if let IsNull::No = is_null {
            let len = (self.buf.len() - at - 4) as i32;
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    /// The row written since the last one, as a `DataRow`.
    fn row(&mut self, fields: usize) -> DataRow {
        let data = self.buf.split();
        if self.buf.capacity() < self.row_room {
            self.buf.reserve(CHUNK.max(self.row_room));
        }
        DataRow::new(data, fields as i16)
    }
}

/// An array element this module writes itself, in text and in binary.
trait Element: Copy {
    fn element_type() -> Type;
    /// The element as Postgres prints it.
    fn text(self, out: &mut BytesMut);
    /// The element's length and big-endian bytes.
    fn binary(self, out: &mut BytesMut);
}

macro_rules! numeric_element {
    ($t:ty, $ty:expr, $text:expr) => {
        impl Element for $t {
            fn element_type() -> Type {
                $ty
            }
            fn text(self, out: &mut BytesMut) {
                $text(out, self)
            }
            fn binary(self, out: &mut BytesMut) {
                let bytes = self.to_be_bytes();
                out.put_i32(bytes.len() as i32);
                out.put_slice(&bytes);
            }
        }
    };
}

numeric_element!(f32, Type::FLOAT4, |o, v: f32| put_float_text(
    o,
    v.into(),
    true
));
numeric_element!(f64, Type::FLOAT8, |o, v| put_float_text(o, v, false));
numeric_element!(i16, Type::INT2, put_int);
numeric_element!(i32, Type::INT4, put_int);
numeric_element!(i64, Type::INT8, put_int);
numeric_element!(u32, Type::OID, put_int);

impl Element for bool {
    fn element_type() -> Type {
        Type::BOOL
    }
    fn text(self, out: &mut BytesMut) {
        out.put_u8(if self { b't' } else { b'f' });
    }
    fn binary(self, out: &mut BytesMut) {
        out.put_i32(1);
        out.put_u8(self.into());
    }
}

/// A one-dimensional array: in text as Postgres prints it
/// (`{1,2.5,NULL}`), in binary as `postgres-types` writes a `Vec` (one
/// dimension, from 1; whether there are NULLs; the element type's oid;
/// each element's length and bytes, -1 for NULL).
fn put_array<T: Element>(
    out: &mut BytesMut,
    binary: bool,
    values: impl ExactSizeIterator<Item = Option<T>>,
) {
    if binary {
        out.put_i32(1);
        let flags = out.len();
        out.put_i32(0);
        out.put_u32(T::element_type().oid());
        out.put_i32(values.len() as i32);
        out.put_i32(1);
        let mut nulls = false;
        for v in values {
            match v {
                Some(v) => v.binary(out),
                None => {
                    nulls = true;
                    out.put_i32(-1);
                }
            }
        }
        if nulls {
            out[flags..flags + 4].copy_from_slice(&1i32.to_be_bytes());
        }
        return;
    }
    out.put_u8(b'{');
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        match v {
            Some(v) => v.text(out),
            None => out.put_slice(b"NULL"),
        }
    }
    out.put_u8(b'}');
}

fn put_int(out: &mut BytesMut, v: impl itoa::Integer) {
    out.put_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn encode_list(
    w: &mut RowWriter,
    list: &ListArray,
    row: usize,
    ty: &Type,
    field: &FieldInfo,
) -> PgWireResult<()> {
    if list.is_null(row) {
        w.null();
        return Ok(());
    }
    let values = list.value(row);
    let binary = field.format() == FieldFormat::Binary;
    macro_rules! array {
        ($values:expr) => {
            w.with(|out| {
                put_array(out, binary, $values);
                Ok(())
            })
        };
    }
    match *ty {
        Type::FLOAT4_ARRAY => array!(values.as_primitive::<Float32Type>().iter()),
        Type::FLOAT8_ARRAY => array!(values.as_primitive::<Float64Type>().iter()),
        Type::INT2_ARRAY => array!(values.as_primitive::<Int16Type>().iter()),
        Type::INT4_ARRAY => array!(values.as_primitive::<Int32Type>().iter()),
        Type::INT8_ARRAY => array!(values.as_primitive::<Int64Type>().iter()),
        Type::OID_ARRAY => array!(
            values
                .as_primitive::<Int32Type>()
                .iter()
                .map(|oid| oid.map(i32::cast_unsigned))
        ),
        Type::BOOL_ARRAY => array!(values.as_boolean().iter()),
        // Text arrays quote and escape their elements: pgwire's encoding.
        _ => {
            let v: Vec<Option<&str>> = values.as_string::<i32>().iter().collect();
            w.value(&v, field)
        }
    }
}

/// Hex digits for `bytea`'s text form.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Encodes every row of `batch` against `fields` (which carry each
/// column's type and format). The rows share one buffer (see [`CHUNK`]);
/// numbers, booleans, text and `bytea` are written here, the other types
/// through pgwire's `ToSql`/`ToSqlText`.
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
    let rows = batch.num_rows();
    let row_room = 16 + 24 * columns.len();
    let mut w = RowWriter {
        buf: BytesMut::with_capacity(CHUNK.min(rows * row_room)),
        row_room,
    };
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        for ((col, formatter), field) in columns.iter().zip(&formatters).zip(fields.iter()) {
            let text = field.format() == FieldFormat::Text;
            macro_rules! int {
                ($a:expr) => {{
                    if $a.is_null(row) {
                        w.null()
                    } else if text {
                        w.bytes(itoa::Buffer::new().format($a.value(row)).as_bytes())
                    } else {
                        w.bytes(&$a.value(row).to_be_bytes())
                    }
                }};
            }
            match col {
                Column::Bool(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else {
                        let v = a.value(row);
                        w.bytes(match (text, v) {
                            (true, true) => b"t",
                            (true, false) => b"f",
                            (false, true) => &[1],
                            (false, false) => &[0],
                        })
                    }
                }
                Column::I16(a) => int!(a),
                Column::I32(a) => int!(a),
                Column::I64(a) => int!(a),
                Column::U64(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else if text {
                        w.bytes(itoa::Buffer::new().format(a.value(row)).as_bytes())
                    } else {
                        w.value(&Decimal::from(a.value(row)), field)?
                    }
                }
                Column::F32(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else if text {
                        let v = a.value(row);
                        w.with(|out| {
                            put_float_text(out, v.into(), true);
                            Ok::<_, PgWireError>(())
                        })?
                    } else {
                        w.bytes(&a.value(row).to_be_bytes())
                    }
                }
                Column::F64(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else if text {
                        let v = a.value(row);
                        w.with(|out| {
                            put_float_text(out, v, false);
                            Ok::<_, PgWireError>(())
                        })?
                    } else {
                        w.bytes(&a.value(row).to_be_bytes())
                    }
                }
                Column::Decimal(a, scale) => {
                    if a.is_null(row) {
                        w.null()
                    } else {
                        let v = Decimal::try_from_i128_with_scale(a.value(row), *scale)
                            .map_err(encode_err)?;
                        w.value(&v, field)?
                    }
                }
                Column::Text(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else {
                        w.bytes(a.value(row).as_bytes())
                    }
                }
                Column::TextView(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else {
                        w.bytes(a.value(row).as_bytes())
                    }
                }
                Column::Bytes(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else if text {
                        let v = a.value(row);
                        w.with(|out| {
                            out.reserve(2 + 2 * v.len());
                            out.put_slice(b"\\x");
                            for b in v {
                                out.put_u8(HEX[usize::from(b >> 4)]);
                                out.put_u8(HEX[usize::from(b & 15)]);
                            }
                            Ok::<_, PgWireError>(())
                        })?
                    } else {
                        w.bytes(a.value(row))
                    }
                }
                Column::Date(a) => {
                    if a.is_null(row) {
                        w.null()
                    } else {
                        let v: NaiveDate = Date32Type::to_naive_date_opt(a.value(row))
                            .ok_or_else(|| encode_err("date out of range"))?;
                        w.value(&v, field)?
                    }
                }
                Column::Timestamp(a, tz) => {
                    if a.is_null(row) {
                        w.null()
                    } else if text {
                        let v = pg_timestamp_text(micros_to_naive(a.value(row))?, *tz);
                        w.bytes(v.as_bytes())
                    } else if *tz {
                        let v: DateTime<Utc> = micros_to_naive(a.value(row))?.and_utc();
                        w.value(&v, field)?
                    } else {
                        w.value(&micros_to_naive(a.value(row))?, field)?
                    }
                }
                Column::List(a, ty) => encode_list(&mut w, a, row, ty, field)?,
                Column::Display(a) => match formatter {
                    Some(f) if a.is_valid(row) => w.with(|out| {
                        use std::fmt::Write;
                        write!(out, "{}", f.value(row)).map_err(encode_err)
                    })?,
                    _ => w.null(),
                },
            }
        }
        out.push(w.row(fields.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_text(v: f64, single: bool) -> String {
        let mut out = BytesMut::new();
        put_float_text(&mut out, v, single);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    /// Each expected text is what PostgreSQL 15 printed for the value
    /// (`SELECT x::float8`, `SELECT x::float4`, default settings).
    #[test]
    fn floats_print_as_postgres_prints_them() {
        for (v, pg) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (2.0, "2"),
            (1e14, "100000000000000"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (1e300, "1e+300"),
            (-1e-300, "-1e-300"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e-100, "1e-100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            (2.5e-310, "2.5e-310"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-2.5, "-2.5"),
            (100.25, "100.25"),
        ] {
            assert_eq!(float_text(v, false), pg, "float8 {v:e}");
        }
        for (v, pg) in [
            (0.0f32, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (2.0, "2"),
            (1e5, "100000"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.1, "0.1"),
            (f32::MAX, "3.4028235e+38"),
            (1e-40, "1e-40"),
            (1.0 / 3.0, "0.33333334"),
        ] {
            assert_eq!(float_text(v.into(), true), pg, "float4 {v:e}");
        }
    }

    fn field(name: &str, ty: Type, format: FieldFormat) -> FieldInfo {
        FieldInfo::new(name.into(), None, None, ty, format)
    }

    /// Splits a DataRow's fields: `None` for NULL.
    fn values(row: &DataRow) -> Vec<Option<Vec<u8>>> {
        let mut data = &row.data[..];
        let mut out = vec![];
        for _ in 0..row.field_count {
            let len = i32::from_be_bytes(data[..4].try_into().expect("length"));
            data = &data[4..];
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(data[..len as usize].to_vec()));
                data = &data[len as usize..];
            }
        }
        assert!(data.is_empty(), "bytes left after the fields");
        out
    }

    #[test]
    fn batches_encode_as_text_and_binary() {
        use datafusion::arrow::array::{Float32Builder, ListBuilder};
        let mut list = ListBuilder::new(Float32Builder::new());
        list.values().append_value(1.0);
        list.values().append_null();
        list.values().append_value(0.5);
        list.append(true);
        list.append(false);
        list.values().append_value(3.0);
        list.append(true);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(-12), None, Some(i64::MAX)])),
            Arc::new(Float64Array::from(vec![Some(2.0), Some(0.1), None])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("héllo")])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(BinaryArray::from(vec![
                Some(&[0u8, 0xab, 0xff][..]),
                None,
                Some(&[][..]),
            ])),
            Arc::new(list.finish()),
            Arc::new(Int16Array::from(vec![Some(7), Some(-1), None])),
        ];
        let batch = RecordBatch::try_from_iter(
            ["i", "f", "s", "b", "y", "l", "h"].into_iter().zip(columns),
        )
        .expect("batch");
        let text = |s: &str| Some(s.as_bytes().to_vec());
        let types = batch
            .schema()
            .fields()
            .iter()
            .map(|f| pg_field_type(f))
            .collect::<Vec<_>>();
        let fields_in = |format: FieldFormat| {
            Arc::new(
                batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(&types)
                    .map(|(f, t)| field(f.name(), t.clone(), format))
                    .collect::<Vec<_>>(),
            )
        };
        let rows = encode_batch(&batch, &fields_in(FieldFormat::Text)).expect("text");
        let rows: Vec<_> = rows.iter().map(values).collect();
        assert_eq!(
            rows,
            vec![
                vec![
                    text("-12"),
                    text("2"),
                    text("a"),
                    text("t"),
                    text("\\x00abff"),
                    text("{1,NULL,0.5}"),
                    text("7")
                ],
                vec![None, text("0.1"), None, text("f"), None, None, text("-1")],
                vec![
                    text("9223372036854775807"),
                    None,
                    text("héllo"),
                    None,
                    text("\\x"),
                    text("{3}"),
                    None
                ],
            ]
        );
        let rows = encode_batch(&batch, &fields_in(FieldFormat::Binary)).expect("binary");
        let rows: Vec<_> = rows.iter().map(values).collect();
        assert_eq!(rows[0][0], Some((-12i64).to_be_bytes().to_vec()));
        assert_eq!(rows[0][1], Some(2.0f64.to_be_bytes().to_vec()));
        assert_eq!(rows[0][2], text("a"));
        assert_eq!(rows[0][3], Some(vec![1]));
        assert_eq!(rows[0][4], Some(vec![0, 0xab, 0xff]));
        assert_eq!(rows[0][6], Some(7i16.to_be_bytes().to_vec()));
        assert_eq!(rows[1][3], Some(vec![0]));
        // A float4[] in binary: what pgwire's array encoding writes.
        let mut expected = BytesMut::new();
        vec![Some(1.0f32), None, Some(0.5)]
            .to_sql(&Type::FLOAT4_ARRAY, &mut expected)
            .expect("array");
        assert_eq!(rows[0][5], Some(expected.to_vec()));
    }

    /// Each array type in binary is byte for byte what `postgres-types`
    /// writes for a `Vec` (what clients were tested against), NULL elements
    /// and empty arrays included; in text, as Postgres prints it.
    #[test]
    fn arrays_encode_as_postgres_types_writes_them() {
        use datafusion::arrow::array::{
            BooleanBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
            Int64Builder, ListBuilder,
        };
        use datafusion::arrow::datatypes::Field;
        fn encode(list: ArrayRef, ty: Type, format: FieldFormat) -> Vec<Option<Vec<u8>>> {
            let batch = RecordBatch::try_from_iter([("a", list)]).expect("batch");
            let fields = Arc::new(vec![field("a", ty, format)]);
            let rows = encode_batch(&batch, &fields).expect("rows");
            rows.iter().map(|r| values(r).remove(0)).collect()
        }
        fn binary<T: ToSql>(v: Vec<Option<T>>, ty: &Type) -> Option<Vec<u8>> {
            let mut out = BytesMut::new();
            v.to_sql(ty, &mut out).expect("to_sql");
            Some(out.to_vec())
        }
        macro_rules! check {
            ($builder:expr, $ty:expr, $rows:expr, $texts:expr) => {{
                let mut b = ListBuilder::new($builder);
                for row in $rows.clone() {
                    for v in row {
                        b.values().append_option(v);
                    }
                    b.append(true);
                }
                let list: ArrayRef = Arc::new(b.finish());
                let expected: Vec<_> = $rows.into_iter().map(|r| binary(r, &$ty)).collect();
                assert_eq!(
                    encode(Arc::clone(&list), $ty, FieldFormat::Binary),
                    expected
                );
                let texts: Vec<_> = $texts
                    .iter()
                    .map(|t: &&str| Some(t.as_bytes().to_vec()))
                    .collect();
                assert_eq!(encode(list, $ty, FieldFormat::Text), texts);
            }};
        }
        check!(
            Float32Builder::new(),
            Type::FLOAT4_ARRAY,
            vec![vec![Some(1.0f32), None, Some(0.25)], vec![]],
            ["{1,NULL,0.25}", "{}"]
        );
        check!(
            Float64Builder::new(),
            Type::FLOAT8_ARRAY,
            vec![vec![Some(1e20f64), Some(-0.5)], vec![None]],
            ["{1e+20,-0.5}", "{NULL}"]
        );
        check!(
            Int16Builder::new(),
            Type::INT2_ARRAY,
            vec![vec![Some(-3i16), Some(i16::MAX)]],
            ["{-3,32767}"]
        );
        check!(
            Int32Builder::new(),
            Type::INT4_ARRAY,
            vec![vec![Some(7i32), None]],
            ["{7,NULL}"]
        );
        check!(
            Int64Builder::new(),
            Type::INT8_ARRAY,
            vec![vec![Some(i64::MIN)], vec![]],
            ["{-9223372036854775808}", "{}"]
        );
        check!(
            BooleanBuilder::new(),
            Type::BOOL_ARRAY,
            vec![vec![Some(true), None, Some(false)]],
            ["{t,NULL,f}"]
        );
        // oid[]: Int32 lists marked as oids, sent as unsigned.
        let mut b = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::Int32,
            true,
        )));
        b.values().append_value(26);
        b.values().append_value(-1);
        b.append(true);
        let list: ArrayRef = Arc::new(b.finish());
        assert_eq!(
            encode(Arc::clone(&list), Type::OID_ARRAY, FieldFormat::Binary),
            vec![binary(vec![Some(26u32), Some(u32::MAX)], &Type::OID_ARRAY)]
        );
        assert_eq!(
            encode(list, Type::OID_ARRAY, FieldFormat::Text),
            vec![Some(b"{26,4294967295}".to_vec())]
        );
    }

    /// Rows of a long batch share chunks, and every row reads back whole.
    #[test]
    fn long_batches_split_into_rows_that_read_back() {
        let n = 20_000;
        let batch = RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("row {i}")),
                )),
            ),
        ])
        .expect("batch");
        let fields = Arc::new(vec![
            field("i", Type::INT8, FieldFormat::Text),
            field("s", Type::TEXT, FieldFormat::Text),
        ]);
        let rows = encode_batch(&batch, &fields).expect("rows");
        assert_eq!(rows.len(), n as usize);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                values(row),
                vec![
                    Some(i.to_string().into_bytes()),
                    Some(format!("row {i}").into_bytes())
                ]
            );
        }
    }

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
