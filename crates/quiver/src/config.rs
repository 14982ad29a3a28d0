//! [`QuiverConfig`]: every setting of the engine, loadable from TOML and
//! overridable by `QUIVER_*` environment variables.
//!
//! ```toml
//! [exec]
//! memory_limit = "4GiB"        # or "50%" of physical memory
//! target_partitions = 8
//! batch_size = 8192
//! spill_dir = "/var/tmp/quiver"
//!
//! [data]
//! roots = ["/data/media", "/tmp"]   # empty: local paths are unrestricted
//!
//! [media]
//! max_image_pixels = 100000000   # session default of quiver.media.max_image_pixels
//! max_image_alloc = 1073741824   # bytes per decode
//! max_audio_alloc = 1073741824   # bytes of samples per audio decode
//! max_video_pixels = 36000000    # pixels of one video frame
//!
//! [server]
//! max_connections = 100          # more are refused with SQLSTATE 53300
//! read_only = false              # true: COPY TO / INSERT are refused (25006)
//! password = "…"                 # SCRAM-SHA-256 password of `user` (default "quiver")
//! tls_cert = "server.crt"        # PEM chain; with tls_key, clients may use TLS
//! tls_key = "server.key"         # PEM private key
//! idle_session_timeout = "10min"  # end connections idle longer (57P05); default none
//! connection_memory_limit = "2GB" # most one connection's queries hold; default none
//!
//! [server.users]                 # more users: name = password
//! alice = "…"
//!
//! [tables.orders]              # a table every session sees
//! format = "parquet"             # parquet, csv, json, images, audio or video
//! location = "data/orders/"
//! in_memory = true               # read once at start, served from memory
//!
//! [object_store.s3]
//! region = "us-east-1"
//! endpoint = "http://127.0.0.1:9000"
//! allow_http = true
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What went wrong while loading or validating configuration. Every variant
/// names the key and where its value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// One value does not parse or is out of range.
    #[error("invalid value {value:?} for {key} (from {origin}): {reason}")]
    Value {
        /// The dotted key, e.g. `exec.memory_limit`.
        key: String,
        /// The offending value.
        value: String,
        /// Where the value came from: a file path or an environment variable.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// All of Quiver's settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuiverConfig {
    /// Execution: memory, parallelism, batch size, spilling.
    pub exec: ExecConfig,
    /// Which local paths queries may read and write.
    pub data: DataConfig,
    /// Credentials and endpoints of object stores.
    pub object_store: ObjectStoreConfig,
    /// Limits on decoding media.
    pub media: MediaConfig,
    /// The Postgres endpoint.
    pub server: ServerConfig,
    /// Models registered when the engine starts, by name
    /// (`[models.minilm] type = "bert", path = "…"`).
    pub models: std::collections::BTreeMap<String, ModelDeclaration>,
    /// Tables every session sees, by name (`[tables.orders] format =
    /// "parquet", location = "data/orders/"`).
    pub tables: std::collections::BTreeMap<String, TableDeclaration>,
}

/// A table declared in the configuration, as `CREATE EXTERNAL TABLE name
/// STORED AS format LOCATION 'location' OPTIONS (…)` would make it, but
/// made once when the engine starts and seen by every session.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableDeclaration {
    /// `parquet`, `csv`, `json`, `images`, `audio` or `video`.
    pub format: String,
    /// A path, directory, prefix or glob, local or on an object store.
    pub location: String,
    /// The table's `OPTIONS (…)` (`"format.delimiter" = ";"`).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    /// Read the rows once when the engine starts and serve them from
    /// memory, reserved in the memory pool (`parquet`, `csv`, `json`).
    #[serde(default)]
    pub in_memory: bool,
}

