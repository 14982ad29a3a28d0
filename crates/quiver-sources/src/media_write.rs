//! Writing media back: `COPY (SELECT …) TO 'dir/' STORED AS IMAGES
//! [OPTIONS (path_column 'name', image_column 'image')]` and `STORED AS
//! AUDIO [OPTIONS (path_column 'name', audio_column 'audio', format
//! 'wav'|'flac')]` write one file per row to any object store.
//!
//! - The media column is `image_column` / `audio_column`, else the one
//!   column tagged as that media, else the only binary column. Its values
//!   must be encoded media (`image_encode(…)`, `audio_encode(…)` or the
//!   bytes column of `read_images` / `read_audio`); decoded pixels must be
//!   encoded first. Decoded audio (`audio_decode(…)`) is encoded as the
//!   `format` option says (16-bit WAV unless `'flac'`).
//! - The file name is the row's `path_column` value (a relative path;
//!   sub-folders are created; `..` and absolute paths are refused), given
//!   the format's extension when it has none; without `path_column`, rows
//!   are numbered `000001.jpeg`, `000002.png`, … in the order they arrive.
//! - Rows whose image is NULL are skipped; two rows naming the same file
//!   are an error. `COPY` reports the number of files written.
//! - Files are written concurrently, a bounded number at a time, as the
//!   rows stream in.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::file_options::file_type::GetExt;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, exec_err, not_impl_err, plan_err};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::physical_plan::{
    FileOpener, FileScanConfig, FileSinkConfig, FileSource,
};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{LexRequirement, PhysicalExpr};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream, Statistics,
};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use quiver_media::arrow_types::{MEDIA_AUDIO, MEDIA_IMAGE, MEDIA_KEY, is_pcm, read_pcm_ref};
use quiver_media::audio::{AudioEncoding, detect_audio_format, encode_audio};
use quiver_media::detect_image_format;

/// Files written at once.
const CONCURRENT_WRITES: usize = 16;

/// Which media a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteKind {
    /// `STORED AS IMAGES`.
    #[default]
    Images,
    /// `STORED AS AUDIO`.
    Audio,
}

impl WriteKind {
    fn stored_as(self) -> &'static str {
        match self {
            Self::Images => "IMAGES",
            Self::Audio => "AUDIO",
        }
    }

    fn column_option(self) -> &'static str {
        match self {
            Self::Images => "image_column",
            Self::Audio => "audio_column",
        }
    }

    fn media_tag(self) -> &'static str {
        match self {
            Self::Images => MEDIA_IMAGE,
            Self::Audio => MEDIA_AUDIO,
        }
    }

    fn encode_hint(self) -> &'static str {
        match self {
            Self::Images => "image_encode(…, 'png'|'jpeg'|'webp')",
            Self::Audio => "audio_encode(…, 'wav'|'flac')",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Images => "encoded images",
            Self::Audio => "encoded audio",
        }
    }

    fn formats(self) -> &'static str {
        match self {
            Self::Images => "JPEG, PNG, WebP, GIF, BMP, TIFF",
            Self::Audio => "WAV, FLAC, MP3, Ogg, AAC/M4A",
        }
    }

    /// The extension of the encoded media in `bytes`.
    fn detect(self, bytes: &[u8]) -> Option<&'static str> {
        match self {
            Self::Images => detect_image_format(bytes).map(|f| f.name()),
            Self::Audio => detect_audio_format(bytes).map(|f| f.name()),
        }
    }

    fn read_with(self) -> &'static str {
        match self {
            Self::Images => {
                "image folders are read with read_images('dir/') or CREATE EXTERNAL TABLE … STORED AS IMAGES"
            }
            Self::Audio => {
                "audio folders are read with read_audio('dir/') or CREATE EXTERNAL TABLE … STORED AS AUDIO"
            }
        }
    }
}

/// The options of `STORED AS IMAGES` / `AUDIO` when writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Column naming each row's file.
    pub path_column: Option<String>,
    /// Column holding the media.
    pub media_column: Option<String>,
    /// How decoded audio is encoded.
    pub encoding: Option<AudioEncoding>,
}

