//! One client connection: its own Quiver session, the simple and extended
//! query protocols, and the statements Postgres clients send that
//! DataFusion does not know (transactions, client settings).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::PortalExecutionState;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::query::{send_execution_response, send_ready_for_query};
use pgwire::api::results::{CopyResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::RowDescription;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use quiver::Quiver;
use quiver::models::ModelStatement;
use quiver::pg_compat::{ClientSettings, parse_timeout};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use tokio::sync::watch;

use crate::cursor::CursorCommand;
use crate::encode::{encode_batch, fields, pg_field_type, pg_type};
use crate::errors::{pg_error, to_pg};
use crate::notices::Notices;

/// A parsed statement: DataFusion's plan (with `$n` placeholders), or one
/// of the statements answered here.
#[derive(Debug, Clone)]
pub struct Statement {
    sql: String,
    kind: Kind,
    /// The types of its plan's parameters, once asked for (each Bind
    /// needs them).
    parameters: std::sync::OnceLock<Vec<Option<DataType>>>,
    /// What the engine learns of it between executions.
    memo: quiver::PlanMemo,
    /// Its result fields in the format last asked for.
    fields: FieldsMemo,
}

/// A statement's result fields in the last result format asked for: each
/// Describe and Execute of a prepared statement asks for the same.
#[derive(Debug, Default)]
struct FieldsMemo(std::sync::Mutex<Option<(Format, Arc<Vec<FieldInfo>>)>>);

impl Clone for FieldsMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

fn same_format(a: &Format, b: &Format) -> bool {
    match (a, b) {
        (Format::UnifiedText, Format::UnifiedText)
        | (Format::UnifiedBinary, Format::UnifiedBinary) => true,
        (Format::Individual(a), Format::Individual(b)) => a == b,
        _ => false,
    }
}

impl Statement {
    fn new(sql: String, kind: Kind) -> Self {
        Self {
            sql,
            kind,
            parameters: std::sync::OnceLock::new(),
            memo: quiver::PlanMemo::default(),
            fields: FieldsMemo::default(),
        }
    }

    /// [`result_fields`] in `format`, made once while clients ask for the
    /// same format.
    fn fields_in(&self, format: &Format) -> Arc<Vec<FieldInfo>> {
        let mut memo = self.fields.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, fields)) = &*memo
            && same_format(last, format)
        {
            return Arc::clone(fields);
        }
        let fields = Arc::new(result_fields(self, Some(format)));
        *memo = Some((format.clone(), Arc::clone(&fields)));
        fields
    }

    /// The types of `plan`'s (this statement's plan's) parameters, `$1`
    /// first; `None` where the plan does not say.
    fn parameter_types(&self, plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
        if let Some(types) = self.parameters.get() {
            return Ok(types.clone());
        }
        let types = parameter_types(plan)?;
        Ok(self.parameters.get_or_init(|| types).clone())
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Plan(Box<LogicalPlan>),
    /// `BEGIN`, `COMMIT`, `ROLLBACK` and friends: accepted, no transaction
    /// semantics (every statement commits on its own).
    Transaction {
        start: bool,
        tag: &'static str,
    },
    /// `SET name = value` for a client setting DataFusion does not have.
    SetClient {
        name: String,
        value: String,
    },
    /// `SHOW name` for such a setting.
    ShowClient {
        name: String,
    },
    /// `COPY (query) TO STDOUT`: the query's rows in a COPY format.
    CopyOut {
        plan: Box<LogicalPlan>,
        options: crate::copy::CopyOptions,
    },
    /// `DISCARD ALL`, `DEALLOCATE …`: nothing to do.
    Nothing {
        tag: &'static str,
    },
    /// `DECLARE name CURSOR FOR query`.
    Declare {
        name: String,
        hold: bool,
        plan: Box<LogicalPlan>,
    },
    /// `FETCH … FROM name`, with the cursor's schema for `Describe`.
    Fetch {
        name: String,
        count: Option<usize>,
        schema: datafusion::arrow::datatypes::SchemaRef,
    },
    /// `CLOSE name` or `CLOSE ALL`.
    CloseCursor {
        name: Option<String>,
    },
}

/// The plan whose `$n` parameters a statement takes.
fn bound_plan(kind: &Kind) -> Option<&LogicalPlan> {
    match kind {
        Kind::Plan(plan) | Kind::Declare { plan, .. } => Some(plan),
        _ => None,
    }
}