impl TableDeclaration {
    /// Checks the table's name, format and location: on error, the key
    /// (`tables.orders.format`), its value and what is wrong with it.
    pub fn check(&self, name: &str) -> Result<(), (String, String, String)> {
        let plain = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err((
                format!("tables.{name}"),
                name.to_string(),
                "a table name is lower-case letters, digits and _ (not starting with a digit)"
                    .into(),
            ));
        }
        let format = self.format.to_ascii_lowercase();
        if !TABLE_FORMATS.contains(&format.as_str()) {
            return Err((
                format!("tables.{name}.format"),
                self.format.clone(),
                format!("expected one of {}", TABLE_FORMATS.join(", ")),
            ));
        }
        if self.in_memory && !matches!(format.as_str(), "parquet" | "csv" | "json") {
            return Err((
                format!("tables.{name}.in_memory"),
                "true".into(),
                "only parquet, csv and json tables can be held in memory".into(),
            ));
        }
        if self.location.trim().is_empty() {
            return Err((
                format!("tables.{name}.location"),
                String::new(),
                "must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// The formats a `[tables.*]` entry may have.
pub const TABLE_FORMATS: &[&str] = &["parquet", "csv", "json", "images", "audio", "video"];

/// A model declared in the configuration file, as `CREATE MODEL` would.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelDeclaration {
    /// The architecture (`bert`).
    #[serde(rename = "type")]
    pub architecture: String,
    /// The model directory (Hugging Face layout).
    pub path: PathBuf,
    /// `cpu` (default) or `cuda`.
    pub device: Option<String>,
    /// `f32` (default), `f16` or `bf16`.
    pub dtype: Option<String>,
    /// Rows per forward pass.
    pub batch_size: Option<usize>,
    /// Forward passes at once, where the session leaves it to the model.
    pub replicas: Option<usize>,
    /// The share of its device the model holds while it runs (0 to 1).
    pub device_fraction: Option<f64>,
    /// Class labels, one per line (classifiers).
    pub labels: Option<PathBuf>,
}

impl ModelDeclaration {
    /// The registry entry this declares.
    pub fn spec(&self, name: &str) -> Result<quiver_models::ModelSpec, quiver_models::ModelError> {
        let mut spec = quiver_models::ModelSpec::new(name, self.architecture.parse()?, &self.path);
        if let Some(d) = &self.device {
            spec.set_option("device", d)?;
        }
        if let Some(d) = &self.dtype {
            spec.set_option("dtype", d)?;
        }
        if let Some(b) = self.batch_size {
            spec.set_option("batch_size", &b.to_string())?;
        }
        if let Some(r) = self.replicas {
            spec.set_option("replicas", &r.to_string())?;
        }
        if let Some(f) = self.device_fraction {
            spec.set_option("device_fraction", &f.to_string())?;
        }
        if let Some(l) = &self.labels {
            spec.labels = Some(l.clone());
        }
        Ok(spec)
    }
}

/// The Postgres endpoint (`quiver serve`).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Connections served at once; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Refuse statements that write (COPY … TO, INSERT, UPDATE, DELETE)
    /// with SQLSTATE 25006; reading and session tables stay allowed.
    pub read_only: bool,
    /// The user [`ServerConfig::password`] is for.
    pub user: String,
    /// A password for `user` (`QUIVER_SERVER_PASSWORD`).
    pub password: Option<String>,
    /// More users and their passwords.
    pub users: std::collections::BTreeMap<String, String>,
    /// The server's certificate chain (PEM); with `tls_key`, TLS is offered.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Every connection's `idle_session_timeout` to begin with (`"10min"`,
    /// milliseconds without a unit): connections idle longer are ended
    /// with SQLSTATE 57P05. None (the default, as in Postgres): no limit.
    pub idle_session_timeout: Option<String>,
    /// The most one connection's queries may hold of the memory pool at
    /// once (`"2GB"`, or `"25%"` of the machine's memory, as
    /// `exec.memory_limit`); more is refused for that connection only.
    /// None (the default): connections share the pool freely.
    pub connection_memory_limit: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        // As Postgres.
        Self {
            max_connections: 100,
            read_only: false,
            user: "quiver".to_string(),
            password: None,
            users: std::collections::BTreeMap::new(),
            tls_cert: None,
            tls_key: None,
            idle_session_timeout: None,
            connection_memory_limit: None,
        }
    }
}

impl ServerConfig {
    /// Every user that may log in, with its password; empty when clients
    /// are not authenticated (loopback only).
    pub fn passwords(&self) -> std::collections::BTreeMap<String, String> {
        let mut all = self.users.clone();
        if let Some(p) = &self.password {
            all.insert(self.user.clone(), p.clone());
        }
        all
    }
}

/// Passwords never reach logs or error messages.
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<String> = self.passwords().into_keys().collect();
        f.debug_struct("ServerConfig")
            .field("max_connections", &self.max_connections)
            .field("read_only", &self.read_only)
            .field("users (passwords hidden)", &users)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("idle_session_timeout", &self.idle_session_timeout)
            .field("connection_memory_limit", &self.connection_memory_limit)
            .finish()
    }
}

