//! File tables on any object store: `read_parquet`, `read_csv` and
//! `read_json` table functions, and a `CREATE EXTERNAL TABLE` factory that
//! accepts globs on every scheme (DataFusion's own only globs local paths).
//!
//! A location is a local path, `file://…`, `s3://bucket/…`, `gs://…`,
//! `az://…` or `http(s)://…`; a trailing `/` means "every file below this
//! prefix", and `*`, `?` or `[…]` in the path make it a glob.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    Session, TableFunctionArgs, TableFunctionImpl, TableProvider, TableProviderFactory,
};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_datafusion_err, plan_err};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::listing_table_factory::ListingTableFactory;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{CreateExternalTable, Expr};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

const GLOB_CHARS: [char; 3] = ['*', '?', '['];

/// File formats the `read_*` functions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Apache Parquet.
    Parquet,
    /// Comma- (or otherwise) separated values.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl FileKind {
    /// The name DataFusion's format registry uses.
    fn format_name(self) -> &'static str {
        match self {
            FileKind::Parquet => "parquet",
            FileKind::Csv => "csv",
            FileKind::Json => "json",
        }
    }

    /// The SQL function name.
    pub fn function_name(self) -> &'static str {
        match self {
            FileKind::Parquet => "read_parquet",
            FileKind::Csv => "read_csv",
            FileKind::Json => "read_json",
        }
    }
}

/// True when `location` names a URL with a scheme (not a local path).
pub fn has_scheme(location: &str) -> bool {
    !std::path::Path::new(location).is_absolute()
        && Url::parse(location).is_ok_and(|u| u.scheme().len() > 1)
}

/// Parses a location, splitting a glob off URLs of every scheme.
pub fn parse_location(location: &str) -> Result<ListingTableUrl> {
    let ctx = |e: DataFusionError| e.context(format!("invalid location '{location}'"));
    if !has_scheme(location) {
        return ListingTableUrl::parse(location).map_err(ctx);
    }
    let url = Url::parse(location).map_err(|e| ctx(DataFusionError::External(Box::new(e))))?;
    let path_start = location.len() - url[url::Position::BeforePath..].len();
    let path = &location[path_start..];
    match path.find(GLOB_CHARS) {
        None => ListingTableUrl::parse(location).map_err(ctx),
        Some(first_glob) => {
            let dir_end = path[..first_glob].rfind('/').map_or(0, |i| i + 1);
            let base = Url::parse(&location[..path_start + dir_end])
                .map_err(|e| ctx(DataFusionError::External(Box::new(e))))?;
            let pattern = &path[dir_end..];
            ListingTableUrl::try_new(base, None)
                .and_then(|u| u.with_glob(pattern))
                .map_err(ctx)
        }
    }
}

fn session_state(state: &dyn Session) -> Result<&SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| plan_datafusion_err!("file tables need a DataFusion SessionState"))
}

/// Builds a listing table over `locations` in format `file_type` (a name of
/// the session's format registry), with format options such as
/// `format.has_header`. The schema is inferred unless `schema` is given.
pub async fn file_table(
    state: &dyn Session,
    file_type: &str,
    locations: &[String],
    options: &HashMap<String, String>,
    schema: Option<datafusion::arrow::datatypes::SchemaRef>,
) -> Result<Arc<dyn TableProvider>> {
    let session_state = session_state(state)?;
    let factory = session_state
        .get_file_format_factory(file_type)
        .ok_or_else(|| plan_datafusion_err!("unknown file format '{file_type}'"))?;
    let format = factory.create(state, options)?;
    let urls = locations
        .iter()
        .map(|l| parse_location(l))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = urls.first() else {
        return plan_err!("a file table needs at least one location");
    };
    // A directory or prefix holds files of the format's extension; a file or
    // glob names exactly what it wants.
    let extension = if urls.len() == 1 && first.is_collection() && first.get_glob().is_none() {
        format.get_ext()
    } else {
        String::new()
    };
    let listing = ListingOptions::new(format).with_file_extension(extension);
    let schema = match schema {
        Some(s) if !s.fields().is_empty() => s,
        _ => listing
            .infer_schema(state, first)
            .await
            .map_err(|e| e.context(format!("reading {}", locations.join(", "))))?,
    };
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(listing)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Runs planning-time I/O (schema inference) from a synchronous DataFusion
/// callback. On a multi-threaded runtime it blocks this worker in place;
/// elsewhere it runs the future on a scoped thread with its own runtime.
pub fn block_on_planning<F: Future<Output = Result<T>> + Send, T: Send>(fut: F) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        _ => std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(DataFusionError::IoError)?
                    .block_on(fut)
            })
            .join()
            .map_err(|_| DataFusionError::Internal("planning thread panicked".into()))?
        }),
    }
}

