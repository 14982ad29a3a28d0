//! Audio as tables: `read_audio('dir/' | 'glob' | 'file' [, 'on_error=…'])`
//! and `CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '…'`, over every
//! object store.
//!
//! Columns: `path`, `size`, `modified` come from the listing; `format`,
//! `codec`, `sample_rate`, `channels`, `duration`, `frames`, `bit_depth`
//! and `tags` from the file's headers — the first and last 64 KiB of the
//! file (where containers keep their headers, MP4 index, Ogg end page and
//! ID3v1/APE tags), the whole file only when a header lies elsewhere; the
//! duration comes from the container and stream headers, not a decode (an
//! estimate from the bit rate for MP3 without a Xing/VBRI header, exact
//! otherwise). `audio` is the encoded bytes (read only when selected);
//! `error` says why a file could not be read (with `on_error = 'null'`).
//! Pruning, header filters on `format`, LIMIT and batching work as for
//! images ([`crate::media_scan`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, UInt16Builder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{
    Session, TableFunctionArgs, TableFunctionImpl, TableProvider, TableProviderFactory,
};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use quiver_media::arrow_types::{audio_field, audio_tags_array, audio_tags_data_type};
use quiver_media::{AudioInfo, MediaError, probe_audio};

use crate::listing::{SplitArgs, parse_location, split_args};
use crate::media_scan::{
    COL_FORMAT, MediaReader, MediaScan, OnError, Reads, ScanContext, binary_column, check_location,
    filters_pushdown, listing_column, listing_fields, parse_options, single_location,
    string_column,
};

/// Bytes read from each end of a file to find its headers.
const HEADER_BYTES: u64 = 64 * 1024;
/// Files read at once per partition.
const CONCURRENT_READS: usize = 8;

/// The schema of every audio table.
pub fn audio_schema() -> SchemaRef {
    let mut fields = listing_fields();
    fields.extend([
        Field::new("format", DataType::Utf8, true),
        Field::new("codec", DataType::Utf8, true),
        Field::new("sample_rate", DataType::UInt32, true),
        Field::new("channels", DataType::UInt16, true),
        Field::new("duration", DataType::Float64, true),
        Field::new("frames", DataType::UInt64, true),
        Field::new("bit_depth", DataType::UInt32, true),
        Field::new("tags", audio_tags_data_type(), true),
        audio_field("audio"),
        Field::new("error", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

const COL_CODEC: usize = 4;
const COL_SAMPLE_RATE: usize = 5;
const COL_CHANNELS: usize = 6;
const COL_DURATION: usize = 7;
const COL_FRAMES: usize = 8;
const COL_BIT_DEPTH: usize = 9;
const COL_TAGS: usize = 10;
const COL_AUDIO: usize = 11;
const COL_ERROR: usize = 12;

/// A table over the audio files at one location.
#[derive(Debug)]
pub struct AudioTable {
    url: ListingTableUrl,
    on_error: OnError,
    schema: SchemaRef,
}

impl AudioTable {
    /// A table over `location` (path, prefix ending in `/`, or glob) with
    /// options `on_error`.
    pub fn try_new(location: &str, options: &HashMap<String, String>) -> Result<Self> {
        Ok(Self {
            url: parse_location(location)?,
            on_error: parse_options("audio", options)?,
            schema: audio_schema(),
        })
    }
}

#[async_trait]
impl TableProvider for AudioTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters_pushdown(filters))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        MediaScan {
            reader: Arc::new(AudioReader),
            url: &self.url,
            schema: &self.schema,
            on_error: self.on_error,
            header_columns: &[
                COL_FORMAT,
                COL_CODEC,
                COL_SAMPLE_RATE,
                COL_CHANNELS,
                COL_DURATION,
                COL_FRAMES,
                COL_BIT_DEPTH,
                COL_TAGS,
                COL_ERROR,
            ],
        }
        .plan(state, projection, filters, limit)
        .await
    }
}

/// One file's row before projection.
struct Row {
    meta: ObjectMeta,
    info: Option<AudioInfo>,
    bytes: Option<Bytes>,
    error: Option<String>,
}

/// Reads audio files for the shared media scan.
#[derive(Debug)]
struct AudioReader;

impl AudioReader {
    /// Reads one file as far as the query needs; `None` when a header
    /// filter leaves it out.
    async fn read(scan: &ScanContext, meta: ObjectMeta) -> Result<Option<Row>> {
        let mut row = Row {
            meta,
            info: None,
            bytes: None,
            error: None,
        };
        if scan.reads == Reads::Nothing {
            return Ok(Some(row));
        }
        let size = row.meta.size;
        // The whole file when it is needed and no header filter may spare
        // it, or when its two ends cover it anyway.
        let mut whole = (scan.reads == Reads::Everything && scan.header_filter.is_none())
            || size <= 2 * HEADER_BYTES;
        let mut data: Option<Bytes> = None;
        let mut probed = if whole {
            let all = scan.get_all(&row.meta).await?;
            let p = probe_audio(&[(0, &all)], all.len() as u64);
            data = Some(all);
            p
        } else {
            let tail = size - HEADER_BYTES;
            let parts = scan
                .get_ranges(&row.meta, &[0..HEADER_BYTES, tail..size])
                .await?;
            match parts.as_slice() {
                [head, end] => probe_audio(&[(0, head), (tail, end)], size),
                _ => Err(MediaError::Incomplete),
            }
        };
        if matches!(probed, Err(MediaError::Incomplete)) && !whole {
            let all = scan.get_all(&row.meta).await?;
            probed = probe_audio(&[(0, &all)], all.len() as u64);
            data = Some(all);
            whole = true;
        }
        match probed {
            Ok(info) => row.info = Some(info),
            Err(e) => row.error = Some(scan.bad_file("audio", &row.meta, e)?),
        }
        let format = row.info.as_ref().map(|i| i.format.name());
        if !scan.passes(&row.meta, format)? {
            return Ok(None);
        }
        if row.error.is_none() && scan.reads == Reads::Everything {
            row.bytes = match data {
                Some(d) if whole => Some(d),
                _ => Some(scan.get_all(&row.meta).await?),
            };
        }
        Ok(Some(row))
    }
}

impl MediaReader for AudioReader {
    fn exec_name(&self) -> &'static str {
        "AudioExec"
    }

    fn bytes_column(&self) -> usize {
        COL_AUDIO
    }

    fn batch(
        &self,
        scan: Arc<ScanContext>,
        chunk: Vec<ObjectMeta>,
    ) -> BoxFuture<'static, Result<RecordBatch>> {
        Box::pin(async move {
            let rows: Vec<Option<Row>> = futures::stream::iter(chunk)
                .map(|meta| Self::read(&scan, meta))
                .buffered(CONCURRENT_READS)
                .try_collect()
                .await?;
            let rows = scan.keep(rows, |r| r.error.is_some());
            let columns = scan
                .projection
                .iter()
                .map(|c| build_column(*c, &scan.store_url, &rows))
                .collect();
            scan.finish(columns, rows.len())
        })
    }
}

