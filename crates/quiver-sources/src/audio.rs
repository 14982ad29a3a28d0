//! Audio as tables: `read_audio('dir/' | 'glob' | 'file' [, 'on_error=…'])`
//! and `CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '…'`, over every
//! object store.
//!
//! Columns: `path`, `size`, `modified` come from the listing; `format`,
//! `codec`, `sample_rate`, `channels`, `duration`, `frames`, `bit_depth`
//! and `tags` from the file's headers — the first and last 16 KiB of the
//! file (where containers keep their headers, MP4 index, Ogg end page and
//! ID3v1/APE tags), then the first and last MiB, the whole file only when
//! a header lies elsewhere still; the
//! duration comes from the container and stream headers, not a decode (an
//! estimate from the bit rate for MP3 without a Xing/VBRI header, exact
//! otherwise). `audio` is the encoded bytes (read only when selected);
//! `error` says why a file could not be read (with `on_error = 'null'`).
//! Pruning, header filters on `format`, LIMIT and batching work as for
//! images ([`crate::media_scan`]).

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, BinaryViewBuilder, Float64Builder, RecordBatch, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::future::BoxFuture;

use object_store::ObjectMeta;
use quiver_media::arrow_types::{audio_field, audio_tags_array, audio_tags_data_type};
use quiver_media::{AudioInfo, MediaError, probe_audio};

use crate::media_scan::{
    COL_FORMAT, MediaReader, MediaTableFactory, ReadMediaFunction, Reads, ScanContext,
    listing_column, listing_fields, read_batch, string_column,
};

/// Bytes read from each end of a file to find its headers: enough for WAV,
/// FLAC, Ogg and MP3 headers without pictures.
const HEADER_BYTES: u64 = 16 * 1024;
/// Bytes read from each end when the headers lie further in (MP4 indexes
/// and embedded cover art), before falling back to the whole file.
const LARGE_HEADER_BYTES: u64 = 1024 * 1024;
/// Bytes of audio files one batch holds at most (a larger file still
/// makes a batch of its own).
const AUDIO_BATCH_BYTES: u64 = 4 * 1024 * 1024;
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

/// One file's row before projection.
struct Row {
    meta: ObjectMeta,
    info: Option<AudioInfo>,
    bytes: Option<Bytes>,
    error: Option<String>,
}

/// Reads audio files for the shared media scan.
#[derive(Debug)]
pub struct AudioReader;

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
        let mut probed = Err(MediaError::Incomplete);
        if whole {
            let all = scan.get_all(&row.meta).await?;
            probed = probe_audio(&[(0, &all)], all.len() as u64);
            data = Some(all);
        } else {
            // Both ends, then larger ends, then the whole file.
            for ends in [HEADER_BYTES, LARGE_HEADER_BYTES] {
                if size <= 2 * ends && ends > HEADER_BYTES {
                    break;
                }
                let tail = size - ends;
                let parts = scan.get_ranges(&row.meta, &[0..ends, tail..size]).await?;
                if let [head, end] = parts.as_slice() {
                    probed = probe_audio(&[(0, head), (tail, end)], size);
                }
                if !matches!(probed, Err(MediaError::Incomplete)) {
                    break;
                }
            }
        }
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
    fn kind(&self) -> &'static str {
        "audio"
    }

    fn stored_as(&self) -> &'static str {
        "AUDIO"
    }

    fn table_function(&self) -> (&'static str, &'static str) {
        ("read_audio", "clips/*.wav")
    }

    fn schema(&self) -> SchemaRef {
        audio_schema()
    }

    fn header_columns(&self) -> &'static [usize] {
        &[
            COL_FORMAT,
            COL_CODEC,
            COL_SAMPLE_RATE,
            COL_CHANNELS,
            COL_DURATION,
            COL_FRAMES,
            COL_BIT_DEPTH,
            COL_TAGS,
            COL_ERROR,
        ]
    }

    fn exec_name(&self) -> &'static str {
        "AudioExec"
    }

    fn bytes_column(&self) -> usize {
        COL_AUDIO
    }

    fn check(&self, bytes: &[u8]) -> std::result::Result<(), MediaError> {
        probe_audio(&[(0, bytes)], bytes.len() as u64).map(drop)
    }

    /// Decoded audio is 2–6 times its encoded size and functions build a
    /// column of it per batch: smaller batches keep that column small.
    fn batch_bytes(&self) -> u64 {
        AUDIO_BATCH_BYTES
    }

    /// Measured here: FLAC costs about 5 times as much per byte to decode
    /// as PCM WAV; lossy codecs, ten times smaller, more still.
    fn cost_per_byte(&self, meta: &ObjectMeta) -> u64 {
        let name = meta.location.as_ref().to_ascii_lowercase();
        match name.rsplit('.').next() {
            Some("wav" | "wave") => 1,
            Some("flac") => 5,
            Some("mp3" | "ogg" | "oga" | "m4a" | "mp4" | "aac") => 10,
            _ => 2,
        }
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
        COL_AUDIO => {
            // One buffer per file, the bytes as read: no copy.
            let mut b = BinaryViewBuilder::with_capacity(rows.len());
            for r in rows {
                match &r.bytes {
                    Some(bytes) => match u32::try_from(bytes.len()) {
                        Ok(len) => {
                            let block = b.append_block(Buffer::from(bytes.clone()));
                            if b.try_append_view(block, 0, len).is_err() {
                                b.append_value(bytes);
                            }
                        }
                        // Over 4 GiB: beyond what a view addresses.
                        Err(_) => b.append_value(bytes),
                    },
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        _ => string_column(rows.iter().map(|r| r.error.as_deref())),
    }
}

/// `read_audio(location [, 'on_error=fail|null|skip'])`.
pub fn read_audio_function() -> ReadMediaFunction {
    ReadMediaFunction(Arc::new(AudioReader))
}

/// `CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '…'`.
pub fn audio_table_factory() -> MediaTableFactory {
    MediaTableFactory(Arc::new(AudioReader))
}
