//! Writing images back: `COPY (SELECT …) TO 'dir/' STORED AS IMAGES
//! [OPTIONS (path_column 'name', image_column 'image')]` writes one file
//! per row to any object store.
//!
//! - The image column is `image_column`, else the one column tagged as
//!   image media, else the only binary column. Its values must be encoded
//!   images (`image_encode(…)` or the `image` column of `read_images`);
//!   decoded pixels must be encoded first.
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
use quiver_media::arrow_types::{MEDIA_IMAGE, MEDIA_KEY};
use quiver_media::detect_image_format;

/// Files written at once.
const CONCURRENT_WRITES: usize = 16;

/// The options of `STORED AS IMAGES` when writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesWriteOptions {
    /// Column naming each row's file.
    pub path_column: Option<String>,
    /// Column holding the encoded image.
    pub image_column: Option<String>,
}

impl ImagesWriteOptions {
    fn parse(options: &HashMap<String, String>) -> Result<Self> {
        let mut out = Self::default();
        for (key, value) in options {
            match key.trim_start_matches("format.") {
                "path_column" => out.path_column = Some(value.clone()),
                "image_column" => out.image_column = Some(value.clone()),
                other => {
                    return plan_err!(
                        "unknown option '{other}' for STORED AS IMAGES (known: path_column, image_column)"
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

impl GetExt for ImagesFormatFactory {
    fn get_ext(&self) -> String {
        "images".to_string()
    }
}

impl FileFormatFactory for ImagesFormatFactory {
    fn create(
        &self,
        _state: &dyn Session,
        format_options: &HashMap<String, String>,
    ) -> Result<Arc<dyn FileFormat>> {
        Ok(Arc::new(ImagesFormat {
            options: ImagesWriteOptions::parse(format_options)?,
        }))
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(ImagesFormat::default())
    }
}

/// The writing side of image folders (reading is `read_images` and the
/// `IMAGES` table factory, which know about headers and `on_error`).
#[derive(Debug, Default)]
pub struct ImagesFormat {
    options: ImagesWriteOptions,
}

const READ_WITH: &str =
    "image folders are read with read_images('dir/') or CREATE EXTERNAL TABLE … STORED AS IMAGES";

#[async_trait]
impl FileFormat for ImagesFormat {
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
        not_impl_err!("{READ_WITH}")
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
        not_impl_err!("{READ_WITH}")
    }

    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        _state: &dyn Session,
        conf: FileSinkConfig,
        order_requirements: Option<LexRequirement>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !conf.table_partition_cols.is_empty() {
            return not_impl_err!(
                "PARTITIONED BY with STORED AS IMAGES; use path_column with a folder in the name instead"
            );
        }
        let schema = conf.output_schema().clone();
        let image_column = image_column(&schema, self.options.image_column.as_deref())?;
        let path_column = match &self.options.path_column {
            Some(name) => Some(schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "path_column '{name}' is not a column of the query (columns: {})",
                    column_names(&schema)
                ))
            })?),
            None => None,
        };
        let sink = ImagesSink {
            config: conf,
            image_column,
            path_column,
        };
        Ok(Arc::new(DataSinkExec::new(
            input,
            Arc::new(sink),
            order_requirements,
        )))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(NoImagesSource {
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

/// The column holding the images; see the module docs.
fn image_column(schema: &SchemaRef, named: Option<&str>) -> Result<usize> {
    let binary = |t: &DataType| {
        matches!(
            t,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        )
    };
    if let Some(name) = named {
        let i = schema.index_of(name).map_err(|_| {
            DataFusionError::Plan(format!(
                "image_column '{name}' is not a column of the query (columns: {})",
                column_names(schema)
            ))
        })?;
        if !binary(schema.field(i).data_type()) {
            return plan_err!(
                "image_column '{name}' is {}, not encoded image bytes; encode it with image_encode(…, 'png'|'jpeg'|'webp')",
                schema.field(i).data_type()
            );
        }
        return Ok(i);
    }
    let tagged: Vec<usize> = (0..schema.fields().len())
        .filter(|i| {
            let f = schema.field(*i);
            binary(f.data_type())
                && f.metadata().get(MEDIA_KEY).map(String::as_str) == Some(MEDIA_IMAGE)
        })
        .collect();
    if let [i] = tagged.as_slice() {
        return Ok(*i);
    }
    let binaries: Vec<usize> = (0..schema.fields().len())
        .filter(|i| binary(schema.field(*i).data_type()))
        .collect();
    match binaries.as_slice() {
        [i] => Ok(*i),
        [] => plan_err!(
            "STORED AS IMAGES needs a column of encoded images (bytea), e.g. image_encode(…, 'jpeg'); the query has: {}",
            column_names(schema)
        ),
        _ => plan_err!(
            "STORED AS IMAGES found several binary columns ({}); name one with OPTIONS (image_column '…')",
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

/// Writes each row's image to its own file.
#[derive(Debug)]
struct ImagesSink {
    config: FileSinkConfig,
    image_column: usize,
    path_column: Option<usize>,
}

impl DisplayAs for ImagesSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.config.output_schema();
        write!(
            f,
            "ImagesSink: dir={}, image_column={}",
            self.config.original_url,
            schema.field(self.image_column).name()
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

impl ImagesSink {
    /// The files of one batch; `seen` catches duplicate names.
    fn jobs(
        &self,
        batch: &RecordBatch,
        base: &Path,
        first_row: u64,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<Job>> {
        let images = cast(batch.column(self.image_column), &DataType::Binary)?;
        let images: &BinaryArray = images.as_binary();
        let names = match self.path_column {
            Some(c) => Some(cast(batch.column(c), &DataType::Utf8)?),
            None => None,
        };
        let names = names.as_ref().map(|n| n.as_string::<i32>());
        let mut jobs = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if images.is_null(row) {
                continue;
            }
            let n = first_row + row as u64 + 1;
            let bytes = images.value(row);
            let Some(format) = detect_image_format(bytes) else {
                return exec_err!(
                    "COPY … STORED AS IMAGES: row {n} does not hold an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF); encode decoded pixels with image_encode(…)"
                );
            };
            let ext = format.name();
            let relative = match names {
                Some(names) if names.is_null(row) => {
                    return exec_err!("COPY … STORED AS IMAGES: row {n} has a NULL path_column");
                }
                Some(names) => {
                    let name = safe_relative(names.value(row)).map_err(|reason| {
                        DataFusionError::Execution(format!(
                            "COPY … STORED AS IMAGES: row {n}: path_column holds {reason}"
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
                    "COPY … STORED AS IMAGES: two rows write the same file '{relative}'"
                );
            }
            let mut path = base.clone();
            for part in relative.split('/') {
                path = path.clone().join(part);
            }
            jobs.push(Job {
                path,
                bytes: bytes::Bytes::copy_from_slice(bytes),
            });
        }
        Ok(jobs)
    }
}

#[async_trait]
impl DataSink for ImagesSink {
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
            return exec_err!("COPY … STORED AS IMAGES: no output location");
        };
        let base = url.prefix().clone();
        let mut seen = HashSet::new();
        let mut rows = 0u64;
        let jobs = data
            .map(|batch| -> Result<Vec<Job>> {
                let batch = batch?;
                let jobs = self.jobs(&batch, &base, rows, &mut seen)?;
                rows += batch.num_rows() as u64;
                Ok(jobs)
            })
            .map_ok(|jobs| futures::stream::iter(jobs.into_iter().map(Ok)))
            .try_flatten();
        let written = jobs
            .map_ok(|job| {
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
            .try_buffer_unordered(CONCURRENT_WRITES)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await?;
        Ok(written)
    }
}

/// [`FileFormat::file_source`] must return a source; images are never read
/// through it (see [`READ_WITH`]).
#[derive(Debug)]
struct NoImagesSource {
    table_schema: TableSchema,
    metrics: ExecutionPlanMetricsSet,
}

impl FileSource for NoImagesSource {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        not_impl_err!("{READ_WITH}")
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(NoImagesSource {
            table_schema: self.table_schema.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "images"
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