fn build_column(col: usize, store_url: &ObjectStoreUrl, rows: &[Row]) -> ArrayRef {
    let infos = || rows.iter().map(|r| r.info.as_ref());
    match col {
        0..COL_FORMAT => listing_column(col, store_url, rows.iter().map(|r| &r.meta)),
        COL_FORMAT => string_column(infos().map(|i| i.map(|i| i.format.name()))),
        COL_CODEC => string_column(infos().map(|i| i.map(|i| i.codec))),
        COL_SAMPLE_RATE | COL_BIT_DEPTH => {
            let mut b = UInt32Builder::new();
            for i in infos() {
                b.append_option(i.and_then(|i| {
                    if col == COL_SAMPLE_RATE {
                        i.sample_rate
                    } else {
                        i.bit_depth
                    }
                }));
            }
            Arc::new(b.finish())
        }
        COL_CHANNELS => {
            let mut b = UInt16Builder::new();
            for i in infos() {
                b.append_option(i.and_then(|i| i.channels));
            }
            Arc::new(b.finish())
        }
        COL_DURATION => {
            let mut b = Float64Builder::new();
            for i in infos() {
                b.append_option(i.and_then(|i| i.duration));
            }
            Arc::new(b.finish())
        }
        COL_FRAMES => {
            let mut b = UInt64Builder::new();
            for i in infos() {
                b.append_option(i.and_then(|i| i.frames));
            }
            Arc::new(b.finish())
        }
        COL_TAGS => {
            let tags: Vec<_> = infos().map(|i| i.and_then(|i| i.tags.as_ref())).collect();
            Arc::new(audio_tags_array(&tags))
        }
        COL_AUDIO => binary_column(rows.iter().map(|r| r.bytes.as_deref())),
        _ => string_column(rows.iter().map(|r| r.error.as_deref())),
    }
}

/// `read_audio(location [, 'on_error=fail|null|skip'])`.
#[derive(Debug)]
pub struct ReadAudioFunction;

impl TableFunctionImpl for ReadAudioFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let SplitArgs { locations, options } = split_args("read_audio", args.exprs())?;
        let location = single_location("read_audio", "clips/*.wav", &locations)?;
        let options: HashMap<String, String> = options.into_iter().collect();
        let table = AudioTable::try_new(&location, &options)?;
        check_location(args.session(), &table.url, &location)?;
        Ok(Arc::new(table))
    }
}

/// `CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '…' [OPTIONS ('on_error' 'skip')]`.
#[derive(Debug, Default)]
pub struct AudioTableFactory;

#[async_trait]
impl TableProviderFactory for AudioTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return plan_err!("an AUDIO table takes one LOCATION");
        };
        Ok(Arc::new(AudioTable::try_new(location, &cmd.options)?))
    }
}