/// Splits a table function's string arguments into locations and
/// `'name=value'` options (names lower-cased). A string is an option when it
/// starts with an identifier and `=` and holds no `/` (so `'header=false'`
/// is an option and `'data/year=2024/'` a location). `function` names the
/// function in errors.
pub fn split_args(function: &str, exprs: &[Expr]) -> Result<SplitArgs> {
    let mut locations = vec![];
    let mut options = vec![];
    for (i, e) in exprs.iter().enumerate() {
        let text = match e {
            Expr::Literal(ScalarValue::Utf8(Some(s)), _)
            | Expr::Literal(ScalarValue::Utf8View(Some(s)), _)
            | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _) => s,
            other => {
                return plan_err!(
                    "{function}: argument {} must be a location string or a 'name=value' option, got {other}",
                    i + 1
                );
            }
        };
        match option_pair(text) {
            Some((key, value)) => options.push((key.to_ascii_lowercase(), value.to_string())),
            None => locations.push(text.clone()),
        }
    }
    Ok(SplitArgs { locations, options })
}

/// A table function's arguments, as [`split_args`] splits them.
#[derive(Debug, Default)]
pub struct SplitArgs {
    /// The location strings, in order.
    pub locations: Vec<String>,
    /// `(name, value)` options, names lower-cased, in order.
    pub options: Vec<(String, String)>,
}

/// Splits `'name=value'` when `name` is an identifier and the text holds no
/// `/`.
pub fn option_pair(text: &str) -> Option<(&str, &str)> {
    if text.contains('/') {
        return None;
    }
    let (key, value) = text.split_once('=')?;
    let key = key.trim();
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (first_ok && rest_ok).then_some((key, value.trim()))
}

/// `read_parquet(location […])`, `read_csv(location [, 'option=value' …])`
/// and `read_json(location […])`: a table over the files at one or more
/// locations of any supported object store.
#[derive(Debug)]
pub struct ReadFileFunction {
    kind: FileKind,
}

impl ReadFileFunction {
    /// The table function for one format.
    pub fn new(kind: FileKind) -> Self {
        Self { kind }
    }

    fn parse_args(&self, exprs: &[Expr]) -> Result<(Vec<String>, HashMap<String, String>)> {
        let name = self.kind.function_name();
        let SplitArgs { locations, options } = split_args(name, exprs)?;
        let options = options
            .into_iter()
            .map(|(k, v)| Ok((self.option_key(&k)?, v)))
            .collect::<Result<HashMap<_, _>>>()?;
        if locations.is_empty() {
            return plan_err!(
                "{name} needs a location, e.g. {name}('data/*.{}')",
                self.kind.format_name()
            );
        }
        Ok((locations, options))
    }

    /// Maps DuckDB-style option names onto DataFusion's `format.*` keys.
    fn option_key(&self, name: &str) -> Result<String> {
        let name = name.to_ascii_lowercase();
        let key = match (self.kind, name.as_str()) {
            (FileKind::Csv, "header" | "has_header") => "has_header",
            (FileKind::Csv, "delim" | "delimiter" | "sep") => "delimiter",
            (FileKind::Csv, "quote") => "quote",
            (FileKind::Csv, "escape") => "escape",
            (FileKind::Csv | FileKind::Json, "compression") => "compression",
            (FileKind::Csv | FileKind::Json, "schema_infer_max_records") => "schema_infer_max_rec",
            (_, n) if n.starts_with("format.") => return Ok(n.to_string()),
            _ => {
                return plan_err!("{}: unknown option '{name}'", self.kind.function_name());
            }
        };
        Ok(format!("format.{key}"))
    }
}