fn words(sql: &str) -> Vec<String> {
    sql.split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .take(4)
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// The statements answered without DataFusion.
fn special(sql: &str) -> Option<Kind> {
    let w = words(sql);
    let first = w.first().map(String::as_str)?;
    let second = w.get(1).map(String::as_str);
    match (first, second) {
        ("begin", _) | ("start", Some("transaction")) => Some(Kind::Transaction {
            start: true,
            tag: "BEGIN",
        }),
        ("commit", _) | ("end", _) => Some(Kind::Transaction {
            start: false,
            tag: "COMMIT",
        }),
        // Savepoints are accepted as transactions are, and as honestly:
        // nothing is undone (psycopg nests transactions with them).
        ("savepoint", _) => Some(Kind::Nothing { tag: "SAVEPOINT" }),
        ("release", _) => Some(Kind::Nothing { tag: "RELEASE" }),
        ("rollback", Some("to")) => Some(Kind::Nothing { tag: "ROLLBACK" }),
        ("rollback", _) | ("abort", _) => Some(Kind::Transaction {
            start: false,
            tag: "ROLLBACK",
        }),
        ("discard", _) => Some(Kind::Nothing { tag: "DISCARD ALL" }),
        ("deallocate", _) => Some(Kind::Nothing { tag: "DEALLOCATE" }),
        ("set", _) => parse_set(sql),
        // Postgres' multi-word names (SQLAlchemy asks for the first).
        ("show", Some("transaction")) if w.get(2).map(String::as_str) == Some("isolation") => {
            Some(Kind::ShowClient {
                name: "transaction_isolation".to_string(),
            })
        }
        ("show", Some("time")) if w.get(2).map(String::as_str) == Some("zone") => {
            Some(Kind::ShowClient {
                name: "timezone".to_string(),
            })
        }
        ("show", Some(name))
            if !name.contains('.') && !matches!(name, "all" | "tables" | "columns" | "models") =>
        {
            Some(Kind::ShowClient {
                name: name.trim_matches('"').to_string(),
            })
        }
        _ => None,
    }
}

/// `SET [SESSION|LOCAL] name {=|TO} value` for names outside DataFusion's
/// (`datafusion.*`) and Quiver's (`quiver.*`) settings; `SET TIME ZONE x`.
fn parse_set(sql: &str) -> Option<Kind> {
    let body = sql.trim().trim_end_matches(';').trim();
    let rest = body.get(3..)?.trim_start();
    let rest = ["session ", "local "]
        .iter()
        .find_map(|p| {
            rest.to_ascii_lowercase()
                .starts_with(p)
                .then(|| rest[p.len()..].trim_start())
        })
        .unwrap_or(rest);
    let lower = rest.to_ascii_lowercase();
    let (name, value) = if let Some(v) = lower.strip_prefix("time zone") {
        (
            "timezone".to_string(),
            rest[rest.len() - v.len()..].trim().to_string(),
        )
    } else {
        let split = rest.find(|c: char| c == '=' || c.is_whitespace())?;
        let name = rest[..split].trim().trim_matches('"').to_ascii_lowercase();
        let mut value = rest[split..].trim_start();
        if let Some(v) = value.strip_prefix('=') {
            value = v;
        } else if value.to_ascii_lowercase().starts_with("to ") {
            value = &value[3..];
        }
        (name, value.trim().to_string())
    };
    if name.starts_with("datafusion.") || name.starts_with("quiver.") {
        return None;
    }
    let value = value.trim_matches('\'').trim_matches('"').to_string();
    Some(Kind::SetClient { name, value })
}

/// Plans statements for the extended protocol.
#[derive(Debug)]
pub struct Parser {
    quiver: Quiver,
    /// A Parse message is activity too (idle-session timeout).
    activity: Arc<crate::idle::Activity>,
    /// The connection's cursors (`FETCH` is described by its cursor).
    cursors: Arc<crate::cursor::Cursors>,
}

impl Parser {
    async fn parse(&self, sql: &str) -> PgWireResult<Statement> {
        Ok(self.parse_with(sql, false).await?.0)
    }

    /// Parses a statement of a simple query: a query like one the session
    /// planned before but for its filters' constants comes with those as
    /// the values of its plan's parameters (see `Quiver::plan_statement`).
    async fn parse_simple(&self, sql: &str) -> PgWireResult<(Statement, Option<ParamValues>)> {
        self.parse_with(sql, true).await
    }

    async fn parse_with(
        &self,
        sql: &str,
        simple: bool,
    ) -> PgWireResult<(Statement, Option<ParamValues>)> {
        let mut values = None;
        // asyncpg's type lookup, as a query DataFusion can run.
        if let Some(ours) = crate::asyncpg::introspection(sql) {
            let plan = self.quiver.create_logical_plan(ours).await.map_err(to_pg)?;
            return Ok((
                Statement::new(
                    ours.to_string(),
                    Kind::Plan(Box::new(
                        crate::asyncpg::mark_oid_arrays(plan).map_err(to_pg)?,
                    )),
                ),
                None,
            ));
        }
        // Model statements go to the engine as they are (`SHOW MODELS` is
        // no client setting); clients may not change the shared models of
        // a read-only server.
        let model_statement = quiver::models::parse_model_statement(sql).map_err(to_pg)?;
        if self.quiver.config().server.read_only
            && matches!(
                model_statement,
                Some(ModelStatement::Create { .. } | ModelStatement::Drop { .. })
            )
        {
            return Err(pg_error(
                "25006",
                "cannot register or drop models on a read-only server (server.read_only = true); declare them in the config's [models.*]",
            ));
        }
        let cursor = match model_statement {
            Some(_) => None,
            None => crate::cursor::parse(sql).transpose()?,
        };
        let special = match (model_statement, cursor) {
            (_, Some(CursorCommand::Declare { name, hold, query })) => {
                let plan = self
                    .quiver
                    .create_logical_plan(&query)
                    .await
                    .map_err(to_pg)?;
                Some(Kind::Declare {
                    name,
                    hold,
                    plan: Box::new(plan),
                })
            }
            (_, Some(CursorCommand::Fetch { name, count })) => Some(Kind::Fetch {
                schema: self.cursors.schema(&name)?,
                name,
                count,
            }),
            (_, Some(CursorCommand::Close { name })) => Some(Kind::CloseCursor { name }),
            (Some(_), None) => None,
            (None, None) => match crate::copy::parse(sql) {
                Some(copy) => {
                    let copy = copy?;
                    let plan = self
                        .quiver
                        .create_logical_plan(&copy.query)
                        .await
                        .map_err(to_pg)?;
                    Some(Kind::CopyOut {
                        plan: Box::new(plan),
                        options: copy.options,
                    })
                }
                None => special(sql),
            },
        };
        let kind = match special {
            Some(kind) => kind,
            None => {
                let plan = if simple {
                    let (plan, literals) = self.quiver.plan_statement(sql).await.map_err(to_pg)?;
                    values = literals;
                    plan
                } else {
                    self.quiver.create_logical_plan(sql).await.map_err(to_pg)?
                };
                if self.quiver.config().server.read_only {
                    // Writes (COPY … TO, INSERT, UPDATE, DELETE) anywhere in
                    // the plan, prepared statements included.
                    datafusion::execution::context::SQLOptions::new()
                        .with_allow_dml(false)
                        .verify_plan(&plan)
                        .map_err(|e| {
                            pg_error(
                                "25006",
                                format!(
                                    "cannot write on a read-only server (server.read_only = true): {}",
                                    e.strip_backtrace()
                                        .trim_start_matches("Error during planning: ")
                                ),
                            )
                        })?;
                }
                Kind::Plan(Box::new(plan))
            }
        };
        Ok((Statement::new(sql.to_string(), kind), values))
    }
}

/// The types of placeholders written with a cast (`$1::bytea`), which
/// DataFusion's own inference leaves open.
fn cast_placeholder_types(plan: &LogicalPlan) -> HashMap<String, DataType> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr};
    let mut found = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::Cast(Cast { expr, field }) = x
                    && let Expr::Placeholder(p) = expr.as_ref()
                {
                    found.insert(p.id.clone(), field.data_type().clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// The parameter types DataFusion inferred, in `$1, $2, …` order.
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let mut types = plan.get_parameter_types().map_err(to_pg)?;
    for (id, t) in cast_placeholder_types(plan) {
        let slot = types.entry(id).or_insert(None);
        if slot.is_none() {
            *slot = Some(t);
        }
    }
    let mut indexed: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(name, t)| {
            name.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|i| (i, t))
        })
        .collect();
    indexed.sort_by_key(|(i, _)| *i);
    let n = indexed.last().map_or(0, |(i, _)| *i);
    let mut out = vec![None; n];
    for (i, t) in indexed {
        if let Some(slot) = out.get_mut(i.wrapping_sub(1)) {
            *slot = t;
        }
    }
    Ok(out)
}

