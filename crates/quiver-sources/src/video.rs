//! Video as tables: `read_video('dir/' | 'glob' | 'file' [, on_error => …])`
//! and `CREATE EXTERNAL TABLE t STORED AS VIDEO LOCATION '…'`, over every
//! object store.
//!
//! Columns: `path`, `size`, `modified` from the listing; `container`,
//! `codec`, `width`, `height`, `fps`, `duration`, `frame_count`,
//! `bit_rate`, `rotation`, `has_audio`, `audio_codec`, `audio_sample_rate`
//! from the file's headers (and `audio`, the audio track decoded and
//! encoded as 16-bit WAV, only when selected), which FFmpeg finds by reading the file through
//! ranged requests ([`StoreReader`]): the start of the file, and its end
//! where the index lies there (MP4 written without `faststart`), never the
//! whole file. `error` says why a file could not be read (with
//! `on_error = 'null'`). Filters on the listing columns prune files before
//! any is opened; LIMIT stops the scan.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, BinaryViewBuilder, BooleanBuilder, Float64Builder, Int32Builder, RecordBatch,
    UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::future::BoxFuture;

use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use quiver_media::MediaError;
use quiver_media::arrow_types::audio_field;
use quiver_media::audio::{AudioEncoding, encode_audio};
use quiver_media::video::{Interrupt, VideoInfo, VideoLimits, decode_video_audio, probe_video};

use crate::media_scan::{
    COL_FORMAT, MediaReader, MediaTableFactory, ReadMediaFunction, Reads, ScanContext,
    listing_column, listing_fields, read_batch, string_column,
};

/// The first request's size; every second further read in sequence
/// doubles it.
const FIRST_BLOCK: u64 = 64 * 1024;
/// The largest request.
const MAX_BLOCK: u64 = 4 * 1024 * 1024;
/// Files up to this size are read whole by their first request.
const WHOLE_FILE: u64 = 1024 * 1024;
/// Files probed at once per partition.
const CONCURRENT_PROBES: usize = 4;

/// An object read by ranged requests as a blocking [`Read`] + [`Seek`], for
/// FFmpeg: reads in sequence fetch ever larger blocks (64 KiB, doubling
/// every second block up to 4 MiB), a seek starts small again; a file of
/// at most 1 MiB is read whole by the first request. Runs on a blocking thread; each
/// request waits on the runtime `handle`.
#[derive(Debug)]
pub struct StoreReader {
    store: Arc<dyn ObjectStore>,
    location: object_store::path::Path,
    size: u64,
    pos: u64,
    /// The last block fetched and where it starts.
    block: Option<(u64, Bytes)>,
    /// Blocks fetched in sequence since the last seek.
    in_sequence: u32,
    handle: tokio::runtime::Handle,
}

impl StoreReader {
    /// A reader over `meta` in `store`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        meta: &ObjectMeta,
        handle: tokio::runtime::Handle,
    ) -> Self {
        Self {
            store,
            location: meta.location.clone(),
            size: meta.size,
            pos: 0,
            block: None,
            in_sequence: 0,
            handle,
        }
    }
}

impl Read for StoreReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let cached = self
            .block
            .as_ref()
            .is_some_and(|(at, b)| self.pos >= *at && self.pos < at + b.len() as u64);
        if !cached {
            let sequential = self
                .block
                .as_ref()
                .is_some_and(|(at, b)| self.pos == at + b.len() as u64);
            self.in_sequence = if sequential { self.in_sequence + 1 } else { 0 };
            let block = if self.size <= WHOLE_FILE {
                self.size
            } else {
                (FIRST_BLOCK << (self.in_sequence / 2).min(6)).min(MAX_BLOCK)
            };
            let end = (self.pos + block.max(buf.len() as u64)).min(self.size);
            let range = self.pos..end;
            let store = Arc::clone(&self.store);
            let location = self.location.clone();
            let bytes = self
                .handle
                .block_on(async move { store.get_range(&location, range).await })
                .map_err(std::io::Error::other)?;
            if bytes.is_empty() {
                return Ok(0);
            }
            self.block = Some((self.pos, bytes));
        }
        let Some((at, block)) = &self.block else {
            return Ok(0);
        };
        let from = usize::try_from(self.pos - at).map_err(std::io::Error::other)?;
        let n = buf.len().min(block.len() - from);
        buf[..n].copy_from_slice(&block[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for StoreReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        self.pos = target;
        Ok(target)
    }
}

