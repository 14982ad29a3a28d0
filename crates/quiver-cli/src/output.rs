//! Result sinks: an aligned table, CSV, JSON, NDJSON or Parquet, to stdout
//! or to a file that appears only when the whole run succeeded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::arrow::util::pretty::pretty_format_batches_with_options;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use futures::StreamExt;

use crate::args::{Format, OutputArgs};
use crate::progress::Progress;

type Out = Box<dyn Write + Send>;

/// Where and how results go.
pub struct Sink {
    format: Format,
    max_rows: usize,
    timing: bool,
    out: Option<Out>,
    /// (temporary path, final path) when writing to a file.
    file: Option<(PathBuf, PathBuf)>,
    parquet: Option<ArrowWriter<Out>>,
}

impl OutputArgs {
    /// Opens the destination: stdout, or a temporary file beside `--output`.
    pub fn open(&self) -> anyhow::Result<Sink> {
        let (out, file): (Out, _) = match &self.output {
            Some(path) => {
                let name = path
                    .file_name()
                    .with_context(|| format!("--output {} is not a file name", path.display()))?;
                let tmp = path.with_file_name(format!(".{}.quiver-tmp", name.to_string_lossy()));
                let f = File::create(&tmp)
                    .with_context(|| format!("cannot create output file {}", path.display()))?;
                (Box::new(BufWriter::new(f)), Some((tmp, path.clone())))
            }
            None => {
                if self.format == Format::Parquet {
                    bail!("--format parquet writes binary data: give a file with --output");
                }
                (Box::new(BufWriter::new(std::io::stdout())), None)
            }
        };
        Ok(Sink {
            format: self.format,
            max_rows: self.max_rows,
            timing: self.timing,
            out: Some(out),
            file,
            parquet: None,
        })
    }
}

fn io(e: std::io::Error) -> DataFusionError {
    DataFusionError::IoError(e)
}

impl Sink {
    /// Whether statement timings are printed.
    pub fn timing(&self) -> bool {
        self.timing
    }

    /// Turns timing output on or off (the shell's `\timing`).
    pub fn set_timing(&mut self, on: bool) {
        self.timing = on;
    }

    fn out(&mut self) -> Result<&mut Out> {
        self.out
            .as_mut()
            .ok_or_else(|| DataFusionError::Internal("output already closed".into()))
    }

    /// Streams one statement's result into the sink and returns its row
    /// count. Statements without columns (DDL) print nothing.
    pub async fn write_stream(
        &mut self,
        mut stream: SendableRecordBatchStream,
        progress: &Progress,
    ) -> Result<u64> {
        let schema = stream.schema();
        let rows;
        if schema.fields().is_empty() && self.format != Format::Table {
            return pump(&mut stream, progress, |_| Ok(())).await;
        }
        match self.format {
            Format::Table => {
                let mut shown: Vec<RecordBatch> = vec![];
                let mut shown_rows = 0usize;
                let max = self.max_rows;
                rows = pump(&mut stream, progress, |batch| {
                    let room = if max == 0 {
                        usize::MAX
                    } else {
                        max - shown_rows
                    };
                    let take = batch.num_rows().min(room);
                    if take > 0 {
                        shown_rows += take;
                        shown.push(batch.slice(0, take));
                    }
                    Ok(())
                })
                .await?;
                progress.clear();
                if schema.fields().is_empty() {
                    return Ok(rows);
                }
                let table = format_table(&schema, &shown)?;
                let out = self.out()?;
                writeln!(out, "{table}").map_err(io)?;
                let plural = if rows == 1 { "" } else { "s" };
                if (shown_rows as u64) < rows {
                    writeln!(out, "({rows} row{plural}, {shown_rows} shown)\n").map_err(io)?;
                } else {
                    writeln!(out, "({rows} row{plural})\n").map_err(io)?;
                }
            }
            Format::Csv => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(self.out()?);
                rows = pump(&mut stream, progress, |b| Ok(w.write(b)?)).await?;
                if rows == 0 {
                    // The header alone, for an empty result.
                    w.write(&RecordBatch::new_empty(schema.clone()))?;
                }
            }
            Format::Ndjson => {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(self.out()?);
                rows = pump(&mut stream, progress, |b| Ok(w.write(b)?)).await?;
                w.finish()?;
            }
            Format::Json => {
                let mut w = datafusion::arrow::json::ArrayWriter::new(self.out()?);
                rows = pump(&mut stream, progress, |b| Ok(w.write(b)?)).await?;
                w.finish()?;
                writeln!(self.out()?).map_err(io)?;
            }
            Format::Parquet => {
                if self.parquet.is_some() {
                    return Err(DataFusionError::Plan(
                        "--format parquet holds the result of one statement, and an earlier statement already returned rows".into(),
                    ));
                }
                let out = self
                    .out
                    .take()
                    .ok_or_else(|| DataFusionError::Internal("output already closed".into()))?;
                let mut w = ArrowWriter::try_new(out, schema, None)?;
                rows = pump(&mut stream, progress, |b| Ok(w.write(b)?)).await?;
                self.parquet = Some(w);
                return Ok(rows);
            }
        }
        self.out()?.flush().map_err(io)?;
        Ok(rows)
    }

    /// Finishes the output; a file output is moved into place only now.
    pub fn commit(mut self) -> anyhow::Result<()> {
        if let Some(w) = self.parquet.take() {
            let mut out = w.into_inner().context("cannot finish the Parquet output")?;
            out.flush()?;
        } else if let Some(out) = self.out.as_mut() {
            out.flush()?;
        }
        self.out = None;
        if let Some((tmp, path)) = self.file.take() {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write output file {}", path.display()))?;
        }
        Ok(())
    }

    /// Drops the output; a file output is deleted.
    pub fn discard(mut self) {
        self.parquet = None;
        self.out = None;
        if let Some((tmp, _)) = self.file.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.file.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Feeds every batch of `stream` to `write`, counting rows for the
/// progress line; returns the row count.
async fn pump(
    stream: &mut SendableRecordBatchStream,
    progress: &Progress,
    mut write: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<u64> {
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        progress.add_rows(batch.num_rows());
        write(&batch)?;
    }
    Ok(rows)
}

/// Renders batches as an aligned table, NULL shown as `NULL`, media as
/// `<jpeg 640x480 52.1 KB>`.
pub fn format_table(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    let options = FormatOptions::default().with_null("NULL");
    let batches = if batches.is_empty() {
        vec![RecordBatch::new_empty(quiver::display::display_schema(
            schema,
        ))]
    } else {
        batches
            .iter()
            .map(quiver::display::media_for_display)
            .collect::<Result<Vec<_>>>()?
    };
    Ok(pretty_format_batches_with_options(&batches, &options)?.to_string())
}