fn result_fields(stmt: &Statement, format: Option<&Format>) -> Vec<FieldInfo> {
    match &stmt.kind {
        Kind::Plan(plan) if returns_rows(plan) => fields(plan.schema().as_arrow(), |i| {
            format.map_or(FieldFormat::Text, |f| f.format_for(i))
        }),
        Kind::Fetch { schema, .. } => fields(schema, |i| {
            format.map_or(FieldFormat::Text, |f| f.format_for(i))
        }),
        Kind::ShowClient { name } => vec![FieldInfo::new(
            name.clone(),
            None,
            None,
            Type::TEXT,
            format.map_or(FieldFormat::Text, |f| f.format_for(0)),
        )],
        _ => vec![],
    }
}

/// Whether the plan is a command answered by a tag (DDL, `SET`, `PREPARE`,
/// `COPY`, `INSERT`) rather than with rows (a query, `EXPLAIN`, `SHOW`,
/// `EXECUTE` of a prepared query).
fn is_command(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) | LogicalPlan::Dml(_) => true,
        LogicalPlan::Statement(s) => !matches!(s, datafusion::logical_expr::Statement::Execute(_)),
        _ => false,
    }
}

/// Whether the plan answers with rows, as far as planning can tell.
fn returns_rows(plan: &LogicalPlan) -> bool {
    !is_command(plan) && !plan.schema().fields().is_empty()
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.activity.touch();
        // Types the client declared are the parameters' types, as in
        // Postgres; `unknown` ones are text where nothing else decides.
        let declared = crate::params::with_declared_types(sql, types);
        match self.parse(declared.as_deref().unwrap_or(sql)).await {
            Ok(stmt) => Ok(Some(stmt)),
            Err(e) => {
                let as_text = crate::params::with_unknown_as_text(sql, types);
                if as_text != sql
                    && let Ok(stmt) = self.parse(&as_text).await
                {
                    return Ok(Some(stmt));
                }
                Err(e)
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        match bound_plan(&stmt.kind) {
            // Unknown types are announced as text: clients then send text,
            // which DataFusion coerces.
            Some(plan) => Ok(stmt
                .parameter_types(plan)?
                .iter()
                .map(|t| announced_type(stmt, t.as_ref()))
                .collect()),
            None => Ok(vec![]),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(result_fields(stmt, column_format))
    }
}

/// One connection's handlers.
#[derive(Debug)]
pub struct Connection {
    quiver: Quiver,
    parser: Arc<Parser>,
    /// Open cursors (`DECLARE … CURSOR`).
    cursors: Arc<crate::cursor::Cursors>,
    /// What the idle-session timeout watches.
    activity: Arc<crate::idle::Activity>,
    /// Every connection of the server, for `pg_stat_activity`.
    backends: Arc<crate::activity::Backends>,
    /// This connection in `backends`, once started.
    backend: Mutex<Option<Arc<crate::activity::Backend>>>,
    /// The server's cancel keys, this connection's among them once started.
    cancel_keys: Arc<CancelKeys>,
    /// Counts this connection's cancel requests; running statements stop
    /// when it moves.
    cancels: Arc<watch::Sender<u64>>,
    /// This connection's key in `cancel_keys`.
    cancel_key: Mutex<Option<CancelKey>>,
    /// Password authentication, when the server has users.
    auth: Option<Arc<Auth>>,
}

/// SCRAM-SHA-256 password authentication (`pgwire`'s).
pub struct Auth(SASLAuthStartupHandler<DefaultServerParameterProvider>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(SCRAM-SHA-256)")
    }
}

/// The users of `passwords` and their SCRAM-SHA-256 verifiers: each
/// password salted (16 random bytes, drawn at start) and hashed with 4096
/// iterations, as Postgres stores them; the passwords themselves are not
/// kept.
#[derive(Debug)]
pub struct Users(HashMap<String, Password>);

/// SCRAM's iteration count (Postgres' default, the RFC's minimum).
const SCRAM_ITERATIONS: usize = 4096;

impl Users {
    /// Verifiers for `passwords` (user → password).
    pub fn new(passwords: &std::collections::BTreeMap<String, String>) -> std::io::Result<Self> {
        let mut users = HashMap::new();
        for (user, password) in passwords {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(std::io::Error::other)?;
            let hashed = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
            users.insert(user.clone(), Password::new(Some(salt.to_vec()), hashed));
        }
        Ok(Self(users))
    }

    /// The authentication handler over these users; with the server's
    /// certificates (PEM), clients on TLS may bind their proof to the
    /// channel (SCRAM-SHA-256-PLUS).
    pub fn into_auth(self, certs_pem: Option<&[u8]>) -> PgWireResult<Auth> {
        let mut scram = ScramAuth::new(Arc::new(self));
        scram.set_iterations(SCRAM_ITERATIONS);
        if let Some(pem) = certs_pem {
            scram.configure_certificate(pem)?;
        }
        Ok(Auth(
            SASLAuthStartupHandler::new(Arc::new(server_parameters())).with_scram(scram),
        ))
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        self.0
            .get(user)
            .cloned()
            .ok_or_else(|| PgWireError::InvalidPassword(user.to_string()))
    }
}

/// What a client learns at startup (`ParameterStatus`): `pgwire`'s
/// defaults, with Quiver's `server_version` (JDBC's
/// `getDatabaseProductVersion`, psql's banner).
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = quiver::pg_compat::SERVER_VERSION.to_string();
    parameters
}

/// Process ids and secret keys for trusted logins.
static PIDS: std::sync::LazyLock<pgwire::api::RandomPidSecretKeyGenerator> =
    std::sync::LazyLock::new(Default::default);

