//! Images as tables: `read_images('dir/' | 'glob' | 'file' [, 'on_error=…'])`
//! and `CREATE EXTERNAL TABLE t STORED AS IMAGES LOCATION '…'`, over every
//! object store.
//!
//! Columns: `path`, `size`, `modified` come from the listing; `format`,
//! `width`, `height` from the file's header (only its first 64 KiB are read
//! unless the header lies further in); `image` is the encoded bytes (read
//! only when selected); `error` says why a file could not be read (with
//! `on_error = 'null'`). A query that selects none of the header columns
//! reads no bytes at all, and `count(*)` reads only the listing (except with
//! `on_error = 'skip'`, where bad files must be found to be left out).
//! Filters on `path`, `size` and `modified` are evaluated on the listing
//! (pushed down as exact), so excluded files are never opened; filters that
//! also use `format` are evaluated on the header, so excluded files are
//! never read further. `exif` comes from the header bytes too (an EXIF
//! block beyond the first 64 KiB reads as NULL unless `image` is selected).
//! Batches hold at most `batch_size` files and, when the bytes are read,
//! about [`BATCH_BYTES`] of them, so memory stays bounded whatever the
//! listing's size.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::future::BoxFuture;
use object_store::ObjectMeta;
use quiver_media::arrow_types::{exif_array, exif_data_type, image_field};
use quiver_media::exif::{ExifInfo, read_exif};
use quiver_media::{MediaError, probe_image};

pub use crate::media_scan::{BATCH_BYTES, MediaExec, OnError, file_address, read_batch};
use crate::media_scan::{
    COL_FORMAT, MediaReader, MediaTableFactory, ReadMediaFunction, Reads, ScanContext,
    binary_column, listing_column, listing_fields, string_column,
};

/// Bytes read to find an image's header.
const HEADER_BYTES: u64 = 64 * 1024;
/// Files read at once per partition.
const CONCURRENT_READS: usize = 8;

/// The schema of every image table.
pub fn images_schema() -> SchemaRef {
    let mut fields = listing_fields();
    fields.extend([
        Field::new("format", DataType::Utf8, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
        image_field("image"),
        Field::new("exif", exif_data_type(), true),
        Field::new("error", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

const COL_WIDTH: usize = 4;
const COL_HEIGHT: usize = 5;
const COL_IMAGE: usize = 6;
const COL_EXIF: usize = 7;
const COL_ERROR: usize = 8;

/// One file's row before projection.
struct Row {
    meta: ObjectMeta,
    format: Option<&'static str>,
    width: Option<u32>,
    height: Option<u32>,
    bytes: Option<bytes::Bytes>,
    exif: Option<ExifInfo>,
    error: Option<String>,
}

impl Row {
    /// A row with only the listing's columns filled.
    fn listed(meta: ObjectMeta) -> Self {
        Self {
            meta,
            format: None,
            width: None,
            height: None,
            bytes: None,
            exif: None,
            error: None,
        }
    }
}

/// Reads image files for [`MediaExec`]: headers from the first 64 KiB,
/// EXIF from the bytes read, the whole file when `image` is selected.
#[derive(Debug)]
pub struct ImagesReader;

impl ImagesReader {
    /// Reads one file as far as the query needs; `None` when a header
    /// filter leaves it out.
    async fn read(scan: &ScanContext, meta: ObjectMeta) -> Result<Option<Row>> {
        let mut row = Row::listed(meta);
        if scan.reads == Reads::Nothing {
            return Ok(Some(row));
        }
        // Read the whole file at once when it is needed and no header
        // filter may spare it, or when it is small anyway.
        let mut whole = (scan.reads == Reads::Everything && scan.header_filter.is_none())
            || row.meta.size <= HEADER_BYTES;
        let mut data = if whole {
            scan.get_all(&row.meta).await?
        } else {
            scan.get_range(&row.meta, 0..HEADER_BYTES).await?
        };
        let mut probed = probe_image(&data);
        if !whole && matches!(probed, Err(MediaError::Corrupt { .. })) {
            // The header may lie past the first bytes (large EXIF blocks).
            data = scan.get_all(&row.meta).await?;
            whole = true;
            probed = probe_image(&data);
        }
        match probed {
            Ok(info) => {
                row.format = Some(info.format.name());
                row.width = Some(info.width);
                row.height = Some(info.height);
            }
            Err(e) => row.error = Some(scan.bad_file("image", &row.meta, e)?),
        }
        if !scan.passes(&row.meta, row.format)? {
            return Ok(None);
        }
        if row.error.is_none() {
            if scan.reads == Reads::Everything && !whole {
                data = scan.get_all(&row.meta).await?;
            }
            if scan.projection.contains(&COL_EXIF) {
                row.exif = read_exif(&data);
            }
            if scan.reads == Reads::Everything {
                row.bytes = Some(data);
            }
        }
        Ok(Some(row))
    }
}

impl MediaReader for ImagesReader {
    fn kind(&self) -> &'static str {
        "image"
    }

    fn stored_as(&self) -> &'static str {
        "IMAGES"
    }

    fn table_function(&self) -> (&'static str, &'static str) {
        ("read_images", "photos/*.jpg")
    }

    fn schema(&self) -> SchemaRef {
        images_schema()
    }

    fn header_columns(&self) -> &'static [usize] {
        &[COL_FORMAT, COL_WIDTH, COL_HEIGHT, COL_EXIF, COL_ERROR]
    }

    fn exec_name(&self) -> &'static str {
        "ImagesExec"
    }

    fn bytes_column(&self) -> usize {
        COL_IMAGE
    }

    fn check(&self, bytes: &[u8]) -> std::result::Result<(), MediaError> {
        probe_image(bytes).map(drop)
    }

    fn batch(
        &self,
        scan: Arc<ScanContext>,
        chunk: Vec<ObjectMeta>,
    ) -> BoxFuture<'static, Result<RecordBatch>> {
        Box::pin(async move {
            read_batch(
                &scan,
                chunk,
                CONCURRENT_READS,
                |meta| Self::read(&scan, meta),
                |r: &Row| r.error.is_some(),
                build_column,
            )
            .await
        })
    }
}

fn build_column(col: usize, store_url: &ObjectStoreUrl, rows: &[Row]) -> ArrayRef {
    match col {
        0..COL_FORMAT => listing_column(col, store_url, rows.iter().map(|r| &r.meta)),
        COL_FORMAT => string_column(rows.iter().map(|r| r.format)),
        COL_WIDTH | COL_HEIGHT => {
            let mut b = UInt32Builder::new();
            for r in rows {
                b.append_option(if col == COL_WIDTH { r.width } else { r.height });
            }
            Arc::new(b.finish())
        }
        COL_IMAGE => binary_column(rows.iter().map(|r| r.bytes.as_deref())),
        COL_EXIF => {
            let values: Vec<Option<ExifInfo>> = rows.iter().map(|r| r.exif.clone()).collect();
            Arc::new(exif_array(&values))
        }
        _ => string_column(rows.iter().map(|r| r.error.as_deref())),
    }
}

/// `read_images(location [, 'on_error=fail|null|skip'])`.
pub fn read_images_function() -> ReadMediaFunction {
    ReadMediaFunction(Arc::new(ImagesReader))
}

/// `CREATE EXTERNAL TABLE t STORED AS IMAGES LOCATION '…'`.
pub fn images_table_factory() -> MediaTableFactory {
    MediaTableFactory(Arc::new(ImagesReader))
}
