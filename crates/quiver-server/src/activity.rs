//! `pg_stat_activity`: one row per connection of the server, as Postgres
//! lists its backends — who is connected, from where, what each runs now
//! and since when — with `quiver_memory_bytes`, what the connection's
//! queries hold of the shared memory pool at this moment, and the progress
//! of its running (or last) statement: `quiver_files_read`,
//! `quiver_model_rows` and, when known, `quiver_model_rows_total`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use quiver::Quiver;

/// What one connection is doing now.
#[derive(Debug, Clone, Default)]
pub struct Doing {
    /// The statement running or last run.
    pub query: String,
    /// When it started.
    pub since: Option<SystemTime>,
    /// Whether it is running.
    pub active: bool,
    /// Whether the client has a transaction open.
    pub in_transaction: bool,
}

/// One connection, as `pg_stat_activity` shows it.
#[derive(Debug)]
pub struct Backend {
    pub pid: i32,
    pub user: String,
    pub database: String,
    pub client: SocketAddr,
    pub started: SystemTime,
    /// The connection's session (application name, memory held).
    pub session: Quiver,
    pub doing: Mutex<Doing>,
}

impl Backend {
    /// Notes that `query` starts now.
    pub fn start(&self, query: &str) {
        let mut d = self.doing.lock().unwrap_or_else(|e| e.into_inner());
        if d.query != query {
            d.query.clear();
            d.query.push_str(query);
        }
        d.since = Some(SystemTime::now());
        d.active = true;
    }

    /// Notes that the statement ended; `in_transaction` as the client left it.
    pub fn finish(&self, in_transaction: bool) {
        let mut d = self.doing.lock().unwrap_or_else(|e| e.into_inner());
        d.active = false;
        d.in_transaction = in_transaction;
    }
}

/// Every connection of a server.
#[derive(Debug, Default)]
pub struct Backends(Mutex<BTreeMap<i32, Weak<Backend>>>);

impl Backends {
    /// Lists `backend` until it is dropped.
    pub fn add(&self, backend: &Arc<Backend>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, b| b.strong_count() > 0);
        all.insert(backend.pid, Arc::downgrade(backend));
    }

    fn snapshot(&self) -> Vec<Arc<Backend>> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.values().filter_map(Weak::upgrade).collect()
    }
}

fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("datname", DataType::Utf8, false),
        Field::new("pid", DataType::Int32, false),
        Field::new("usename", DataType::Utf8, false),
        Field::new("application_name", DataType::Utf8, false),
        Field::new("client_addr", DataType::Utf8, false),
        Field::new("client_port", DataType::Int32, false),
        Field::new("backend_start", ts(), false),
        Field::new("query_start", ts(), true),
        Field::new("state", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("quiver_memory_bytes", DataType::Int64, false),
        Field::new("quiver_files_read", DataType::Int64, false),
        Field::new("quiver_model_rows", DataType::Int64, false),
        Field::new("quiver_model_rows_total", DataType::Int64, true),
    ]))
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The `pg_stat_activity` table of a server's sessions.
#[derive(Debug)]
pub struct StatActivity(pub Arc<Backends>);

impl StatActivity {
    fn batch(&self) -> Result<RecordBatch> {
        let all = self.0.snapshot();
        let doing: Vec<Doing> = all
            .iter()
            .map(|b| b.doing.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        let progress: Vec<_> = all.iter().map(|b| b.session.progress()).collect();
        let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..all.len()).map(f)))
        };
        let utc = |a: TimestampMicrosecondArray| -> ArrayRef { Arc::new(a.with_timezone("UTC")) };
        let columns: Vec<ArrayRef> = vec![
            text(&|i| all[i].database.clone()),
            Arc::new(Int32Array::from_iter_values(all.iter().map(|b| b.pid))),
            text(&|i| all[i].user.clone()),
            text(&|i| {
                all[i]
                    .session
                    .client_setting("application_name")
                    .unwrap_or_default()
            }),
            text(&|i| all[i].client.ip().to_string()),
            Arc::new(Int32Array::from_iter_values(
                all.iter().map(|b| i32::from(b.client.port())),
            )),
            utc(TimestampMicrosecondArray::from_iter_values(
                all.iter().map(|b| micros(b.started)),
            )),
            utc(TimestampMicrosecondArray::from_iter(
                doing.iter().map(|d| d.since.map(micros)),
            )),
            text(&|i| {
                match (doing[i].active, doing[i].in_transaction) {
                    (true, _) => "active",
                    (false, true) => "idle in transaction",
                    (false, false) => "idle",
                }
                .to_string()
            }),
            text(&|i| doing[i].query.clone()),
            Arc::new(Int64Array::from_iter_values(
                all.iter().map(|b| b.session.memory_held() as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                progress
                    .iter()
                    .map(|p| p.as_ref().map_or(0, |p| p.files() as i64)),
            )),
            Arc::new(Int64Array::from_iter_values(
                progress
                    .iter()
                    .map(|p| p.as_ref().map_or(0, |p| p.model_done() as i64)),
            )),
            Arc::new(Int64Array::from_iter(progress.iter().map(|p| {
                p.as_ref().and_then(|p| p.model_total()).map(|t| t as i64)
            }))),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

#[async_trait]
impl TableProvider for StatActivity {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// The connections as they are when the query is planned.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        MemTable::try_new(schema(), vec![vec![self.batch()?]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