/// The schema of every video table.
pub fn video_schema() -> SchemaRef {
    let mut fields = listing_fields();
    fields.extend([
        Field::new("container", DataType::Utf8, true),
        Field::new("codec", DataType::Utf8, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
        Field::new("fps", DataType::Float64, true),
        Field::new("duration", DataType::Float64, true),
        Field::new("frame_count", DataType::UInt64, true),
        Field::new("bit_rate", DataType::UInt64, true),
        Field::new("rotation", DataType::Int32, true),
        Field::new("has_audio", DataType::Boolean, true),
        Field::new("audio_codec", DataType::Utf8, true),
        Field::new("audio_sample_rate", DataType::UInt32, true),
        audio_field("audio"),
        Field::new("error", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

const COL_CODEC: usize = 4;
const COL_WIDTH: usize = 5;
const COL_HEIGHT: usize = 6;
const COL_FPS: usize = 7;
const COL_DURATION: usize = 8;
const COL_FRAME_COUNT: usize = 9;
const COL_BIT_RATE: usize = 10;
const COL_ROTATION: usize = 11;
const COL_HAS_AUDIO: usize = 12;
const COL_AUDIO_CODEC: usize = 13;
const COL_AUDIO_RATE: usize = 14;
const COL_AUDIO: usize = 15;
const COL_ERROR: usize = 16;

/// One file's row before projection.
struct Row {
    meta: ObjectMeta,
    info: Option<VideoInfo>,
    /// The audio track as 16-bit WAV, when the query asks for it.
    audio: Option<Vec<u8>>,
    error: Option<String>,
}

/// Runs `work` on a blocking thread over a [`StoreReader`] of `meta` and
/// its name (FFmpeg reads block).
async fn with_reader<T: Send + 'static>(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    work: impl FnOnce(StoreReader, &str) -> T + Send + 'static,
) -> Result<T> {
    let reader = StoreReader::new(Arc::clone(store), meta, tokio::runtime::Handle::current());
    let name = meta.location.to_string();
    tokio::task::spawn_blocking(move || work(reader, &name))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Probes `meta` on a blocking thread.
pub async fn probe_object(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    limits: VideoLimits,
) -> Result<std::result::Result<VideoInfo, MediaError>> {
    with_reader(store, meta, move |reader, name| {
        probe_video(reader, name, &limits)
    })
    .await
}

/// The audio track of `meta` as 16-bit WAV, decoded on a blocking thread.
async fn audio_track(
    scan: &ScanContext,
    meta: &ObjectMeta,
) -> Result<std::result::Result<Option<Vec<u8>>, MediaError>> {
    let limits = scan.settings.video_limits;
    let max_bytes = scan.settings.audio_limits.max_alloc;
    with_reader(&scan.store, meta, move |reader, name| {
        let pcm = decode_video_audio(reader, name, &limits, max_bytes, Interrupt::never())?;
        pcm.map(|p| encode_audio(p.view(), AudioEncoding::Wav))
            .transpose()
    })
    .await
}

/// Reads video files' headers for the shared media scan.
#[derive(Debug)]
pub struct VideoReader;

impl VideoReader {
    async fn read(scan: &ScanContext, meta: ObjectMeta) -> Result<Option<Row>> {
        let mut row = Row {
            meta,
            info: None,
            audio: None,
            error: None,
        };
        if scan.reads == Reads::Nothing {
            return Ok(Some(row));
        }
        match probe_object(&scan.store, &row.meta, scan.settings.video_limits).await? {
            Ok(info) => row.info = Some(info),
            Err(e) => row.error = Some(scan.bad_file("video", &row.meta, e)?),
        }
        let container = row.info.as_ref().map(|i| i.container.as_str());
        if !scan.passes(&row.meta, container)? {
            return Ok(None);
        }
        let has_audio = row.info.as_ref().is_some_and(|i| i.audio_codec.is_some());
        if has_audio && scan.projection.contains(&COL_AUDIO) {
            match audio_track(scan, &row.meta).await? {
                Ok(wav) => row.audio = wav,
                Err(e) => row.error = Some(scan.bad_file("video", &row.meta, e)?),
            }
        }
        Ok(Some(row))
    }
}

impl MediaReader for VideoReader {
    fn kind(&self) -> &'static str {
        "video"
    }

    fn stored_as(&self) -> &'static str {
        "VIDEO"
    }

    fn table_function(&self) -> (&'static str, &'static str) {
        ("read_video", "clips/*.mp4")
    }

    fn schema(&self) -> SchemaRef {
        video_schema()
    }

    fn header_columns(&self) -> &'static [usize] {
        &[
            COL_FORMAT,
            COL_CODEC,
            COL_WIDTH,
            COL_HEIGHT,
            COL_FPS,
            COL_DURATION,
            COL_FRAME_COUNT,
            COL_BIT_RATE,
            COL_ROTATION,
            COL_HAS_AUDIO,
            COL_AUDIO_CODEC,
            COL_AUDIO_RATE,
            COL_AUDIO,
            COL_ERROR,
        ]
    }

    fn exec_name(&self) -> &'static str {
        "VideoExec"
    }

    /// Video tables hold no bytes column: frames come from
    /// `video_frames`.
    fn bytes_column(&self) -> usize {
        usize::MAX
    }

    fn check(&self, bytes: &[u8]) -> std::result::Result<(), MediaError> {
        probe_video(
            std::io::Cursor::new(bytes.to_vec()),
            "video",
            &VideoLimits::default(),
        )
        .map(drop)
    }

    /// Probing costs about the same per file whatever its size: each
    /// file weighs 2^32 in all.
    fn cost_per_byte(&self, meta: &ObjectMeta) -> u64 {
        (1u64 << 32) / meta.size.max(1)
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
                CONCURRENT_PROBES,
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
    let u32s = |f: fn(&VideoInfo) -> Option<u32>| -> ArrayRef {
        let mut b = UInt32Builder::new();
        for i in infos() {
            b.append_option(i.and_then(f));
        }
        Arc::new(b.finish())
    };
    let u64s = |f: fn(&VideoInfo) -> Option<u64>| -> ArrayRef {
        let mut b = UInt64Builder::new();
        for i in infos() {
            b.append_option(i.and_then(f));
        }
        Arc::new(b.finish())
    };
    let f64s = |f: fn(&VideoInfo) -> Option<f64>| -> ArrayRef {
        let mut b = Float64Builder::new();
        for i in infos() {
            b.append_option(i.and_then(f));
        }
        Arc::new(b.finish())
    };
    match col {
        0..COL_FORMAT => listing_column(col, store_url, rows.iter().map(|r| &r.meta)),
        COL_FORMAT => string_column(infos().map(|i| i.map(|i| i.container.as_str()))),
        COL_CODEC => string_column(infos().map(|i| i.map(|i| i.codec.as_str()))),
        COL_WIDTH => u32s(|i| Some(i.width)),
        COL_HEIGHT => u32s(|i| Some(i.height)),
        COL_FPS => f64s(|i| i.fps),
        COL_DURATION => f64s(|i| i.duration),
        COL_FRAME_COUNT => u64s(|i| i.frame_count),
        COL_BIT_RATE => u64s(|i| i.bit_rate),
        COL_ROTATION => {
            let mut b = Int32Builder::new();
            for i in infos() {
                b.append_option(i.map(|i| i.rotation));
            }
            Arc::new(b.finish())
        }
        COL_HAS_AUDIO => {
            let mut b = BooleanBuilder::new();
            for i in infos() {
                b.append_option(i.map(|i| i.audio_codec.is_some()));
            }
            Arc::new(b.finish())
        }
        COL_AUDIO_CODEC => string_column(infos().map(|i| i.and_then(|i| i.audio_codec.as_deref()))),
        COL_AUDIO_RATE => u32s(|i| i.audio_sample_rate),
        COL_AUDIO => {
            let mut b = BinaryViewBuilder::with_capacity(rows.len());
            for r in rows {
                b.append_option(r.audio.as_deref());
            }
            Arc::new(b.finish())
        }
        _ => string_column(rows.iter().map(|r| r.error.as_deref())),
    }
}

/// `read_video(location [, on_error => 'fail' | 'null' | 'skip'])`.
pub fn read_video_function() -> ReadMediaFunction {
    ReadMediaFunction(Arc::new(VideoReader))
}

/// `CREATE EXTERNAL TABLE t STORED AS VIDEO LOCATION '…'`.
pub fn video_table_factory() -> MediaTableFactory {
    MediaTableFactory(Arc::new(VideoReader))
}