/// A trusted login (no password; loopback only, see `serve`): as
/// `pgwire`'s no-op startup, with Quiver's server parameters.
async fn trust<C>(
    client: &mut C,
    message: pgwire::messages::PgWireFrontendMessage,
) -> PgWireResult<()>
where
    C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    use pgwire::api::PidSecretKeyGenerator;
    if let pgwire::messages::PgWireFrontendMessage::Startup(startup) = &message {
        pgwire::api::auth::protocol_negotiation(client, startup).await?;
        pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
        let (pid, secret_key) = PIDS.generate(&*client);
        client.set_pid_and_secret_key(pid, secret_key);
        pgwire::api::auth::finish_authentication(client, &server_parameters()).await?;
    }
    Ok(())
}

/// A connection's process id and secret key, as its cancel requests bring them.
type CancelKey = (i32, Vec<u8>);

/// The cancel key of every connection of a server: a cancel request (a
/// connection of its own, sent by psql on Ctrl-C or by a driver's
/// `cancel()`) names the connection whose running statement it stops.
///
/// Quiver keeps its own registry rather than `pgwire`'s, whose signal only
/// covers a query's planning: here it also stops a statement while its rows
/// are being sent.
#[derive(Debug, Default)]
pub struct CancelKeys(Mutex<HashMap<CancelKey, Arc<watch::Sender<u64>>>>);

impl CancelKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKey, Arc<watch::Sender<u64>>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl CancelHandler for CancelKeys {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        // An unknown key is ignored, as Postgres does.
        if let Some(cancels) = self.lock().get(&key) {
            cancels.send_modify(|n| *n += 1);
        }
    }
}

/// A cancel request for the statements of one query message: fires when a
/// request arrives after the message did.
type CancelSignal = watch::Receiver<u64>;

/// What a statement that stops early answers, as Postgres does.
fn canceled(why: &str) -> PgWireError {
    pg_error("57014", format!("canceling statement due to {why}"))
}

/// What stops a statement: a cancel request, or its `statement_timeout`
/// passing. Checking is cheap ([`Stop::now`]); a waker is registered only
/// while the statement waits for something ([`Stop::poll_wait`]), so a
/// statement that never waits never sets up a timer or a watch.
struct Stop {
    cancel: CancelSignal,
    deadline: Option<tokio::time::Instant>,
    waiting: Option<BoxFuture<'static, PgWireError>>,
}

impl Stop {
    fn new(cancel: CancelSignal, timeout: Option<Duration>) -> Self {
        Self {
            cancel,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            waiting: None,
        }
    }

    /// The error to stop with, if the statement must stop now.
    fn now(&self) -> Option<PgWireError> {
        // A closed channel (the connection ended) is no cancel.
        if self.cancel.has_changed().unwrap_or(false) {
            return Some(canceled("user request"));
        }
        self.deadline
            .filter(|d| tokio::time::Instant::now() >= *d)
            .map(|_| canceled("statement timeout"))
    }

    /// Ready with the error to stop with; otherwise `cx` is woken when
    /// there is one.
    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<PgWireError> {
        let deadline = self.deadline;
        let waiting = self.waiting.get_or_insert_with(|| {
            let mut cancel = self.cancel.clone();
            let cancelled = async move {
                if cancel.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                canceled("user request")
            };
            match deadline {
                None => Box::pin(cancelled),
                Some(d) => Box::pin(async move {
                    tokio::select! {
                        error = cancelled => error,
                        () = tokio::time::sleep_until(d) => canceled("statement timeout"),
                    }
                }),
            }
        });
        waiting.as_mut().poll(cx)
    }
}

