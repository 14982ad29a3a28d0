//! What every SQL function over media shares: reading constant and
//! per-row arguments, and the error of one row.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};

/// Text of a string scalar (`None` for NULL or another type).
pub fn scalar_text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.clone(),
        ScalarValue::Dictionary(_, value) => scalar_text(value),
        _ => None,
    }
}

/// An integer scalar of any width (`None` for NULL or another type).
pub fn scalar_int(v: &ScalarValue) -> Option<i64> {
    if v.is_null() {
        return None;
    }
    v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
        ScalarValue::Int64(i) => i,
        _ => None,
    })
}

/// A numeric scalar as `f64` (`None` for NULL or another type).
pub fn scalar_float(v: &ScalarValue) -> Option<f64> {
    if v.is_null() {
        return None;
    }
    v.cast_to(&DataType::Float64).ok().and_then(|v| match v {
        ScalarValue::Float64(f) => f,
        _ => None,
    })
}

/// A boolean scalar (`None` for NULL or another type).
pub fn scalar_bool(v: &ScalarValue) -> Option<bool> {
    match v {
        ScalarValue::Boolean(b) => *b,
        _ => None,
    }
}

/// Whether `t` holds bytes (or is an untyped NULL).
pub fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
    )
}

/// Whether `t` is an integer (or an untyped NULL).
pub fn is_integer(t: &DataType) -> bool {
    t.is_integer() || t == &DataType::Null
}

/// Whether `t` is text (or an untyped NULL).
pub fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

/// An argument: one value for every row, or one per row.
#[derive(Debug)]
pub enum Arg {
    /// The same value for every row.
    Scalar(ScalarValue),
    /// One value per row.
    Array(ArrayRef),
}

impl Arg {
    /// The value of `row`.
    pub fn get(&self, row: usize) -> Result<ScalarValue> {
        match self {
            Arg::Scalar(s) => Ok(s.clone()),
            Arg::Array(a) => ScalarValue::try_from_array(a, row),
        }
    }
}

/// The error of one row: the function, the row within its batch, the way
/// out (`try_`), and the codec's reason as the source.
pub fn row_error(function: &str, row: usize, e: quiver_media::MediaError) -> DataFusionError {
    let hint = if function.starts_with("try_") {
        String::new()
    } else {
        format!(" (use try_{function} to get NULL instead)")
    };
    DataFusionError::External(Box::new(e))
        .context(format!("{function}: row {} of its batch{hint}", row + 1))
}

/// The values of a binary column of any layout (`Binary`, `LargeBinary`,
/// `BinaryView`), read without copying.
#[derive(Debug, Clone, Copy)]
pub enum BinaryValues<'a> {
    /// `Binary`.
    Binary(&'a datafusion::arrow::array::BinaryArray),
    /// `LargeBinary`.
    Large(&'a datafusion::arrow::array::LargeBinaryArray),
    /// `BinaryView`.
    View(&'a datafusion::arrow::array::BinaryViewArray),
}

impl<'a> BinaryValues<'a> {
    /// The binary values of `array`, or `None` for another type.
    pub fn of(array: &'a ArrayRef) -> Option<Self> {
        let any = array.as_any();
        any.downcast_ref()
            .map(Self::Binary)
            .or_else(|| any.downcast_ref().map(Self::Large))
            .or_else(|| any.downcast_ref().map(Self::View))
    }

    /// The bytes of `row`.
    pub fn value(&self, row: usize) -> &'a [u8] {
        match self {
            Self::Binary(a) => a.value(row),
            Self::Large(a) => a.value(row),
            Self::View(a) => a.value(row),
        }
    }
}

/// Checks that a function taking `required` to `total` arguments got
/// `got`; the error shows `usage`.
pub fn check_arity(
    function: &str,
    usage: &str,
    required: usize,
    total: usize,
    got: usize,
) -> Result<()> {
    if (required..=total).contains(&got) {
        return Ok(());
    }
    let expected = if required == total {
        required.to_string()
    } else {
        format!("{required} to {total}")
    };
    datafusion::common::plan_err!("{function} takes {expected} arguments, got {got}: {usage}")
}

/// The arguments after the first, each one value or one per row.
pub fn rest_args(args: &[datafusion::logical_expr::ColumnarValue]) -> Vec<Arg> {
    use datafusion::logical_expr::ColumnarValue;
    args.iter()
        .skip(1)
        .map(|a| match a {
            ColumnarValue::Scalar(s) => Arg::Scalar(s.clone()),
            ColumnarValue::Array(a) => Arg::Array(std::sync::Arc::clone(a)),
        })
        .collect()
}

/// A function's result: a scalar when every argument was one (the array
/// then has one row), else the array.
pub fn columnar_result(
    args: &[datafusion::logical_expr::ColumnarValue],
    array: ArrayRef,
) -> Result<datafusion::logical_expr::ColumnarValue> {
    use datafusion::logical_expr::ColumnarValue;
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}
