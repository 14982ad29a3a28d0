//! SQL functions over images.
//!
//! Header only (never decode the pixels):
//!
//! | function | returns |
//! |---|---|
//! | `image_width(img)`, `image_height(img)` | `uint32` |
//! | `image_format(img)` | text: `jpeg`, `png`, `webp`, `gif`, `bmp`, `tiff` |
//! | `image_exif(img)` | struct: make, model, taken_at, orientation, GPS |
//!
//! Decoding (under `quiver.media.max_image_pixels` / `max_image_alloc`;
//! JPEGs shrunk right after decoding are decoded DCT-scaled):
//!
//! | function | returns |
//! |---|---|
//! | `image_decode(img)` | decoded pixels |
//! | `image_encode(img, 'png'\|'jpeg'\|'webp' [, quality])` | encoded bytes |
//! | `image_resize(img, w, h [, filter])`, `image_crop(img, x, y, w, h)`, `image_thumbnail(img, max_side)`, `image_convert(img, mode)`, `image_rotate(img, degrees)`, `image_flip(img [, direction])`, `image_auto_orient(img)` | decoded pixels |
//! | `image_to_tensor(img, w, h [, mean, std])` | `FixedSizeList<Float32, 3·h·w>`, CHW |
//! | `image_phash(img)`, `image_dhash(img)`, `image_ahash(img)` | `uint64` |
//! | `hamming_distance(a, b)` | `int` |
//!
//! `img` is encoded bytes (the `image` column of `read_images`, any
//! `bytea`) or the decoded pixels another function returned. NULL in gives
//! NULL out. A bad image is an error naming the row; every function that
//! reads an image has a `try_` twin that returns NULL instead.

mod hamming;
mod header;
mod transform;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use hamming::HammingDistance;
pub use header::{HeaderField, ImageHeaderUdf};
pub use transform::{ImageOp, ImageUdf};

/// Every image function.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    let mut out = vec![];
    for lenient in [false, true] {
        for field in [HeaderField::Width, HeaderField::Height, HeaderField::Format] {
            out.push(Arc::new(ScalarUDF::new_from_impl(ImageHeaderUdf::new(
                field, lenient,
            ))));
        }
        for op in ImageOp::ALL {
            out.push(Arc::new(ScalarUDF::new_from_impl(ImageUdf::new(
                op, lenient,
            ))));
        }
    }
    out.push(Arc::new(ScalarUDF::new_from_impl(
        HammingDistance::default(),
    )));
    out
}

/// Registers [`functions`] with a context.
pub fn register_all(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(f.as_ref().clone());
    }
}