/// Limits on decoding media; the session defaults of
/// `quiver.media.*` (each session may `SET` its own).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Images whose header declares more pixels are refused before decoding.
    pub max_image_pixels: u64,
    /// Bytes a decoder may allocate for one image.
    pub max_image_alloc: u64,
    /// Bytes of decoded samples one audio decode may hold.
    pub max_audio_alloc: u64,
    /// Videos whose frames have more pixels are refused before decoding.
    pub max_video_pixels: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let d = quiver_media::DecodeLimits::default();
        Self {
            max_image_pixels: d.max_pixels,
            max_image_alloc: d.max_alloc,
            max_audio_alloc: quiver_media::AudioLimits::default().max_alloc,
            max_video_pixels: quiver_media::video::VideoLimits::default().max_pixels,
        }
    }
}

/// Execution settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Memory the query pool may use: bytes with a unit (`"4GiB"`, `"512MB"`)
    /// or a share of physical memory (`"50%"`). Operators that can spill
    /// (sorts, aggregates, joins) spill to `spill_dir` beyond it.
    pub memory_limit: String,
    /// Partitions each plan is split into; 0 means one per CPU core.
    pub target_partitions: usize,
    /// Rows per record batch.
    pub batch_size: usize,
    /// Directory for spill files; `None` uses the OS temp directory.
    pub spill_dir: Option<PathBuf>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            memory_limit: "50%".to_string(),
            target_partitions: 0,
            batch_size: 8192,
            spill_dir: None,
        }
    }
}

/// Local data access.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Directories local paths must lie under. Empty: no restriction.
    pub roots: Vec<PathBuf>,
}

/// Object-store settings, one section per kind of store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://` and S3-compatible servers. Unset fields fall back to the
    /// standard `AWS_*` environment variables.
    pub s3: S3Config,
    /// `gs://`. Unset fields fall back to the `GOOGLE_*` variables.
    pub gcs: GcsConfig,
    /// `az://`, `abfs://`. Unset fields fall back to the `AZURE_*` variables.
    pub azure: AzureConfig,
    /// Seconds to wait for a connection to any remote store (0: 5).
    pub connect_timeout_secs: u64,
    /// Seconds one request may take, and the budget for its retries (0: 30).
    pub request_timeout_secs: u64,
    /// How many times a failed request is retried.
    pub max_retries: usize,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self {
            s3: S3Config::default(),
            gcs: GcsConfig::default(),
            azure: AzureConfig::default(),
            connect_timeout_secs: 5,
            request_timeout_secs: 30,
            max_retries: 3,
        }
    }
}

/// Settings for S3 and S3-compatible stores.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// AWS region.
    pub region: Option<String>,
    /// Custom endpoint of an S3-compatible server (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: Option<bool>,
    /// Sign no requests (public buckets).
    pub skip_signature: Option<bool>,
    /// Address buckets as `bucket.endpoint` rather than `endpoint/bucket`.
    pub virtual_hosted_style: Option<bool>,
    /// Fetch credentials from the EC2/ECS instance-metadata service when no
    /// others are given. Off by default, so a machine without credentials
    /// gets a clear error instead of a request to a link-local address.
    pub instance_metadata: Option<bool>,
}