impl WriteOptions {
    fn parse(kind: WriteKind, options: &HashMap<String, String>) -> Result<Self> {
        let mut out = Self::default();
        for (key, value) in options {
            match key.trim_start_matches("format.") {
                "path_column" => out.path_column = Some(value.clone()),
                k if k == kind.column_option() => out.media_column = Some(value.clone()),
                "format" if kind == WriteKind::Audio => {
                    out.encoding = Some(
                        AudioEncoding::parse(value)
                            .map_err(|e| DataFusionError::Plan(e.to_string()))?,
                    );
                }
                other => {
                    let known = match kind {
                        WriteKind::Images => "path_column, image_column",
                        WriteKind::Audio => "path_column, audio_column, format",
                    };
                    return plan_err!(
                        "unknown option '{other}' for STORED AS {} (known: {known})",
                        kind.stored_as()
                    );
                }
            }
        }
        Ok(out)
    }
}

/// Registered under `images`, so that `COPY … STORED AS IMAGES` finds it.
#[derive(Debug, Default)]
pub struct ImagesFormatFactory;

/// Registered under `audio`, so that `COPY … STORED AS AUDIO` finds it.
#[derive(Debug, Default)]
pub struct AudioFormatFactory;

macro_rules! media_format_factory {
    ($factory:ident, $kind:expr, $ext:literal) => {
        impl GetExt for $factory {
            fn get_ext(&self) -> String {
                $ext.to_string()
            }
        }

        impl FileFormatFactory for $factory {
            fn create(
                &self,
                _state: &dyn Session,
                format_options: &HashMap<String, String>,
            ) -> Result<Arc<dyn FileFormat>> {
                Ok(Arc::new(MediaFormat {
                    kind: $kind,
                    options: WriteOptions::parse($kind, format_options)?,
                }))
            }

            fn default(&self) -> Arc<dyn FileFormat> {
                Arc::new(MediaFormat {
                    kind: $kind,
                    options: WriteOptions::default(),
                })
            }
        }
    };
}

media_format_factory!(ImagesFormatFactory, WriteKind::Images, "images");
media_format_factory!(AudioFormatFactory, WriteKind::Audio, "audio");

/// The writing side of media folders (reading is `read_images` /
/// `read_audio` and their table factories, which know about headers and
/// `on_error`).
#[derive(Debug, Default)]
pub struct MediaFormat {
    kind: WriteKind,
    options: WriteOptions,
}

#[async_trait]
impl FileFormat for MediaFormat {
    fn get_ext(&self) -> String {
        String::new()
    }

    fn get_ext_with_compression(&self, _c: &FileCompressionType) -> Result<String> {
        Ok(String::new())
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        None
    }

    async fn infer_schema(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        _objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        not_impl_err!("{}", self.kind.read_with())
    }

    async fn infer_stats(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        _object: &ObjectMeta,
    ) -> Result<Statistics> {
        Ok(Statistics::new_unknown(&table_schema))
    }

