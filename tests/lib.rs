//! Shared pieces of Quiver's integration tests: the sqllogictest adapter
//! ([`QuiverDb`]) and a real S3-compatible server on loopback
//! ([`MotoServer`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{DataFusionError, Result};
use quiver::{Quiver, QuiverConfig};
use sqllogictest::{DBOutput, DefaultColumnType};

/// One sqllogictest connection: a fresh [`Quiver`] engine.
#[derive(Debug)]
pub struct QuiverDb {
    quiver: Quiver,
}

impl QuiverDb {
    /// A new engine with `config`.
    pub fn new(config: QuiverConfig) -> Result<Self> {
        Ok(Self {
            quiver: Quiver::builder().config(config).build()?,
        })
    }
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// Renders batches as sqllogictest rows: `NULL` for nulls, `(empty)` for
/// empty strings.
pub fn batches_to_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = vec![];
    for batch in batches {
        let batch = &quiver::display::media_for_display(batch)?;
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let row = formatters
                .iter()
                .zip(batch.columns())
                .map(|(f, col)| {
                    // Plans end with a newline, which .slt records cannot hold.
                    let s = f.value(r).to_string().trim_end().to_string();
                    if s.is_empty() && !col.is_null(r) {
                        "(empty)".to_string()
                    } else {
                        s
                    }
                })
                .collect();
            rows.push(row);
        }
    }
    Ok(rows)
}

#[async_trait]
impl sqllogictest::AsyncDB for QuiverDb {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>> {
        let df = self.quiver.sql(sql).await?;
        let schema = df.schema().as_arrow().clone();
        let batches: Vec<RecordBatch> = {
            use futures::TryStreamExt;
            self.quiver.execute_frame(df).await?.try_collect().await?
        };
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        // A multi-line value (an EXPLAIN plan) becomes one row per line, as
        // .slt files write it.
        let rows = batches_to_rows(&batches)?
            .into_iter()
            .flat_map(|row| {
                if row.iter().any(|c| c.contains('\n')) {
                    row.join(" ").lines().map(|l| vec![l.to_string()]).collect()
                } else {
                    vec![row]
                }
            })
            .collect();
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quiver"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// A real S3-compatible server (moto, from PyPI) on a free loopback port,
/// killed when dropped. `.ci/run` installs it with `pip install moto[server]`.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl MotoServer {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with_env(&[])
    }

    /// Starts a server that checks signatures and credentials on every
    /// request: only keys created through its IAM API are accepted.
    pub fn start_with_auth() -> std::io::Result<Self> {
        Self::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with_env(env: &[(&str, &str)]) -> std::io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "moto server exited at start ({status}); install it with: pip install 'moto[server]'"
                )));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("moto server did not start in 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a plain HTTP `PUT /bucket` (moto does not check
    /// signatures by default); returns the HTTP status line.
    pub fn create_bucket(&self, bucket: &str) -> std::io::Result<String> {
        self.raw_put(&format!("/{bucket}"), &[], &[])
    }

    /// Uploads an object readable by anyone (`x-amz-acl: public-read`), so
    /// that it can be fetched through a plain `http://` URL; returns the
    /// HTTP status line.
    pub fn put_public(&self, bucket: &str, key: &str, body: &[u8]) -> std::io::Result<String> {
        self.raw_put(
            &format!("/{bucket}/{key}"),
            &[("x-amz-acl", "public-read")],
            body,
        )
    }

    fn raw_put(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp.lines().next().unwrap_or_default().to_string())
    }

    /// A config pointing `s3://` at this server with test credentials.
    pub fn config(&self) -> QuiverConfig {
        let mut cfg = QuiverConfig::default();
        let s3 = &mut cfg.object_store.s3;
        s3.endpoint = Some(self.endpoint());
        s3.region = Some("us-east-1".into());
        s3.access_key_id = Some("testing".into());
        s3.secret_access_key = Some("testing".into());
        s3.allow_http = Some(true);
        cfg.object_store.request_timeout_secs = 10;
        cfg.object_store.max_retries = 1;
        cfg
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