/// `rows` until `stop` says to stop; then its error, and the rows' stream
/// (the query's execution) is dropped at once. Checked before each item.
fn until_stopped<T: Send + 'static>(
    rows: impl futures::Stream<Item = PgWireResult<T>> + Send + 'static,
    stop: Stop,
) -> impl futures::Stream<Item = PgWireResult<T>> + Send + 'static {
    let mut state: Option<(BoxStream<'static, PgWireResult<T>>, Stop)> =
        Some((Box::pin(rows), stop));
    stream::poll_fn(move |cx| {
        use std::task::Poll;
        let Some((rows, stop)) = &mut state else {
            return Poll::Ready(None);
        };
        if let Some(error) = stop.now() {
            state = None;
            return Poll::Ready(Some(Err(error)));
        }
        match rows.as_mut().poll_next(cx) {
            Poll::Ready(item) => Poll::Ready(item),
            Poll::Pending => match stop.poll_wait(cx) {
                Poll::Ready(error) => {
                    state = None;
                    Poll::Ready(Some(Err(error)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    })
}

/// `work`, unless `stop` says to stop first.
async fn or_stop<T>(
    work: impl Future<Output = PgWireResult<T>>,
    stop: &mut Stop,
) -> PgWireResult<T> {
    if let Some(error) = stop.now() {
        return Err(error);
    }
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        use std::task::Poll;
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        stop.poll_wait(cx).map(Err)
    })
    .await
}

impl Connection {
    /// Handlers over `quiver`, a session of its own; cancel requests find
    /// the connection through `connections`.
    pub fn new(
        quiver: Quiver,
        cancel_keys: Arc<CancelKeys>,
        auth: Option<Arc<Auth>>,
        backends: Arc<crate::activity::Backends>,
    ) -> Self {
        let cursors = Arc::new(crate::cursor::Cursors::default());
        let activity = Arc::new(crate::idle::Activity::default());
        Self {
            auth,
            cancel_keys,
            cancels: Arc::new(watch::channel(0).0),
            cancel_key: Mutex::new(None),
            parser: Arc::new(Parser {
                quiver: quiver.clone(),
                activity: Arc::clone(&activity),
                cursors: Arc::clone(&cursors),
            }),
            cursors,
            quiver,
            activity,
            backends,
            backend: Mutex::new(None),
        }
    }

    /// What stops the statements of a query message that starts now.
    fn cancel_signal(&self) -> CancelSignal {
        self.cancels.subscribe()
    }

    /// Starts `plan` with its parameters bound to `params`, unless
    /// cancelled or timed out first; the stream and what stops it later.
    async fn start(
        &self,
        plan: &LogicalPlan,
        params: Option<ParamValues>,
        cancel: CancelSignal,
        memo: &quiver::PlanMemo,
    ) -> PgWireResult<(datafusion::execution::SendableRecordBatchStream, Stop)> {
        let mut stop = Stop::new(cancel, self.statement_timeout());
        let stream = or_stop(
            async {
                self.quiver
                    .execute_prepared(plan, params, memo)
                    .await
                    .map_err(to_pg)
            },
            &mut stop,
        )
        .await?;
        Ok((stream, stop))
    }

    /// The session's `statement_timeout`.
    fn statement_timeout(&self) -> Option<Duration> {
        self.quiver
            .read_client_setting("statement_timeout", |v| v.and_then(parse_timeout))
    }

    /// The session's `idle_session_timeout`.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.quiver
            .read_client_setting("idle_session_timeout", |v| v.and_then(parse_timeout))
    }

    /// What the idle-session timeout watches.
    pub fn activity(&self) -> Arc<crate::idle::Activity> {
        Arc::clone(&self.activity)
    }

    /// Notes, for `pg_stat_activity`, that `query` starts running.
    fn started(&self, query: &str) {
        if let Some(b) = &*self.backend.lock().unwrap_or_else(|e| e.into_inner()) {
            b.start(query);
        }
    }

    /// Notes that the statement ended, and whether a transaction is open.
    fn finished(&self, status: TransactionStatus) {
        let open = !matches!(status, TransactionStatus::Idle);
        self.activity.set_in_transaction(open);
        if let Some(b) = &*self.backend.lock().unwrap_or_else(|e| e.into_inner()) {
            b.finish(open);
        }
    }

    /// Runs one statement; `format` gives each result column's format. A
    /// cancel request or `statement_timeout` stops it — planning, running
    /// or sending rows — with SQLSTATE 57014.
    async fn run(
        &self,
        stmt: &Statement,
        params: Option<ParamValues>,
        format: &Format,
        cancel: CancelSignal,
    ) -> PgWireResult<Response> {
        match &stmt.kind {
            Kind::Transaction { start: true, tag } => Ok(Response::TransactionStart(Tag::new(tag))),
            Kind::Transaction { start: false, tag } => {
                self.cursors.end_transaction();
                Ok(Response::TransactionEnd(Tag::new(tag)))
            }
            Kind::Declare { name, hold, plan } => {
                let (stream, _) = self.start(plan, params, cancel, &stmt.memo).await?;
                self.cursors
                    .declare(name, crate::cursor::Cursor::new(stream, *hold))?;
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Kind::Fetch {
                name,
                count,
                schema,
            } => {
                let cursor = self.cursors.get(name)?;
                let mut cursor = cursor.lock().await;
                let mut stop = Stop::new(cancel, self.statement_timeout());
                let batch = or_stop(cursor.fetch(*count), &mut stop).await?;
                let fields = Arc::new(fields(schema, |i| format.format_for(i)));
                let rows = encode_batch(&batch, &fields)?;
                let mut response =
                    QueryResponse::new(fields, stream::iter(rows.into_iter().map(Ok)));
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            Kind::CloseCursor { name } => {
                self.cursors.close(name.as_deref())?;
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
            Kind::Nothing { tag } => Ok(Response::Execution(Tag::new(tag))),
            Kind::SetClient { name, value } => {
                let value = if value.eq_ignore_ascii_case("default") {
                    ClientSettings::default()
                        .get(name)
                        .unwrap_or("")
                        .to_string()
                } else {
                    value.clone()
                };
                if name.ends_with("_timeout")
                    && value.trim() != "0"
                    && parse_timeout(&value).is_none()
                {
                    return Err(pg_error(
                        "22023",
                        format!(
                            "invalid value for parameter \"{name}\": \"{value}\" (a duration such as 5000, 5s or 10min)"
                        ),
                    ));
                }
                ClientSettings::set_in(self.quiver.context(), name, &value);
                Ok(Response::Execution(Tag::new("SET")))
            }
            Kind::ShowClient { name } => {
                let value = self.quiver.client_setting(name).ok_or_else(|| {
                    pg_error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                let fields = Arc::new(
                    result_fields(stmt, None)
                        .into_iter()
                        .map(|f| {
                            FieldInfo::new(
                                f.name().to_string(),
                                None,
                                None,
                                Type::TEXT,
                                format.format_for(0),
                            )
                        })
                        .collect::<Vec<_>>(),
                );
                let mut encoder = pgwire::api::results::DataRowEncoder::new(Arc::clone(&fields));
                encoder.encode_field(&Some(value))?;
                let row = encoder.take_row();
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    stream::iter(vec![Ok(row)]),
                )))
            }
            Kind::CopyOut { plan, options } => {
                let (stream, stop) = self.start(plan, params, cancel, &stmt.memo).await?;
                let (columns, data) = crate::copy::copy_data(stream, options);
                Ok(Response::CopyOut(CopyResponse::new(
                    options.wire_format(),
                    columns,
                    until_stopped(data, stop),
                )))
            }
            Kind::Plan(plan) => {
                let command = is_command(plan);
                let (stream, mut stop) = self.start(plan, params, cancel, &stmt.memo).await?;
                if command || stream.schema().fields().is_empty() {
                    let tag = command_tag(&stmt.sql, plan);
                    // A command: run it to the end; COPY and INSERT report a count.
                    let batches: Vec<_> = or_stop(
                        async { stream.try_collect().await.map_err(to_pg) },
                        &mut stop,
                    )
                    .await?;
                    let count = batches
                        .first()
                        .and_then(|b| b.columns().first().cloned())
                        .and_then(|c| datafusion::arrow::compute::cast(&c, &DataType::UInt64).ok())
                        .and_then(|c| {
                            c.as_any()
                                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                                .filter(|a| !a.is_empty())
                                .map(|a| a.value(0))
                        });
                    let mut t = Tag::new(tag);
                    if tag == "INSERT" {
                        t = t.with_oid(0);
                    }
                    if let Some(n) = count.filter(|_| tag == "COPY" || tag == "INSERT") {
                        t = t.with_rows(n as usize);
                    }
                    return Ok(Response::Execution(t));
                }
                // The fields a Describe announced, unless the stream's
                // columns do not match their types.
                let schema = stream.schema();
                let described = stmt.fields_in(format);
                let fields = if described.len() == schema.fields().len()
                    && described
                        .iter()
                        .zip(schema.fields())
                        .all(|(d, f)| *d.datatype() == pg_field_type(f))
                {
                    described
                } else {
                    Arc::new(fields(schema.as_ref(), |i| format.format_for(i)))
                };
                let encode_fields = Arc::clone(&fields);
                let batches =
                    stream.map(move |batch| encode_batch(&batch.map_err(to_pg)?, &encode_fields));
                // Stopped between batches: a batch's rows are encoded
                // already, and sending them is what backpressure waits on.
                let rows = until_stopped(batches, stop)
                    .map_ok(|rows| stream::iter(rows.into_iter().map(Ok)))
                    .try_flatten();
                Ok(Response::Query(QueryResponse::new(fields, rows)))
            }
        }
    }
}

/// The command tag Postgres would send for a statement that returns no rows.
fn command_tag(sql: &str, plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Copy(_) => "COPY",
        LogicalPlan::Dml(d) => match d.op {
            datafusion::logical_expr::WriteOp::Insert(_) => "INSERT",
            datafusion::logical_expr::WriteOp::Delete => "DELETE",
            datafusion::logical_expr::WriteOp::Update => "UPDATE",
            _ => "INSERT",
        },
        _ => {
            let w = words(sql);
            match (w.first().map(String::as_str), w.get(1).map(String::as_str)) {
                (Some("create"), Some("external")) | (Some("create"), Some("table")) => {
                    "CREATE TABLE"
                }
                (Some("create"), Some("or")) if w.get(3).is_some_and(|x| x == "model") => {
                    "CREATE MODEL"
                }
                (Some("create"), Some("view")) | (Some("create"), Some("or")) => "CREATE VIEW",
                (Some("create"), Some("schema")) => "CREATE SCHEMA",
                (Some("create"), Some("database")) => "CREATE DATABASE",
                (Some("create"), Some("function")) => "CREATE FUNCTION",
                (Some("create"), Some("model")) => "CREATE MODEL",
                (Some("drop"), Some("model")) => "DROP MODEL",
                (Some("drop"), Some("table")) => "DROP TABLE",
                (Some("drop"), Some("view")) => "DROP VIEW",
                (Some("drop"), Some("schema")) => "DROP SCHEMA",
                (Some("drop"), Some("function")) => "DROP FUNCTION",
                (Some("set"), _) => "SET",
                (Some("reset"), _) => "RESET",
                (Some("prepare"), _) => "PREPARE",
                (Some("deallocate"), _) => "DEALLOCATE",
                _ => "OK",
            }
        }
    }
}

/// Decodes the bound parameters of `portal` into DataFusion values, of the
/// types the client declared or, failing that, the types inferred.
fn bind(portal: &Portal<Statement>) -> PgWireResult<Option<ParamValues>> {
    let Some(plan) = bound_plan(&portal.statement.statement.kind) else {
        return Ok(None);
    };
    let inferred = portal.statement.statement.parameter_types(plan)?;
    if portal.parameter_len() == 0 && inferred.is_empty() {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let declared = portal
            .statement
            .parameter_types
            .get(i)
            .cloned()
            .flatten()
            .filter(|t| *t != Type::UNKNOWN);
        let wanted = inferred.get(i).cloned().flatten();
        let ty = declared
            .unwrap_or_else(|| announced_type(&portal.statement.statement, wanted.as_ref()));
        let value = decode_param(portal, i, &ty)?;
        let value = match &wanted {
            Some(dt) if !value.is_null() && value.data_type() != *dt => {
                value.cast_to(dt).map_err(to_pg)?
            }
            _ => value,
        };
        values.push(value);
    }
    Ok(Some(ParamValues::from(values)))
}

/// The type a parameter the client did not declare is announced (and
/// read) as: that of the Arrow type the plan wants; text where the plan
/// does not say (DataFusion coerces it); `oid[]` for asyncpg's type lookup.
fn announced_type(stmt: &Statement, wanted: Option<&DataType>) -> Type {
    if crate::asyncpg::is_introspection(&stmt.sql) {
        return Type::OID_ARRAY;
    }
    wanted.map_or(Type::TEXT, pg_type)
}

fn decode_param(portal: &Portal<Statement>, i: usize, ty: &Type) -> PgWireResult<ScalarValue> {
    let bad = |e: PgWireError| {
        pg_error(
            "22023",
            format!(
                "parameter ${} could not be read as {}: {e}",
                i + 1,
                ty.name()
            ),
        )
    };
    // An array (text `{1,2}` or binary) as a list of the Arrow type `$item`.
    macro_rules! list_param {
        ($t:ty, $item:ident) => {
            list_param!($t, $item, ScalarValue::$item)
        };
        ($t:ty, $item:ident, $scalar:expr) => {
            match portal.parameter::<Vec<Option<$t>>>(i, ty).map_err(bad)? {
                Some(values) => {
                    let values: Vec<ScalarValue> = values.into_iter().map($scalar).collect();
                    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::$item))
                }
                None => ScalarValue::try_from(DataType::new_list(DataType::$item, true))
                    .map_err(to_pg)?,
            }
        };
    }
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, ty).map_err(bad)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, ty).map_err(bad)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, ty).map_err(bad)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, ty).map_err(bad)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, ty).map_err(bad)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, ty).map_err(bad)?),
        Type::NUMERIC => ScalarValue::Float64(
            portal
                .parameter::<Decimal>(i, ty)
                .map_err(bad)?
                .and_then(|d| d.to_f64()),
        ),
        Type::BYTEA => ScalarValue::Binary(portal.parameter::<Vec<u8>>(i, ty).map_err(bad)?),
        Type::DATE => ScalarValue::Date32(
            portal
                .parameter::<NaiveDate>(i, ty)
                .map_err(bad)?
                .map(datafusion::arrow::datatypes::Date32Type::from_naive_date),
        ),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<NaiveDateTime>(i, ty)
                .map_err(bad)?
                .map(|t| t.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<DateTime<FixedOffset>>(i, ty)
                .map_err(bad)?
                .map(|t| t.timestamp_micros()),
            Some("UTC".into()),
        ),
        Type::BOOL_ARRAY => list_param!(bool, Boolean),
        Type::INT2_ARRAY => list_param!(i16, Int16),
        Type::INT4_ARRAY => list_param!(i32, Int32),
        Type::INT8_ARRAY => list_param!(i64, Int64),
        Type::FLOAT4_ARRAY => list_param!(f32, Float32),
        Type::FLOAT8_ARRAY => list_param!(f64, Float64),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => list_param!(String, Utf8),
        Type::OID_ARRAY => list_param!(u32, Int32, |oid: Option<u32>| ScalarValue::Int32(
            oid.map(u32::cast_signed)
        )),
        _ => ScalarValue::Utf8(portal.parameter::<String>(i, ty).map_err(bad)?),
    })
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// Runs the statements of a query message one after the other, each
    /// sending its rows before the next starts (as Postgres does), with
    /// progress NOTICEs while it runs when the session asks for them.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let _busy = self.activity.busy();
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        // One cancel request stops every statement of the message.
        let cancel = self.cancel_signal();
        let pieces = quiver::statements::split_statements(&query.query);
        if pieces.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for piece in pieces {
            self.started(&piece.sql);
            let mut notices = Notices::start(&self.quiver);
            let response = with_notices(client, &mut notices, async {
                let (stmt, values) = self.parser.parse_simple(&piece.sql).await?;
                self.run(&stmt, values, &Format::UnifiedText, cancel.clone())
                    .await
            })
            .await?
            .unwrap_or_else(|e| Response::Error(error_info(e)));
            // Later statements of the string are not run, as in Postgres.
            let failed = matches!(response, Response::Error(_));
            respond(client, response, true, &mut notices, &mut status).await?;
            if let Some(done) = notices.finished() {
                client.feed(done).await?;
            }
            if failed {
                break;
            }
        }
        self.finished(status);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    /// The responses of a query message's statements (what `on_query`
    /// sends, gathered; `pgwire` asks for it, Quiver's `on_query` does not
    /// use it).
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
    {
        let cancel = self.cancel_signal();
        let mut out = vec![];
        for piece in quiver::statements::split_statements(query) {
            let result = match self.parser.parse_simple(&piece.sql).await {
                Ok((stmt, values)) => {
                    self.run(&stmt, values, &Format::UnifiedText, cancel.clone())
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(response) => out.push(response),
                Err(e) => {
                    out.push(Response::Error(error_info(e)));
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

/// An error as the client gets it: a user error as it is, anything else
/// as an internal error (XX000).
fn error_info(e: PgWireError) -> Box<ErrorInfo> {
    match e {
        PgWireError::UserError(info) => info,
        e => Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            "XX000".to_string(),
            e.to_string(),
        )),
    }
}

/// `work`, sending progress NOTICEs to `client` whenever they are due
/// until it completes.
async fn with_notices<C, T>(
    client: &mut C,
    notices: &mut Notices,
    work: impl Future<Output = T>,
) -> PgWireResult<T>
where
    C: futures::Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Ok(done),
            () = notices.due() => client.send(notices.notice()).await?,
        }
    }
}