/// Settings for Google Cloud Storage.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcsConfig {
    /// Path to a service-account JSON key.
    pub service_account_path: Option<String>,
}

/// Settings for Azure Blob Storage.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    /// Storage account name.
    pub account: Option<String>,
    /// Storage account access key.
    pub access_key: Option<String>,
    /// Custom endpoint (an emulator such as Azurite).
    pub endpoint: Option<String>,
    /// Talk to the Azurite emulator with its well-known credentials.
    pub use_emulator: Option<bool>,
}

/// Environment variables that override the config, with the key each sets.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("QUIVER_EXEC_MEMORY_LIMIT", "exec.memory_limit"),
    ("QUIVER_EXEC_TARGET_PARTITIONS", "exec.target_partitions"),
    ("QUIVER_EXEC_BATCH_SIZE", "exec.batch_size"),
    ("QUIVER_EXEC_SPILL_DIR", "exec.spill_dir"),
    ("QUIVER_DATA_ROOTS", "data.roots"),
    ("QUIVER_MEDIA_MAX_IMAGE_PIXELS", "media.max_image_pixels"),
    ("QUIVER_MEDIA_MAX_IMAGE_ALLOC", "media.max_image_alloc"),
    ("QUIVER_MEDIA_MAX_AUDIO_ALLOC", "media.max_audio_alloc"),
    ("QUIVER_MEDIA_MAX_VIDEO_PIXELS", "media.max_video_pixels"),
    ("QUIVER_SERVER_MAX_CONNECTIONS", "server.max_connections"),
    ("QUIVER_SERVER_READ_ONLY", "server.read_only"),
    ("QUIVER_SERVER_USER", "server.user"),
    ("QUIVER_SERVER_PASSWORD", "server.password"),
    ("QUIVER_SERVER_TLS_CERT", "server.tls_cert"),
    ("QUIVER_SERVER_TLS_KEY", "server.tls_key"),
    (
        "QUIVER_SERVER_IDLE_SESSION_TIMEOUT",
        "server.idle_session_timeout",
    ),
    (
        "QUIVER_SERVER_CONNECTION_MEMORY_LIMIT",
        "server.connection_memory_limit",
    ),
    ("QUIVER_S3_REGION", "object_store.s3.region"),
    ("QUIVER_S3_ENDPOINT", "object_store.s3.endpoint"),
    ("QUIVER_S3_ACCESS_KEY_ID", "object_store.s3.access_key_id"),
    (
        "QUIVER_S3_SECRET_ACCESS_KEY",
        "object_store.s3.secret_access_key",
    ),
    ("QUIVER_S3_SESSION_TOKEN", "object_store.s3.session_token"),
    ("QUIVER_S3_ALLOW_HTTP", "object_store.s3.allow_http"),
    ("QUIVER_S3_SKIP_SIGNATURE", "object_store.s3.skip_signature"),
    (
        "QUIVER_S3_VIRTUAL_HOSTED_STYLE",
        "object_store.s3.virtual_hosted_style",
    ),
    (
        "QUIVER_S3_INSTANCE_METADATA",
        "object_store.s3.instance_metadata",
    ),
    (
        "QUIVER_GCS_SERVICE_ACCOUNT_PATH",
        "object_store.gcs.service_account_path",
    ),
    ("QUIVER_AZURE_ACCOUNT", "object_store.azure.account"),
    ("QUIVER_AZURE_ACCESS_KEY", "object_store.azure.access_key"),
    ("QUIVER_AZURE_ENDPOINT", "object_store.azure.endpoint"),
    (
        "QUIVER_AZURE_USE_EMULATOR",
        "object_store.azure.use_emulator",
    ),
    (
        "QUIVER_OBJECT_STORE_CONNECT_TIMEOUT_SECS",
        "object_store.connect_timeout_secs",
    ),
    (
        "QUIVER_OBJECT_STORE_REQUEST_TIMEOUT_SECS",
        "object_store.request_timeout_secs",
    ),
    (
        "QUIVER_OBJECT_STORE_MAX_RETRIES",
        "object_store.max_retries",
    ),
];