    async fn create_physical_plan(
        &self,
        _state: &dyn Session,
        _conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        not_impl_err!("{}", self.kind.read_with())
    }

    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        _state: &dyn Session,
        conf: FileSinkConfig,
        order_requirements: Option<LexRequirement>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let kind = self.kind;
        if !conf.table_partition_cols.is_empty() {
            return not_impl_err!(
                "PARTITIONED BY with STORED AS {}; use path_column with a folder in the name instead",
                kind.stored_as()
            );
        }
        let schema = conf.output_schema().clone();
        let media_column = media_column(kind, &schema, self.options.media_column.as_deref())?;
        let path_column = match &self.options.path_column {
            Some(name) => Some(schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "path_column '{name}' is not a column of the query (columns: {})",
                    column_names(&schema)
                ))
            })?),
            None => None,
        };
        let sink = MediaSink {
            kind,
            config: conf,
            media_column,
            path_column,
            encoding: self.options.encoding.unwrap_or(AudioEncoding::Wav),
        };
        Ok(Arc::new(DataSinkExec::new(
            input,
            Arc::new(sink),
            order_requirements,
        )))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(NoMediaSource {
            kind: self.kind,
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

fn column_names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column holding the media; see the module docs.
fn media_column(kind: WriteKind, schema: &SchemaRef, named: Option<&str>) -> Result<usize> {
    let usable = |t: &DataType| {
        matches!(
            t,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        ) || (kind == WriteKind::Audio && is_pcm(t))
    };
    let option = kind.column_option();
    if let Some(name) = named {
        let i = schema.index_of(name).map_err(|_| {
            DataFusionError::Plan(format!(
                "{option} '{name}' is not a column of the query (columns: {})",
                column_names(schema)
            ))
        })?;
        if !usable(schema.field(i).data_type()) {
            return plan_err!(
                "{option} '{name}' is {}, not {}; encode it with {}",
                schema.field(i).data_type(),
                kind.what(),
                kind.encode_hint()
            );
        }
        return Ok(i);
    }
    let tagged: Vec<usize> = (0..schema.fields().len())
        .filter(|i| {
            let f = schema.field(*i);
            usable(f.data_type())
                && f.metadata().get(MEDIA_KEY).map(String::as_str) == Some(kind.media_tag())
        })
        .collect();
    if let [i] = tagged.as_slice() {
        return Ok(*i);
    }
    let candidates: Vec<usize> = (0..schema.fields().len())
        .filter(|i| usable(schema.field(*i).data_type()))
        .collect();
    match candidates.as_slice() {
        [i] => Ok(*i),
        [] => plan_err!(
            "STORED AS {} needs a column of {} (bytea), e.g. {}; the query has: {}",
            kind.stored_as(),
            kind.what(),
            kind.encode_hint(),
            column_names(schema)
        ),
        _ => plan_err!(
            "STORED AS {} found several media columns ({}); name one with OPTIONS ({option} '…')",
            kind.stored_as(),
            column_names(schema)
        ),
    }
}

/// A relative path inside the output folder, checked.
fn safe_relative(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err("an empty file name".to_string());
    }
    if trimmed.starts_with('/') || trimmed.starts_with('\\') || trimmed.contains(':') {
        return Err(format!("'{trimmed}' is not a relative path"));
    }
    let parts: Vec<&str> = trimmed.split(['/', '\\']).collect();
    if parts
        .iter()
        .any(|p| *p == ".." || *p == "." || p.is_empty())
    {
        return Err(format!(
            "'{trimmed}' must not contain '..', '.' or empty segments"
        ));
    }
    Ok(parts.join("/"))
}

/// Writes each row's media to its own file.
#[derive(Debug)]
struct MediaSink {
    kind: WriteKind,
    config: FileSinkConfig,
    media_column: usize,
    path_column: Option<usize>,
    /// How decoded audio is encoded.
    encoding: AudioEncoding,
}

impl DisplayAs for MediaSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.config.output_schema();
        let name = match self.kind {
            WriteKind::Images => "ImagesSink",
            WriteKind::Audio => "AudioSink",
        };
        write!(
            f,
            "{name}: dir={}, {}={}",
            self.config.original_url,
            self.kind.column_option(),
            schema.field(self.media_column).name()
        )?;
        if let Some(p) = self.path_column {
            write!(f, ", path_column={}", schema.field(p).name())?;
        }
        Ok(())
    }
}

/// One file to write.
struct Job {
    path: Path,
    bytes: bytes::Bytes,
}

impl MediaSink {
    /// Each row's encoded media (`None` for NULL), encoding decoded audio.
    fn values(&self, batch: &RecordBatch, first_row: u64) -> Result<Vec<Option<bytes::Bytes>>> {
        let column = batch.column(self.media_column);
        if is_pcm(column.data_type()) {
            let pcm = column.as_struct();
            return (0..batch.num_rows())
                .map(|row| {
                    let n = first_row + row as u64 + 1;
                    let failed = |e: quiver_media::MediaError| {
                        DataFusionError::Execution(format!("COPY … STORED AS AUDIO: row {n}: {e}"))
                    };
                    match read_pcm_ref(pcm, row).map_err(failed)? {
                        None => Ok(None),
                        Some(p) => Ok(Some(bytes::Bytes::from(
                            encode_audio(p, self.encoding).map_err(failed)?,
                        ))),
                    }
                })
                .collect();
        }
        let bytes = cast(column, &DataType::Binary)?;
        let bytes: &BinaryArray = bytes.as_binary();
        Ok(bytes
            .iter()
            .map(|v| v.map(bytes::Bytes::copy_from_slice))
            .collect())
    }

