//! `media_fetch(path, kind, on_error)`: a media file's bytes, fetched after
//! a join rather than carried through it.
//!
//! The late-materialization rule ([`crate::late`]) plans it in place of a
//! media table's bytes column (`image`, `audio`): the scan then reads
//! listings (and headers where other columns need them), the join
//! moves paths, and only the rows that come out are fetched. The bytes are
//! checked as the scan would check them: a file that is not readable media
//! of its kind stops the query under `on_error = 'fail'` (naming the file)
//! and reads as NULL under `'null'` and `'skip'` (a `'skip'` scan has left
//! out the files whose headers are bad already). Requests run concurrently,
//! at most `quiver.io.max_concurrent_requests` at a time, in row order.
//! Callable by hand too; `kind` is `'image'` or `'audio'`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};

use crate::audio::AudioReader;
use crate::download::{IDEAL_ROWS, binary_array, fetch_each};
use crate::images::ImagesReader;
use crate::media_scan::{MediaReader, OnError};
use quiver_settings::QuiverSettings;

/// The function's name in plans.
pub const MEDIA_FETCH: &str = "media_fetch";

/// The reader of a kind of media: `image` or `audio`.
pub fn reader_for(kind: &str) -> Result<Arc<dyn MediaReader>> {
    match kind {
        "image" => Ok(Arc::new(ImagesReader)),
        "audio" => Ok(Arc::new(AudioReader)),
        other => plan_err!("{MEDIA_FETCH}: kind must be 'image' or 'audio', got '{other}'"),
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct MediaFetch {
    runtime: Arc<RuntimeEnv>,
    signature: Signature,
    doc: Documentation,
}

impl PartialEq for MediaFetch {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.runtime, &other.runtime)
    }
}
impl Eq for MediaFetch {}
impl std::hash::Hash for MediaFetch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        MEDIA_FETCH.hash(state);
    }
}

impl MediaFetch {
    /// The function over the object stores of `runtime`.
    pub fn new(runtime: Arc<RuntimeEnv>) -> Self {
        let doc = Documentation::builder(
            DocSection {
                include: true,
                label: "Other Functions",
                description: None,
            },
            "The bytes of the media file at a path of a media table, checked as a scan checks them: what joins fetch after they run instead of carrying bytes through (planned by Quiver's late materialization). on_error 'fail' stops the query on a file that is not readable media of its kind; 'null' and 'skip' give NULL.",
            "media_fetch(path, kind, on_error)",
        )
        .with_argument("path", "text: a path or URL, as a media table's path column holds it")
        .with_argument("kind", "'image' or 'audio'")
        .with_argument("on_error", "'fail', 'null' or 'skip'")
        .with_sql_example("SELECT media_fetch(path, 'image', 'null') FROM read_images('photos/')")
        .build();
        Self {
            runtime,
            signature: Signature::one_of(vec![TypeSignature::String(3)], Volatility::Volatile),
            doc,
        }
    }
}

/// A constant text argument.
fn constant(args: &[ColumnarValue], index: usize, what: &str) -> Result<String> {
    match args.get(index) {
        Some(ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(v))
            | ScalarValue::LargeUtf8(Some(v))
            | ScalarValue::Utf8View(Some(v)),
        )) => Ok(v.to_ascii_lowercase()),
        _ => plan_err!("{MEDIA_FETCH}: {what} must be a constant text"),
    }
}

/// The constant text of a planning-time argument.
fn planned_constant(args: &ReturnFieldArgs, index: usize) -> Option<String> {
    match args.scalar_arguments.get(index).copied().flatten()? {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Some(v.to_ascii_lowercase()),
        _ => None,
    }
}

impl ScalarUDFImpl for MediaFetch {
    fn name(&self) -> &str {
        MEDIA_FETCH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let Some(kind) = planned_constant(&args, 1) else {
            return plan_err!("{MEDIA_FETCH}: kind must be a constant, 'image' or 'audio'");
        };
        let reader = reader_for(&kind)?;
        let schema = reader.schema();
        let field: &Field = schema.field(reader.bytes_column());
        Ok(Arc::new(field.clone().with_name(MEDIA_FETCH)))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{MEDIA_FETCH} runs asynchronously; it cannot be called synchronously")
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for MediaFetch {
    fn ideal_batch_size(&self) -> Option<usize> {
        Some(IDEAL_ROWS)
    }

    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let kind = constant(&args.args, 1, "kind")?;
        let reader = reader_for(&kind)?;
        let on_error = OnError::parse(&constant(&args.args, 2, "on_error")?)?;
        // The files this call reads count with the statement's (the
        // scans below a join read only the listing).
        let paths = args.args[0].to_array(args.number_rows)?;
        let reads = paths.len() - paths.logical_null_count();
        let results = fetch_each(&self.runtime, &args, MEDIA_FETCH, |_, path, got| {
            let bytes = got.map_err(|e| e.context(format!("reading {kind} {path}")))?;
            match reader.check(&bytes) {
                Ok(()) => Ok(Some(bytes)),
                Err(e) if on_error == OnError::Fail => Err(DataFusionError::External(Box::new(e))
                    .context(format!(
                        "reading {kind} {path} (on_error=fail; use 'on_error=null' or 'on_error=skip' to go on)"
                    ))),
                Err(_) => Ok(None),
            }
        })
        .await?;
        if let Some(progress) = &QuiverSettings::from_options(&args.config_options)
            .statement_progress
            .0
        {
            progress.add_files(reads);
        }
        let view =
            reader.schema().field(reader.bytes_column()).data_type() == &DataType::BinaryView;
        Ok(ColumnarValue::Array(binary_array(&results, view)))
    }
}