impl QuiverConfig {
    /// Reads a TOML file. Unknown keys are errors, so typos do not pass
    /// silently.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Parses TOML text (for embedding and tests).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source: Box::new(source),
        })?;
        cfg.validate("<string>")?;
        Ok(cfg)
    }

    /// Applies the `QUIVER_*` variables of the process environment.
    pub fn with_env_overrides(self) -> Result<Self, ConfigError> {
        self.with_overrides(std::env::vars())
    }

    /// Applies `QUIVER_*` overrides from the given variables (see
    /// [`ENV_OVERRIDES`]); other variables are ignored.
    pub fn with_overrides(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        for (name, value) in vars {
            let Some((_, key)) = ENV_OVERRIDES.iter().find(|(var, _)| *var == name) else {
                continue;
            };
            self.set(key, &value, &name)?;
        }
        self.validate("the environment")?;
        Ok(self)
    }

    /// Sets one dotted key from its text form.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |reason: &str| ConfigError::Value {
            key: key.to_string(),
            value: value.to_string(),
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        let text = || Some(value.to_string());
        let flag = || {
            parse_bool(value)
                .map(Some)
                .ok_or_else(|| err("expected true or false"))
        };
        let number = || {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| err("expected a non-negative integer"))
        };
        let positive = || {
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| err("expected a positive integer"))
        };
        let os = &mut self.object_store;
        match key {
            "exec.memory_limit" => {
                parse_memory_limit(value, total_memory_bytes()).map_err(|r| err(&r))?;
                self.exec.memory_limit = value.to_string()
            }
            "exec.target_partitions" => self.exec.target_partitions = number()?,
            "exec.batch_size" => self.exec.batch_size = number()?,
            "exec.spill_dir" => self.exec.spill_dir = Some(PathBuf::from(value)),
            "data.roots" => {
                self.data.roots = std::env::split_paths(value)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            }
            "media.max_image_pixels" => self.media.max_image_pixels = positive()?,
            "media.max_image_alloc" => self.media.max_image_alloc = positive()?,
            "media.max_audio_alloc" => self.media.max_audio_alloc = positive()?,
            "media.max_video_pixels" => self.media.max_video_pixels = positive()?,
            "server.read_only" => self.server.read_only = flag()?.unwrap_or_default(),
            "server.user" => self.server.user = value.to_string(),
            "server.password" => self.server.password = text().filter(|p| !p.is_empty()),
            "server.tls_cert" => self.server.tls_cert = Some(PathBuf::from(value)),
            "server.tls_key" => self.server.tls_key = Some(PathBuf::from(value)),
            "server.idle_session_timeout" => self.server.idle_session_timeout = text(),
            "server.connection_memory_limit" => {
                parse_memory_limit(value, total_memory_bytes()).map_err(|r| err(&r))?;
                self.server.connection_memory_limit = text()
            }
            "server.max_connections" => {
                self.server.max_connections = usize::try_from(positive()?).unwrap_or(usize::MAX)
            }
            "object_store.s3.region" => os.s3.region = text(),
            "object_store.s3.endpoint" => os.s3.endpoint = text(),
            "object_store.s3.access_key_id" => os.s3.access_key_id = text(),
            "object_store.s3.secret_access_key" => os.s3.secret_access_key = text(),
            "object_store.s3.session_token" => os.s3.session_token = text(),
            "object_store.s3.allow_http" => os.s3.allow_http = flag()?,
            "object_store.s3.skip_signature" => os.s3.skip_signature = flag()?,
            "object_store.s3.virtual_hosted_style" => os.s3.virtual_hosted_style = flag()?,
            "object_store.s3.instance_metadata" => os.s3.instance_metadata = flag()?,
            "object_store.gcs.service_account_path" => os.gcs.service_account_path = text(),
            "object_store.azure.account" => os.azure.account = text(),
            "object_store.azure.access_key" => os.azure.access_key = text(),
            "object_store.azure.endpoint" => os.azure.endpoint = text(),
            "object_store.azure.use_emulator" => os.azure.use_emulator = flag()?,
            "object_store.connect_timeout_secs" => os.connect_timeout_secs = number()? as u64,
            "object_store.request_timeout_secs" => os.request_timeout_secs = number()? as u64,
            "object_store.max_retries" => os.max_retries = number()?,
            _ => return Err(err("unknown setting")),
        }
        Ok(())
    }

    /// Checks values that the types alone cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, value: String, reason: &str| ConfigError::Value {
            key: key.to_string(),
            value,
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        parse_memory_limit(&self.exec.memory_limit, total_memory_bytes())
            .map_err(|reason| err("exec.memory_limit", self.exec.memory_limit.clone(), &reason))?;
        if self.exec.batch_size == 0 {
            return Err(err("exec.batch_size", "0".into(), "must be at least 1"));
        }
        for (name, table) in &self.tables {
            table
                .check(name)
                .map_err(|(key, value, reason)| err(&key, value, &reason))?;
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            let (key, value) = match &self.server.tls_cert {
                Some(c) => ("server.tls_key", c.display().to_string()),
                None => ("server.tls_cert", String::new()),
            };
            return Err(err(
                key,
                value,
                "server.tls_cert and server.tls_key go together",
            ));
        }
        if self.server.user.is_empty() {
            return Err(err("server.user", String::new(), "must not be empty"));
        }
        if self.server.users.values().any(String::is_empty) {
            return Err(err(
                "server.users",
                "(hidden)".into(),
                "a password must not be empty",
            ));
        }
        if let Some(t) = &self.server.idle_session_timeout
            && t.trim() != "0"
            && crate::pg_compat::parse_timeout(t).is_none()
        {
            return Err(err(
                "server.idle_session_timeout",
                t.clone(),
                "expected a duration such as 600000 (milliseconds), 30s, 10min or 1h",
            ));
        }
        if let Some(limit) = &self.server.connection_memory_limit {
            parse_memory_limit(limit, total_memory_bytes())
                .map_err(|reason| err("server.connection_memory_limit", limit.clone(), &reason))?;
        }
        if self.server.max_connections == 0 {
            return Err(err(
                "server.max_connections",
                "0".into(),
                "must be at least 1",
            ));
        }
        if let Some(endpoint) = &self.object_store.s3.endpoint {
            url::Url::parse(endpoint).map_err(|e| {
                err(
                    "object_store.s3.endpoint",
                    endpoint.clone(),
                    &format!("not a URL: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// The memory pool size in bytes.
    pub fn memory_limit_bytes(&self) -> Result<usize, ConfigError> {
        parse_memory_limit(&self.exec.memory_limit, total_memory_bytes()).map_err(|reason| {
            ConfigError::Value {
                key: "exec.memory_limit".into(),
                value: self.exec.memory_limit.clone(),
                origin: "config".into(),
                reason,
            }
        })
    }

    /// `server.connection_memory_limit` in bytes, when set.
    pub fn connection_memory_limit_bytes(&self) -> Result<Option<usize>, ConfigError> {
        let Some(limit) = &self.server.connection_memory_limit else {
            return Ok(None);
        };
        parse_memory_limit(limit, total_memory_bytes())
            .map(Some)
            .map_err(|reason| ConfigError::Value {
                key: "server.connection_memory_limit".into(),
                value: limit.clone(),
                origin: "config".into(),
                reason,
            })
    }

    /// Target partitions, with 0 resolved to the number of CPU cores.
    pub fn target_partitions(&self) -> usize {
        match self.exec.target_partitions {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses `"4GiB"`, `"512 MB"`, `"1048576"` or `"50%"` (of `total`) into bytes.
pub fn parse_memory_limit(value: &str, total: u64) -> Result<usize, String> {
    let v = value.trim();
    if let Some(pct) = v.strip_suffix('%') {
        let pct: f64 = pct
            .trim()
            .parse()
            .map_err(|_| "expected a percentage such as 50%".to_string())?;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err("a percentage must be above 0 and at most 100".into());
        }
        return Ok((total as f64 * pct / 100.0) as usize);
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| "expected a size such as 4GiB, 512MB or 50%".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    let bytes = num * mult as f64;
    if bytes < 1.0 {
        return Err("must be above zero".into());
    }
    Ok(bytes as usize)
}

/// Physical memory of this machine, from `/proc/meminfo` (8 GiB if unknown).
pub fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_parse() {
        assert_eq!(parse_memory_limit("4GiB", 0).unwrap(), 4 << 30);
        assert_eq!(parse_memory_limit("512 MB", 0).unwrap(), 512_000_000);
        assert_eq!(parse_memory_limit("1024", 0).unwrap(), 1024);
        assert_eq!(parse_memory_limit("50%", 1000).unwrap(), 500);
        assert!(parse_memory_limit("lots", 0).is_err());
        assert!(parse_memory_limit("0%", 1000).is_err());
        assert!(
            parse_memory_limit("3 parsecs", 0)
                .unwrap_err()
                .contains("parsecs")
        );
    }

    #[test]
    fn toml_and_env_override() {
        let cfg = QuiverConfig::from_toml(
            "[exec]\nbatch_size = 100\n[object_store.s3]\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        assert_eq!(cfg.exec.batch_size, 100);
        let cfg = cfg
            .with_overrides([
                ("QUIVER_EXEC_BATCH_SIZE".to_string(), "7".to_string()),
                ("QUIVER_S3_ALLOW_HTTP".to_string(), "true".to_string()),
                ("UNRELATED".to_string(), "x".to_string()),
            ])
            .unwrap();
        assert_eq!(cfg.exec.batch_size, 7);
        assert_eq!(cfg.object_store.s3.allow_http, Some(true));
        assert_eq!(cfg.object_store.s3.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn bad_values_name_key_and_origin() {
        let err = QuiverConfig::default()
            .with_overrides([("QUIVER_EXEC_BATCH_SIZE".to_string(), "many".to_string())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("exec.batch_size"), "{err}");
        assert!(err.contains("QUIVER_EXEC_BATCH_SIZE"), "{err}");
        let err = QuiverConfig::from_toml("[exec]\nmemory_limt = \"1GB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_limt"), "{err}");
        let err = QuiverConfig::from_toml("[exec]\nmemory_limit = \"1 GX\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exec.memory_limit"), "{err}");
    }

    #[test]
    fn tables_parse_and_are_checked() {
        let cfg = QuiverConfig::from_toml(
            "[tables.orders]\nformat = \"parquet\"\nlocation = \"data/orders/\"\n\n[tables.customers]\nformat = \"CSV\"\nlocation = \"c.csv\"\nin_memory = true\noptions = { \"format.delimiter\" = \";\" }\n",
        )
        .unwrap();
        assert_eq!(cfg.tables["orders"].location, "data/orders/");
        assert!(!cfg.tables["orders"].in_memory);
        assert!(cfg.tables["customers"].in_memory);
        assert_eq!(cfg.tables["customers"].options["format.delimiter"], ";");
        for (toml, key, reason) in [
            (
                "[tables.t]\nformat = \"xlsx\"\nlocation = \"x\"\n",
                "tables.t.format",
                "expected one of parquet",
            ),
            (
                "[tables.Orders]\nformat = \"csv\"\nlocation = \"x\"\n",
                "tables.Orders",
                "lower-case",
            ),
            (
                "[tables.p]\nformat = \"images\"\nlocation = \"x/\"\nin_memory = true\n",
                "tables.p.in_memory",
                "only parquet, csv and json",
            ),
            (
                "[tables.e]\nformat = \"csv\"\nlocation = \" \"\n",
                "tables.e.location",
                "must not be empty",
            ),
        ] {
            let err = QuiverConfig::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{toml}: {err}");
        }
        let err = QuiverConfig::from_toml("[tables.t]\nformat = \"csv\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("location"), "{err}");
    }
}
