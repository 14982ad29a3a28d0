//! Object stores: a registry that creates a store the first time a URL of a
//! bucket, container or host is used (`s3://`, `gs://`, `az://`, `http(s)://`),
//! from [`ObjectStoreConfig`] and the standard environment variables, and a
//! local-filesystem store confined to the configured data roots.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::{DataFusionError, Result, plan_datafusion_err};
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RetryConfig,
};
use url::Url;

use crate::config::{DataConfig, ObjectStoreConfig};

/// Schemes Quiver can read from.
pub const SUPPORTED_SCHEMES: &str = "file, s3, s3a, gs, az, abfs, abfss, http, https";

/// An [`ObjectStoreRegistry`] that builds stores on first use from the
/// config, so `s3://any-bucket/…` works without registering each bucket.
pub struct QuiverObjectStoreRegistry {
    config: ObjectStoreConfig,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    local: Arc<dyn ObjectStore>,
}

impl fmt::Debug for QuiverObjectStoreRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .stores
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("QuiverObjectStoreRegistry")
            .field("stores", &keys)
            .finish()
    }
}

/// `scheme://host:port` — one store per bucket, container or web host.
fn store_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl QuiverObjectStoreRegistry {
    /// A registry for these settings; local paths are confined to `data.roots`
    /// when any are given.
    pub fn new(config: ObjectStoreConfig, data: &DataConfig) -> Result<Self> {
        let local: Arc<dyn ObjectStore> = if data.roots.is_empty() {
            Arc::new(LocalFileSystem::new())
        } else {
            Arc::new(RootedStore::new(
                Arc::new(LocalFileSystem::new()),
                &data.roots,
            )?)
        };
        Ok(Self {
            config,
            stores: RwLock::new(HashMap::new()),
            local,
        })
    }

    fn client_options(&self) -> ClientOptions {
        let connect = match self.config.connect_timeout_secs {
            0 => 5,
            n => n,
        };
        let mut opts = ClientOptions::new().with_connect_timeout(Duration::from_secs(connect));
        if self.config.request_timeout_secs > 0 {
            opts = opts.with_timeout(Duration::from_secs(self.config.request_timeout_secs));
        }
        opts
    }

    fn retry(&self) -> RetryConfig {
        let total = match self.config.request_timeout_secs {
            0 => 30,
            n => n,
        };
        RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: self.config.max_retries.min(10),
            retry_timeout: Duration::from_secs(total),
        }
    }

    fn build(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let host = url.host_str().unwrap_or_default();
        let wrap = |e: object_store::Error| {
            DataFusionError::External(Box::new(e))
                .context(format!("cannot open object store for {}", store_key(url)))
        };
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let s3 = &self.config.s3;
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(host)
                    .with_client_options(self.client_options())
                    .with_retry(self.retry());
                if let Some(v) = &s3.region {
                    b = b.with_region(v);
                }
                if let Some(v) = &s3.endpoint {
                    b = b.with_endpoint(v);
                    if v.starts_with("http://") && s3.allow_http.is_none() {
                        b = b.with_allow_http(true);
                    }
                }
                if let Some(v) = &s3.access_key_id {
                    b = b.with_access_key_id(v);
                }
                if let Some(v) = &s3.secret_access_key {
                    b = b.with_secret_access_key(v);
                }
                if let Some(v) = &s3.session_token {
                    b = b.with_token(v);
                }
                if let Some(v) = s3.allow_http {
                    b = b.with_allow_http(v);
                }
                if let Some(v) = s3.skip_signature {
                    b = b.with_skip_signature(v);
                }
                if let Some(v) = s3.virtual_hosted_style {
                    b = b.with_virtual_hosted_style_request(v);
                }
                if !s3_has_credentials(s3) {
                    return Err(plan_datafusion_err!(
                        "no credentials for {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         (or object_store.s3.access_key_id / secret_access_key), \
                         skip_signature = true for a public bucket, or \
                         instance_metadata = true on EC2/ECS",
                        store_key(url)
                    ));
                }
                Arc::new(b.build().map_err(wrap)?)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(host)
                    .with_client_options(self.client_options())
                    .with_retry(self.retry());
                if let Some(v) = &self.config.gcs.service_account_path {
                    b = b.with_service_account_path(v);
                }
                Arc::new(b.build().map_err(wrap)?)
            }
            "az" | "abfs" | "abfss" | "azure" => {
                let az = &self.config.azure;
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_client_options(self.client_options())
                    .with_retry(self.retry());
                if url.scheme() == "az" || url.scheme() == "azure" {
                    b = b.with_container_name(host);
                }
                if let Some(v) = &az.account {
                    b = b.with_account(v);
                }
                if let Some(v) = &az.access_key {
                    b = b.with_access_key(v);
                }
                if let Some(v) = &az.endpoint {
                    b = b.with_endpoint(v.clone());
                    if v.starts_with("http://") {
                        b = b.with_allow_http(true);
                    }
                }
                if let Some(v) = az.use_emulator {
                    b = b.with_use_emulator(v);
                }
                Arc::new(b.build().map_err(wrap)?)
            }
            "http" | "https" => {
                let base = &url[..url::Position::AfterPort];
                Arc::new(
                    HttpBuilder::new()
                        .with_url(base)
                        .with_client_options(self.client_options().with_allow_http(true))
                        .with_retry(self.retry())
                        .build()
                        .map_err(wrap)?,
                )
            }
            other => {
                return Err(plan_datafusion_err!(
                    "no object store for scheme '{other}' in {url}; supported schemes: {SUPPORTED_SCHEMES}"
                ));
            }
        };
        Ok(store)
    }
}

