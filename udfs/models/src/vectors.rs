//! `cosine_similarity`, `inner_product` and `l2_distance` over embeddings
//! and `float4[]` / `float8[]` arrays.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, GenericListArray,
    OffsetSizeTrait,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Which measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorOp {
    /// `a·b / (|a| |b|)`; NaN when either has length zero.
    Cosine,
    /// `a·b`.
    Inner,
    /// `|a − b|`.
    L2,
}

impl VectorOp {
    pub const ALL: [VectorOp; 3] = [VectorOp::Cosine, VectorOp::Inner, VectorOp::L2];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine_similarity",
            Self::Inner => "inner_product",
            Self::L2 => "l2_distance",
        }
    }

    fn apply(self, a: &[f32], b: &[f32]) -> f64 {
        // Eight partial sums, so that the loop vectorises.
        let (mut dot, mut aa, mut bb, mut dd) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                dot[l] += x[l] * y[l];
                aa[l] += x[l] * x[l];
                bb[l] += y[l] * y[l];
                let d = x[l] - y[l];
                dd[l] += d * d;
            }
        }
        let sum = |v: [f32; 8]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
        let (mut dot, mut aa, mut bb, mut dd) = (sum(dot), sum(aa), sum(bb), sum(dd));
        for (&x, &y) in ra.iter().zip(rb) {
            let (x, y) = (f64::from(x), f64::from(y));
            dot += x * y;
            aa += x * x;
            bb += y * y;
            dd += (x - y) * (x - y);
        }
        match self {
            Self::Cosine => dot / (aa.sqrt() * bb.sqrt()),
            Self::Inner => dot,
            Self::L2 => dd.sqrt(),
        }
    }
}

/// One of the vector measures.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct VectorUdf {
    op: VectorOp,
    signature: Signature,
}

impl VectorUdf {
    pub fn new(op: VectorOp) -> Self {
        Self {
            op,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn float32_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, true))
}

/// The vectors of one argument, row by row, as `f32` slices.
enum Vectors<'a> {
    Fixed(&'a FixedSizeListArray, &'a [f32], usize),
    List(&'a GenericListArray<i32>, &'a [f32]),
    Large(&'a GenericListArray<i64>, &'a [f32]),
    Null,
}

fn values_of(values: &ArrayRef) -> Option<&[f32]> {
    values
        .as_any()
        .downcast_ref::<Float32Array>()
        .map(|v| v.values().as_ref())
}

fn list_row<'a, O: OffsetSizeTrait>(
    l: &GenericListArray<O>,
    values: &'a [f32],
    row: usize,
) -> Option<&'a [f32]> {
    if l.is_null(row) {
        return None;
    }
    let offsets = l.value_offsets();
    values.get(offsets[row].as_usize()..offsets[row + 1].as_usize())
}

impl<'a> Vectors<'a> {
    fn of(array: &'a ArrayRef) -> Option<Self> {
        let any = array.as_any();
        if array.data_type() == &DataType::Null {
            return Some(Self::Null);
        }
        if let Some(f) = any.downcast_ref::<FixedSizeListArray>() {
            let d = usize::try_from(f.value_length()).unwrap_or(0);
            return Some(Self::Fixed(f, values_of(f.values())?, d));
        }
        if let Some(l) = any.downcast_ref::<GenericListArray<i32>>() {
            return Some(Self::List(l, values_of(l.values())?));
        }
        if let Some(l) = any.downcast_ref::<GenericListArray<i64>>() {
            return Some(Self::Large(l, values_of(l.values())?));
        }
        None
    }

    fn row(&self, row: usize) -> Option<&'a [f32]> {
        match self {
            Self::Fixed(f, values, d) => {
                if f.is_null(row) {
                    None
                } else {
                    let start = (f.offset() + row) * d;
                    values.get(start..start + d)
                }
            }
            Self::List(l, values) => list_row(l, values, row),
            Self::Large(l, values) => list_row(l, values, row),
            Self::Null => None,
        }
    }
}

impl ScalarUDFImpl for VectorUdf {
    fn name(&self) -> &str {
        self.op.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Both arguments become vectors of `float4`: embeddings stay as they
    /// are, `float8[]` and integer arrays are cast.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "{}(a, b) takes 2 arguments, got {}",
                self.name(),
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .map(|t| match t {
                DataType::FixedSizeList(f, n) if f.data_type().is_numeric() => {
                    Ok(DataType::FixedSizeList(float32_item(), *n))
                }
                DataType::List(f)
                    if f.data_type().is_numeric() || f.data_type() == &DataType::Null =>
                {
                    Ok(DataType::List(float32_item()))
                }
                DataType::LargeList(f) if f.data_type().is_numeric() => {
                    Ok(DataType::LargeList(float32_item()))
                }
                DataType::Null => Ok(DataType::Null),
                other => plan_err!(
                    "{}: expected an embedding or an array of numbers, got {other}",
                    self.name()
                ),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return exec_err!("{}(a, b) takes 2 arguments", self.name());
        };
        let all_scalar = matches!((a, b), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        // A constant side (the query vector) is read once, not per row.
        let side = |v: &ColumnarValue| -> Result<(ArrayRef, bool)> {
            match v {
                ColumnarValue::Scalar(s) => Ok((s.to_array_of_size(1)?, true)),
                ColumnarValue::Array(a) => Ok((a.clone(), false)),
            }
        };
        let ((aa, a_const), (ba, b_const)) = (side(a)?, side(b)?);
        let (Some(va), Some(vb)) = (Vectors::of(&aa), Vectors::of(&ba)) else {
            return exec_err!("{}: arguments are not vectors of float4", self.name());
        };
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let x = va.row(if a_const { 0 } else { row });
            let y = vb.row(if b_const { 0 } else { row });
            out.push(match (x, y) {
                (Some(x), Some(y)) => {
                    if x.len() != y.len() {
                        return exec_err!(
                            "{}: row {}: vectors of different lengths ({} and {})",
                            self.name(),
                            row + 1,
                            x.len(),
                            y.len()
                        );
                    }
                    Some(self.op.apply(x, y))
                }
                _ => None,
            });
        }
        let array = Float64Array::from(out);
        if all_scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&array, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(Arc::new(array)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures() {
        let a = [1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 3.0];
        let b = [0.0, 1.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, -3.0];
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
        let na: f64 = a.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let l2: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from((x - y) * (x - y)))
            .sum::<f64>()
            .sqrt();
        assert!((VectorOp::Inner.apply(&a, &b) - dot).abs() < 1e-9);
        assert!((VectorOp::Cosine.apply(&a, &b) - dot / (na * nb)).abs() < 1e-9);
        assert!((VectorOp::L2.apply(&a, &b) - l2).abs() < 1e-9);
        assert!(VectorOp::Cosine.apply(&[0.0; 3], &[1.0; 3]).is_nan());
    }
}