impl TableFunctionImpl for ReadFileFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (locations, options) = self.parse_args(args.exprs())?;
        let session = args.session();
        let file_type = self.kind.format_name();
        block_on_planning(file_table(session, file_type, &locations, &options, None))
    }
}

/// `CREATE EXTERNAL TABLE … STORED AS PARQUET|CSV|JSON LOCATION …`: remote
/// globs are handled here, everything else by DataFusion's
/// [`ListingTableFactory`].
#[derive(Debug, Default)]
pub struct GlobbingTableFactory {
    inner: ListingTableFactory,
}

#[async_trait]
impl TableProviderFactory for GlobbingTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let remote_glob = cmd
            .locations
            .iter()
            .any(|l| has_scheme(l) && !l.starts_with("file:") && l.contains(GLOB_CHARS));
        if !remote_glob {
            return self.inner.create(state, cmd).await;
        }
        if !cmd.table_partition_cols.is_empty() {
            return plan_err!(
                "PARTITIONED BY is not supported together with a glob location ({})",
                cmd.locations.join(", ")
            );
        }
        let schema = Arc::new(cmd.schema.as_arrow().clone());
        file_table(
            state,
            &cmd.file_type,
            &cmd.locations,
            &cmd.options,
            Some(schema),
        )
        .await
    }
}

/// Lists the media files at `url`, as users of `ls -R` and DuckDB expect:
/// a folder (a location ending in `/`) is listed recursively, so class
/// sub-folders such as `train/cat/001.jpg` are included; in a glob, `*`
/// and `?` stay within one folder and `**` crosses folders
/// (`photos/**/*.jpg`); a single file is itself.
pub fn list_media_files<'a>(
    url: &'a ListingTableUrl,
    store: &'a dyn ObjectStore,
) -> BoxStream<'a, Result<ObjectMeta>> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let under = move |meta: &ObjectMeta| {
        let Some(segments) = url.strip_prefix(&meta.location) else {
            return false;
        };
        match url.get_glob() {
            Some(glob) => glob.matches_with(&segments.collect::<Vec<_>>().join("/"), options),
            None => true,
        }
    };
    let list_prefix = move || {
        store
            .list(Some(url.prefix()))
            .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
            .try_filter(move |meta| futures::future::ready(under(meta)))
            .boxed()
    };
    if url.is_collection() {
        return list_prefix();
    }
    futures::stream::once(async move {
        match store.head(url.prefix()).await {
            Ok(meta) => futures::stream::once(futures::future::ready(Ok(meta))).boxed(),
            // Not a file: perhaps a folder given without its trailing '/'.
            Err(object_store::Error::NotFound { .. }) => list_prefix(),
            Err(e) => futures::stream::once(futures::future::ready(Err(
                DataFusionError::ObjectStore(Box::new(e)),
            )))
            .boxed(),
        }
    })
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_on_every_scheme() {
        let u = parse_location("s3://bucket/dir/part-*.parquet").unwrap();
        assert_eq!(u.get_url().as_str(), "s3://bucket/dir/");
        assert_eq!(u.get_glob().as_ref().unwrap().as_str(), "part-*.parquet");
        let u = parse_location("s3://bucket/*/x.csv").unwrap();
        assert_eq!(u.get_url().as_str(), "s3://bucket/");
        assert_eq!(u.get_glob().as_ref().unwrap().as_str(), "*/x.csv");
        let u = parse_location("s3://bucket/dir/").unwrap();
        assert!(u.is_collection());
        assert!(u.get_glob().is_none());
        let u = parse_location("/tmp/a/*.parquet").unwrap();
        assert_eq!(u.get_url().as_str(), "file:///tmp/a/");
        assert!(!has_scheme("/tmp/x.parquet"));
        assert!(!has_scheme("data/x.parquet"));
        assert!(has_scheme("gs://b/x.parquet"));
    }

    #[test]
    fn options_are_told_from_locations() {
        assert_eq!(option_pair("header=false"), Some(("header", "false")));
        assert_eq!(option_pair(" delim = ; "), Some(("delim", ";")));
        assert_eq!(option_pair("data/year=2024/"), None);
        assert_eq!(option_pair("x.csv"), None);
        assert_eq!(option_pair("1x=2"), None);
    }
}