    /// The files of one batch; `seen` catches duplicate names.
    fn jobs(
        &self,
        batch: &RecordBatch,
        base: &Path,
        first_row: u64,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<Job>> {
        let stored_as = self.kind.stored_as();
        let values = self.values(batch, first_row)?;
        let names = match self.path_column {
            Some(c) => Some(cast(batch.column(c), &DataType::Utf8)?),
            None => None,
        };
        let names = names.as_ref().map(|n| n.as_string::<i32>());
        let mut jobs = Vec::with_capacity(batch.num_rows());
        for (row, value) in values.into_iter().enumerate() {
            let Some(bytes) = value else { continue };
            let n = first_row + row as u64 + 1;
            let Some(ext) = self.kind.detect(&bytes) else {
                return exec_err!(
                    "COPY … STORED AS {stored_as}: row {n} does not hold {} ({}); encode it with {}",
                    self.kind.what(),
                    self.kind.formats(),
                    self.kind.encode_hint()
                );
            };
            let relative = match names {
                Some(names) if names.is_null(row) => {
                    return exec_err!(
                        "COPY … STORED AS {stored_as}: row {n} has a NULL path_column"
                    );
                }
                Some(names) => {
                    let name = safe_relative(names.value(row)).map_err(|reason| {
                        DataFusionError::Execution(format!(
                            "COPY … STORED AS {stored_as}: row {n}: path_column holds {reason}"
                        ))
                    })?;
                    let last = name.rsplit('/').next().unwrap_or(&name);
                    if last.contains('.') {
                        name
                    } else {
                        format!("{name}.{ext}")
                    }
                }
                None => format!("{n:06}.{ext}"),
            };
            if !seen.insert(relative.clone()) {
                return exec_err!(
                    "COPY … STORED AS {stored_as}: two rows write the same file '{relative}'"
                );
            }
            let mut path = base.clone();
            for part in relative.split('/') {
                path = path.clone().join(part);
            }
            jobs.push(Job { path, bytes });
        }
        Ok(jobs)
    }
}

#[async_trait]
impl DataSink for MediaSink {
    fn schema(&self) -> &SchemaRef {
        self.config.output_schema()
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let store = context
            .runtime_env()
            .object_store(&self.config.object_store_url)?;
        let Some(url) = self.config.table_paths.first() else {
            return exec_err!(
                "COPY … STORED AS {}: no output location",
                self.kind.stored_as()
            );
        };
        let base = url.prefix().clone();
        let mut seen = HashSet::new();
        let mut rows = 0u64;
        // The first error stops new writes, but the writes in flight are
        // waited for, so that a failed COPY's clean-up sees every file it
        // wrote (a local write runs on a blocking thread and finishes even
        // when its future is dropped).
        let error: std::sync::Mutex<Option<DataFusionError>> = std::sync::Mutex::new(None);
        let record = |e: DataFusionError| {
            if let Ok(mut first) = error.lock() {
                first.get_or_insert(e);
            }
        };
        let failed = || error.lock().map(|e| e.is_some()).unwrap_or(true);
        let jobs = data
            .map(|batch| -> Result<Vec<Job>> {
                let batch = batch?;
                let jobs = self.jobs(&batch, &base, rows, &mut seen)?;
                rows += batch.num_rows() as u64;
                Ok(jobs)
            })
            .map_ok(|jobs| futures::stream::iter(jobs.into_iter().map(Ok)))
            .try_flatten()
            .scan((), |_, job| {
                futures::future::ready(match job {
                    Ok(job) if !failed() => Some(job),
                    Ok(_) => None,
                    Err(e) => {
                        record(e);
                        None
                    }
                })
            });
        let written = jobs
            .map(|job| {
                let store = Arc::clone(&store);
                async move {
                    store
                        .put(&job.path, PutPayload::from(job.bytes))
                        .await
                        .map_err(|e| {
                            DataFusionError::ObjectStore(Box::new(e))
                                .context(format!("writing {}", job.path))
                        })
                }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .fold(0u64, |n, put| {
                let n = match put {
                    Ok(_) => n + 1,
                    Err(e) => {
                        record(e);
                        n
                    }
                };
                futures::future::ready(n)
            })
            .await;
        if let Some(e) = error.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(written)
    }
}

/// [`FileFormat::file_source`] must return a source; media folders are
/// never read through it (see [`WriteKind::read_with`]).
#[derive(Debug)]
struct NoMediaSource {
    kind: WriteKind,
    table_schema: TableSchema,
    metrics: ExecutionPlanMetricsSet,
}

impl FileSource for NoMediaSource {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        not_impl_err!("{}", self.kind.read_with())
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(NoMediaSource {
            kind: self.kind,
            table_schema: self.table_schema.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        match self.kind {
            WriteKind::Images => "images",
            WriteKind::Audio => "audio",
        }
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_folder() {
        assert_eq!(safe_relative("a/b.jpg").unwrap(), "a/b.jpg");
        assert!(safe_relative("../x.jpg").is_err());
        assert!(safe_relative("/etc/x").is_err());
        assert!(safe_relative("a//b").is_err());
        assert!(safe_relative("c:/x").is_err());
        assert!(safe_relative(" ").is_err());
    }
}