/// The CommandComplete of a statement that returned `rows` rows:
/// `SELECT 5`, `FETCH 3` (what pgwire's `Tag` makes, without `format!`).
fn rows_complete(command: &str, rows: u64) -> pgwire::messages::response::CommandComplete {
    let mut count = itoa::Buffer::new();
    let count = count.format(rows);
    let mut tag = String::with_capacity(command.len() + 1 + count.len());
    tag.push_str(command);
    tag.push(' ');
    tag.push_str(count);
    pgwire::messages::response::CommandComplete::new(tag)
}

/// Sends one statement's response: rows as they are made (with progress
/// NOTICEs when due) and the command tag, a command's tag, or an error;
/// `describe` sends the row description first (the simple query protocol;
/// the extended one describes in answer to Describe). `status` follows the
/// transaction statements.
async fn respond<C>(
    client: &mut C,
    response: Response,
    describe: bool,
    notices: &mut Notices,
    status: &mut TransactionStatus,
) -> PgWireResult<()>
where
    C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    match response {
        Response::Query(rows) => {
            let QueryResponse {
                command_tag,
                row_schema,
                mut data_rows,
                ..
            } = rows;
            if describe {
                let description = RowDescription::new(row_schema.iter().map(Into::into).collect());
                client
                    .feed(PgWireBackendMessage::RowDescription(description))
                    .await?;
            }
            loop {
                let row = tokio::select! {
                    biased;
                    row = data_rows.next() => row,
                    () = notices.due() => {
                        client.send(notices.notice()).await?;
                        continue;
                    }
                };
                let Some(row) = row else { break };
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                notices.rows += 1;
            }
            client
                .feed(PgWireBackendMessage::CommandComplete(rows_complete(
                    &command_tag,
                    notices.rows,
                )))
                .await?;
        }
        Response::EmptyQuery => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        Response::Execution(tag) => send_execution_response(client, tag).await?,
        Response::TransactionStart(tag) => {
            send_execution_response(client, tag).await?;
            *status = status.to_in_transaction_state();
        }
        Response::TransactionEnd(tag) => {
            send_execution_response(client, tag).await?;
            *status = status.to_idle_state();
        }
        Response::Error(e) => {
            client
                .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                .await?;
            *status = status.to_error_state();
        }
        Response::CopyOut(copy) => {
            pgwire::api::copy::send_copy_out_response(client, copy).await?;
        }
        Response::CopyIn(_) | Response::CopyBoth(_) => {
            return Err(pg_error("0A000", "COPY FROM STDIN is not supported"));
        }
    }
    Ok(())
}