impl ObjectStoreRegistry for QuiverObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores
            .remove(&store_key(url))
            .ok_or_else(|| plan_datafusion_err!("no object store registered for {url}"))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(store));
        }
        if url.scheme() == "file" {
            return Ok(Arc::clone(&self.local));
        }
        let store = self.build(url)?;
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(stores.entry(key).or_insert(store)))
    }
}

/// Whether S3 credentials come from somewhere other than the instance
/// metadata service (which is only asked when the config opts in).
fn s3_has_credentials(s3: &crate::config::S3Config) -> bool {
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    s3.access_key_id.is_some()
        || s3.skip_signature == Some(true)
        || s3.instance_metadata == Some(true)
        || env("AWS_ACCESS_KEY_ID")
        || env("AWS_WEB_IDENTITY_TOKEN_FILE")
        || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A local store that refuses any path outside its roots, so a server can
/// offer SQL without offering the whole disk.
#[derive(Debug)]
pub struct RootedStore {
    inner: Arc<dyn ObjectStore>,
    roots: Vec<PathBuf>,
}

impl fmt::Display for RootedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootedStore({:?})", self.roots)
    }
}

/// Resolves `.` and `..` without touching the disk.
fn normalize(path: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Canonicalises the longest existing prefix of `path` (resolving symbolic
/// links) and appends the rest, so a link inside a root cannot lead out.
fn resolve_links(path: &std::path::Path) -> PathBuf {
    let mut existing = path;
    let mut rest = vec![];
    loop {
        if let Ok(mut real) = std::fs::canonicalize(existing) {
            real.extend(rest.iter().rev());
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

impl RootedStore {
    /// Confines `inner` to `roots` (relative roots are taken from the current
    /// directory; existing ones are canonicalised so links resolve).
    pub fn new(inner: Arc<dyn ObjectStore>, roots: &[PathBuf]) -> Result<Self> {
        Ok(Self {
            inner,
            roots: canonical_paths(roots)?,
        })
    }

    fn check(&self, location: &Path) -> object_store::Result<()> {
        check_in_roots(&self.roots, location)
    }
}

/// `paths` made absolute (from the current directory) and, where they
/// exist, canonical, so that links resolve.
fn canonical_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let cwd = std::env::current_dir()
        .map_err(|e| DataFusionError::IoError(e).context("reading the current directory"))?;
    Ok(paths
        .iter()
        .map(|r| {
            let abs = normalize(&cwd.join(r));
            std::fs::canonicalize(&abs).unwrap_or(abs)
        })
        .collect())
}

/// `Ok` when the local `path` (a model directory, say) lies under one of
/// `roots`, or no roots are set; else an error naming the path and the
/// roots (links are resolved first).
pub fn check_local_path(roots: &[PathBuf], path: &std::path::Path) -> Result<()> {
    if roots.is_empty() {
        return Ok(());
    }
    // The roots and the path, resolved alike; the path is the last.
    let mut resolved = canonical_paths(&[roots, &[path.to_path_buf()]].concat())?;
    let location = resolved.pop().unwrap_or_else(|| path.to_path_buf());
    let location = Path::from(location.to_string_lossy().trim_start_matches('/'));
    check_in_roots(&resolved, &location).map_err(|e| DataFusionError::Plan(e.to_string()))
}

/// `Ok` when `location` lies under one of `roots`, else `PermissionDenied`
/// naming the path and the roots.
fn check_in_roots(roots: &[PathBuf], location: &Path) -> object_store::Result<()> {
    let p = resolve_links(&normalize(&PathBuf::from(format!("/{location}"))));
    if roots.iter().any(|root| p.starts_with(root)) {
        return Ok(());
    }
    let roots = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(object_store::Error::PermissionDenied {
        path: p.display().to_string(),
        source: format!("path is outside the allowed data roots ({roots})").into(),
    })
}

#[async_trait]
impl ObjectStore for RootedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let roots = self.roots.clone();
        let checked = locations
            .map(move |loc| {
                let loc = loc?;
                check_in_roots(&roots, &loc)?;
                Ok(loc)
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let root = Path::default();
        match self.check(prefix.unwrap_or(&root)) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check(prefix.unwrap_or(&Path::default()))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn rooted_store_refuses_paths_outside_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("ok.txt"), b"hi").unwrap();
        let store = RootedStore::new(
            Arc::new(LocalFileSystem::new()),
            std::slice::from_ref(&root),
        )
        .unwrap();
        let inside = Path::from_filesystem_path(root.join("ok.txt")).unwrap();
        assert_eq!(
            store.get(&inside).await.unwrap().bytes().await.unwrap(),
            "hi"
        );
        let outside = Path::from("etc/passwd");
        let err = store.get(&outside).await.unwrap_err().to_string();
        assert!(err.contains("/etc/passwd"), "{err}");
        assert!(err.contains("outside the allowed data roots"), "{err}");
    }

    #[tokio::test]
    async fn links_out_of_a_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"x").unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("link")).unwrap();
        let store = RootedStore::new(
            Arc::new(LocalFileSystem::new()),
            std::slice::from_ref(&root_path),
        )
        .unwrap();
        let as_path = |p: PathBuf| Path::from(p.to_str().unwrap().trim_start_matches('/'));
        let via_link = as_path(root_path.join("link/secret.txt"));
        let err = store.get(&via_link).await.unwrap_err().to_string();
        assert!(err.contains("outside the allowed data roots"), "{err}");
        // A file that does not exist yet (a COPY target) inside the root is fine.
        let new = as_path(root_path.join("new/out.parquet"));
        store.check(&new).unwrap();
    }

    #[test]
    fn unknown_scheme_is_a_clear_error() {
        let reg =
            QuiverObjectStoreRegistry::new(ObjectStoreConfig::default(), &DataConfig::default())
                .unwrap();
        let err = reg
            .get_store(&Url::parse("ftp://host/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp"), "{err}");
        assert!(err.contains("supported schemes"), "{err}");
    }
}
