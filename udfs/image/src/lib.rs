//! SQL functions over images.
//!
//! | function | returns | on a bad image |
//! |---|---|---|
//! | `image_width(bytes)` | `uint32` | error naming the row; `try_image_width` returns NULL |
//! | `image_height(bytes)` | `uint32` | error; `try_image_height` returns NULL |
//! | `image_format(bytes)` | text: `jpeg`, `png`, `webp`, `gif`, `bmp`, `tiff` | error; `try_image_format` returns NULL |
//!
//! All read only the header, never the pixels, and return NULL for a NULL
//! input. Arguments are encoded image bytes (`bytea`): the `image` column
//! of `read_images`, or any binary column.

mod header;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use header::{HeaderField, ImageHeaderUdf};

/// Every image function.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    let mut out = vec![];
    for field in [HeaderField::Width, HeaderField::Height, HeaderField::Format] {
        for lenient in [false, true] {
            out.push(Arc::new(ScalarUDF::new_from_impl(ImageHeaderUdf::new(
                field, lenient,
            ))));
        }
    }
    out
}

/// Registers [`functions`] with a context.
pub fn register_all(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(f.as_ref().clone());
    }
}