/// A Describe's answer (ParameterDescription, then RowDescription or
/// NoData), left in the connection's buffer until the Sync.
async fn feed_description<C, D>(client: &mut C, response: &D) -> PgWireResult<()>
where
    C: futures::Sink<PgWireBackendMessage> + Unpin,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    D: pgwire::api::results::DescribeResponse,
{
    if let Some(types) = response.parameters() {
        client
            .feed(PgWireBackendMessage::ParameterDescription(
                pgwire::messages::data::ParameterDescription::new(
                    types.iter().map(|t| t.oid()).collect(),
                ),
            ))
            .await?;
    }
    feed_fields(client, response.fields()).await
}

/// A RowDescription of `fields`, or NoData when there are none.
async fn feed_fields<C>(client: &mut C, fields: &[FieldInfo]) -> PgWireResult<()>
where
    C: futures::Sink<PgWireBackendMessage> + Unpin,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    let message = if fields.is_empty() {
        PgWireBackendMessage::NoData(pgwire::messages::data::NoData::new())
    } else {
        PgWireBackendMessage::RowDescription(RowDescription::new(
            fields.iter().map(Into::into).collect(),
        ))
    };
    client.feed(message).await?;
    Ok(())
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// As `pgwire`'s own, but the ParseComplete waits in the connection's
    /// buffer for the Sync (or Flush) that ends the client's messages, as
    /// Postgres sends it: one write per round trip, not one per message.
    async fn on_parse<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Parse,
    ) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_string();
        let parser = self.query_parser();
        match pgwire::api::stmt::StoredStatement::parse(client, &message, parser).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .feed(PgWireBackendMessage::ParseComplete(
                pgwire::messages::extendedquery::ParseComplete::new(),
            ))
            .await?;
        Ok(())
    }

    /// As `pgwire`'s own, the BindComplete left for the Sync to send (see
    /// [`Self::on_parse`]).
    async fn on_bind<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Bind,
    ) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(pg_error(
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but prepared statement {statement_name:?} requires 0",
                            message.parameters.len()
                        ),
                    ));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(
                pgwire::messages::extendedquery::BindComplete::new(),
            ))
            .await?;
        Ok(())
    }

    /// As `pgwire`'s own, the description left for the Sync to send (see
    /// [`Self::on_parse`]). A cursor is a portal too, as in Postgres:
    /// psycopg describes the portal named after the cursor it declared to
    /// learn its columns.
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<pgwire::messages::PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<pgwire::messages::PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::results::{
            DescribePortalResponse, DescribeResponse, DescribeStatementResponse,
        };
        use pgwire::messages::extendedquery::{
            TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
        };
        self.activity.touch();
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => {
                    let response = self.do_describe_statement(client, &stmt).await?;
                    feed_description(client, &response).await
                }
                Some(Entry::Empty) => {
                    feed_description(client, &DescribeStatementResponse::no_data()).await
                }
                None => Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => {
                    let fields = portal
                        .statement
                        .statement
                        .fields_in(&portal.result_column_format);
                    feed_fields(client, &fields).await
                }
                Some(Entry::Empty) => {
                    feed_description(client, &DescribePortalResponse::no_data()).await
                }
                None => match self.cursors.schema(name) {
                    Ok(schema) => {
                        let response =
                            DescribePortalResponse::new(fields(&schema, |_| FieldFormat::Text));
                        feed_description(client, &response).await
                    }
                    Err(_) => Err(PgWireError::PortalNotFound(name.to_owned())),
                },
            },
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    /// Streams a portal's rows to the client as they are made when the
    /// client asks for all of them (`max_rows = 0`, what most drivers send).
    /// `pgwire` 0.42 gathers every row of such an Execute before sending the
    /// first, which holds a whole result in memory and makes an endless
    /// query silent; with a row limit (`setFetchSize`, cursors) its own
    /// handling, which gathers at most that many rows, is kept.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<pgwire::messages::PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<pgwire::messages::PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.busy();
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) if message.max_rows <= 0 => portal,
            _ => return self.execute_in_pages(client, message).await,
        };
        let state = portal.state();
        if !matches!(*state.lock().await, PortalExecutionState::Initial) {
            return self.execute_in_pages(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        self.started(&portal.statement.statement.sql);
        let mut notices = Notices::start(&self.quiver);
        let response = with_notices(client, &mut notices, self.portal_response(&portal)).await??;
        *state.lock().await = PortalExecutionState::Finished;
        let ended = matches!(response, Response::TransactionEnd(_));
        respond(client, response, false, &mut notices, &mut status).await?;
        if let Some(done) = notices.finished() {
            client.feed(done).await?;
        }
        if ended {
            client.portal_store().rm_portal(DEFAULT_NAME);
        }
        self.finished(status);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<pgwire::messages::PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<pgwire::messages::PgWireBackendMessage>>::Error>,
    {
        self.portal_response(portal).await
    }
}

impl Connection {
    /// Runs a portal's statement with its bound parameters.
    async fn portal_response(&self, portal: &Portal<Statement>) -> PgWireResult<Response> {
        let params = bind(portal)?;
        let cancel = self.cancel_signal();
        self.run(
            &portal.statement.statement,
            params,
            &portal.result_column_format,
            cancel,
        )
        .await
    }

    /// An Execute with a row limit (`setFetchSize`, a portal resumed):
    /// `pgwire`'s own handling, which sends at most that many rows.
    async fn execute_in_pages<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(Entry::Value(portal)) = client
            .portal_store()
            .get_portal(message.name.as_deref().unwrap_or(DEFAULT_NAME))
        {
            self.started(&portal.statement.statement.sql);
        }
        let done = self._on_execute(client, message).await;
        self.finished(client.transaction_status());
        done
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        match &self.auth {
            Some(auth) => auth.0.on_startup(client, message).await?,
            // Trust (loopback only, see `serve`).
            None => trust(client, message).await?,
        }
        self.activity.touch();
        // Once started, pgwire has sent the client its process id and
        // secret key: cancel requests find this connection by them.
        let mut registered = self.cancel_key.lock().unwrap_or_else(|e| e.into_inner());
        if registered.is_none() && matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            let (pid, secret) = client.pid_and_secret_key();
            let key = (pid, secret.to_bytes().to_vec());
            self.cancel_keys
                .lock()
                .insert(key.clone(), Arc::clone(&self.cancels));
            *registered = Some(key);
            // Settings in the startup message (psql's application_name,
            // a driver's client_encoding) are the session's, as in Postgres.
            let defaults = ClientSettings::default();
            for (name, value) in client.metadata() {
                let name = name.to_ascii_lowercase();
                if defaults.get(&name).is_some() {
                    ClientSettings::set_in(self.quiver.context(), &name, value);
                }
            }
            let meta = |k: &str| client.metadata().get(k).cloned().unwrap_or_default();
            let backend = Arc::new(crate::activity::Backend {
                pid,
                user: meta("user"),
                database: meta("database"),
                client: client.socket_addr(),
                started: std::time::SystemTime::now(),
                session: self.quiver.clone(),
                doing: Mutex::default(),
            });
            self.backends.add(&backend);
            *self.backend.lock().unwrap_or_else(|e| e.into_inner()) = Some(backend);
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let key = self
            .cancel_key
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(key) = key {
            self.cancel_keys.lock().remove(&key);
        }
    }
}

/// The handlers pgwire asks for, all served by one [`Connection`].
#[derive(Debug)]
pub struct Handlers(pub Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.0.cancel_keys)
    }
}
