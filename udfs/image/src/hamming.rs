//! `hamming_distance(a, b)`: bits that differ between two 64-bit hashes.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int32Builder, Int64Array, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

/// See the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HammingDistance {
    signature: Signature,
}

impl Default for HammingDistance {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn doc() -> &'static Documentation {
    static DOC: std::sync::OnceLock<Documentation> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        Documentation::builder(
            DocSection {
                include: true,
                label: "Image Functions",
                description: None,
            },
            "Counts the bits that differ between two 64-bit integers, such as two perceptual hashes (image_phash, image_dhash, image_ahash). Returns int; NULL if either is NULL. Signed integers count by their two's-complement bits.",
            "hamming_distance(a, b)",
        )
        .with_argument("a", "a 64-bit hash (any integer type)")
        .with_argument("b", "another")
        .with_sql_example(
            "SELECT hamming_distance(image_phash(a.image), image_phash(b.image)) FROM ...",
        )
        .build()
    })
}

/// The 64 bits of an integer column, whatever its type.
fn bits(a: &ArrayRef) -> Result<Vec<Option<u64>>> {
    if let Some(u) = a.as_any().downcast_ref::<UInt64Array>() {
        return Ok(u.iter().collect());
    }
    let signed = cast(a, &DataType::Int64)?;
    let Some(i) = signed.as_any().downcast_ref::<Int64Array>() else {
        return exec_err!("hamming_distance: expected integers");
    };
    Ok(i.iter().map(|v| v.map(|v| v as u64)).collect())
}

impl ScalarUDFImpl for HammingDistance {
    fn name(&self) -> &str {
        "hamming_distance"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "hamming_distance takes two integers, got {} arguments",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .map(|t| match t {
                DataType::UInt64 => Ok(DataType::UInt64),
                t if t.is_integer() || t == &DataType::Null => Ok(DataType::Int64),
                t => plan_err!("hamming_distance takes two integers, got {t}"),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return plan_err!("hamming_distance takes two integers");
        };
        let scalar = matches!((a, b), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let a = bits(&a.to_array(args.number_rows)?)?;
        let b = bits(&b.to_array(args.number_rows)?)?;
        let mut out = Int32Builder::with_capacity(a.len());
        for (x, y) in a.into_iter().zip(b) {
            out.append_option(x.zip(y).map(|(x, y)| (x ^ y).count_ones() as i32));
        }
        let out: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(doc())
    }
}
