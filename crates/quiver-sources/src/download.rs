//! `url_download(url_or_path [, on_error])`: the bytes behind each row's
//! path or URL, from any object store the session knows (local paths
//! within the data roots, `s3://`, `gs://`, `az://`, `http(s)://`).
//!
//! An asynchronous function: DataFusion runs it in its own operator, which
//! hands it slices of [`IDEAL_ROWS`] rows; within a slice, requests run
//! concurrently, at most `quiver.io.max_concurrent_requests` at a time, and
//! results keep their rows' order. `on_error => 'fail'` (the default) stops
//! the query with the row, the URL and the reason; `'null'` gives NULL.
//! NULL in gives NULL out. Paths are taken literally (no globs). URLs with
//! a query string (pre-signed links) are refused with a clear message,
//! since object stores address objects by path.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BinaryViewBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use quiver_settings::QuiverSettings;
use url::Url;

use crate::listing::has_scheme;

/// Rows handed to one invocation.
pub const IDEAL_ROWS: usize = 256;

/// See the module docs.
#[derive(Debug)]
pub struct UrlDownload {
    runtime: Arc<RuntimeEnv>,
    signature: Signature,
    doc: Documentation,
}

impl PartialEq for UrlDownload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.runtime, &other.runtime)
    }
}
impl Eq for UrlDownload {}
impl std::hash::Hash for UrlDownload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "url_download".hash(state);
    }
}

impl UrlDownload {
    /// The function over the object stores of `runtime`.
    pub fn new(runtime: Arc<RuntimeEnv>) -> Self {
        let doc = Documentation::builder(
            DocSection {
                include: true,
                label: "Other Functions",
                description: None,
            },
            "Fetches the bytes behind a path or URL (local within the data roots, s3://, gs://, az://, http(s)://), concurrently with a bounded number of requests in flight (quiver.io.max_concurrent_requests). Returns bytea; NULL input gives NULL. on_error 'fail' (default) stops the query naming the row and URL; 'null' returns NULL instead.",
            "url_download(url_or_path [, on_error])",
        )
        .with_argument("url_or_path", "text: a URL or a local path")
        .with_argument("on_error", "'fail' (default) or 'null'")
        .with_sql_example(
            "SELECT image_decode(url_download(url)) FROM read_parquet('meta.parquet')",
        )
        .build();
        Self {
            runtime,
            // DataFusion's async wrapper does not forward `coerce_types`, so the
            // signature does the coercion: one or two strings.
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::String(2)],
                Volatility::Volatile,
            ),
            doc,
        }
    }
}

/// Where a value points: its store and the object's path.
fn resolve(value: &str) -> Result<(ObjectStoreUrl, Path)> {
    let url = if has_scheme(value) {
        Url::parse(value).map_err(|e| DataFusionError::External(Box::new(e)))?
    } else {
        let path = std::path::absolute(value)?;
        Url::from_file_path(&path).map_err(|()| {
            DataFusionError::Execution(format!("'{value}' is not a usable local path"))
        })?
    };
    if url.query().is_some() {
        return exec_err!(
            "URLs with a query string are not supported (object stores address objects by path)"
        );
    }
    let store = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
    let path = Path::from_url_path(url.path())
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e.into())))?;
    Ok((store, path))
}

/// The bytes behind a path or URL, from the object stores of `runtime`.
pub(crate) async fn fetch_address(runtime: &RuntimeEnv, value: &str) -> Result<bytes::Bytes> {
    let (store_url, path) = resolve(value)?;
    let store = runtime.object_store(&store_url)?;
    let got = store
        .get(&path)
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
    got.bytes()
        .await
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
}

fn on_error_null(args: &[ColumnarValue]) -> Result<bool> {
    match args.get(1) {
        None => Ok(false),
        Some(ColumnarValue::Scalar(s)) => match s {
            ScalarValue::Utf8(Some(v))
            | ScalarValue::LargeUtf8(Some(v))
            | ScalarValue::Utf8View(Some(v)) => match v.to_ascii_lowercase().as_str() {
                "fail" => Ok(false),
                "null" => Ok(true),
                other => {
                    plan_err!("url_download: on_error must be 'fail' or 'null', got '{other}'")
                }
            },
            other => plan_err!("url_download: on_error must be 'fail' or 'null', got {other}"),
        },
        Some(ColumnarValue::Array(_)) => {
            plan_err!("url_download: on_error must be a constant, 'fail' or 'null'")
        }
    }
}

impl ScalarUDFImpl for UrlDownload {
    fn name(&self) -> &str {
        "url_download"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("url_download runs asynchronously; it cannot be called synchronously")
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for UrlDownload {
    fn ideal_batch_size(&self) -> Option<usize> {
        Some(IDEAL_ROWS)
    }

    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let null_on_error = on_error_null(&args.args)?;
        let results = fetch_each(&self.runtime, &args, "url_download", |row, url, got| match got {
            Ok(bytes) => Ok(Some(bytes)),
            Err(_) if null_on_error => Ok(None),
            Err(e) => Err(e.context(format!(
                "url_download: row {} of its batch: {url} (use on_error => 'null' to get NULL instead)",
                row + 1
            ))),
        })
        .await?;
        Ok(ColumnarValue::Array(binary_array(&results, false)))
    }
}

/// Fetches the path or URL of each row of the first argument, at most
/// `quiver.io.max_concurrent_requests` requests at a time, results in row
/// order; `each` turns a row's fetch (its index in the batch, the address,
/// the bytes or the error) into its value. NULL gives NULL.
pub(crate) async fn fetch_each(
    runtime: &RuntimeEnv,
    args: &ScalarFunctionArgs,
    function: &str,
    each: impl Fn(usize, &str, Result<bytes::Bytes>) -> Result<Option<bytes::Bytes>>,
) -> Result<Vec<Option<bytes::Bytes>>> {
    let Some(first) = args.args.first() else {
        return plan_err!("{function} needs a URL or path");
    };
    let addresses = cast(&first.to_array(args.number_rows)?, &DataType::Utf8)?;
    let addresses = addresses.as_string::<i32>();
    let concurrency = QuiverSettings::from_options(&args.config_options).max_concurrent_requests;
    let each = &each;
    let results: Vec<Result<Option<bytes::Bytes>>> =
        futures::stream::iter((0..addresses.len()).map(|row| async move {
            if addresses.is_null(row) {
                return Ok(None);
            }
            let address = addresses.value(row);
            each(row, address, fetch_address(runtime, address).await)
        }))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// The fetched values as a binary array (a view array when `view`).
pub(crate) fn binary_array(values: &[Option<bytes::Bytes>], view: bool) -> ArrayRef {
    if view {
        let mut out = BinaryViewBuilder::with_capacity(values.len());
        for v in values {
            out.append_option(v.as_deref());
        }
        return Arc::new(out.finish());
    }
    let total: usize = values
        .iter()
        .map(|v| v.as_ref().map_or(0, |b| b.len()))
        .sum();
    let mut out = BinaryBuilder::with_capacity(values.len(), total);
    for v in values {
        out.append_option(v.as_deref());
    }
    Arc::new(out.finish())
}
