//! [`Quiver`]: a DataFusion [`SessionContext`] with Quiver's memory pool,
//! spilling, object stores, file-table functions and table factories.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, ParamValues, Result, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::async_udf::AsyncScalarUDF;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use quiver_exec::{InferenceRule, ModelDefaults, ModelHint, NestedAsyncRule, StatementProgress};
use quiver_settings::QuiverSettings;
use quiver_sources::download::UrlDownload;
use quiver_sources::fetch::MediaFetch;
use quiver_sources::late::LateMaterialization;
use quiver_sources::media_write::{AudioFormatFactory, ImagesFormatFactory};

use crate::config::{QuiverConfig, TableDeclaration};
use crate::engine_pool::EnginePool;
use crate::kept_plans::{Hold, Keepable, KeptPlans, Lookup, PlanMemo, Shaping};
use crate::models::{ModelStatement, parse_model_statement, run_model_statement};
use crate::object_stores::QuiverObjectStoreRegistry;
use crate::session_pool::SessionPool;
use crate::shapes::Shape;
use crate::state_cache::StateCache;
use crate::tables::SharedTables;
use quiver_models::ModelRegistry;
use quiver_sources::listing::{FileKind, GlobbingTableFactory, ReadFileFunction, file_table};

/// Builds a [`Quiver`] from a [`QuiverConfig`].
#[derive(Debug, Default)]
pub struct QuiverBuilder {
    config: QuiverConfig,
}

impl QuiverBuilder {
    /// Uses this configuration (default: [`QuiverConfig::default`]).
    pub fn config(mut self, config: QuiverConfig) -> Self {
        self.config = config;
        self
    }

    /// Creates the engine: memory pool, disk manager, object stores,
    /// functions, factories and the config's models. A config that
    /// declares tables (`[tables.*]`) needs [`Self::open`], which makes them.
    pub fn build(self) -> Result<Quiver> {
        if let Some(name) = self.config.tables.keys().next() {
            return Err(DataFusionError::Configuration(format!(
                "the config declares tables ([tables.{name}]): open the engine with QuiverBuilder::open, which makes them"
            )));
        }
        self.build_engine()
    }

    /// Creates the engine as [`Self::build`] does, then the config's tables
    /// (`[tables.*]`), which every session of the engine sees.
    pub async fn open(self) -> Result<Quiver> {
        let declared = self.config.tables.clone();
        let quiver = self.build_engine()?;
        for (name, table) in &declared {
            quiver.share_table(name, table).await?;
        }
        Ok(quiver)
    }

    fn build_engine(self) -> Result<Quiver> {
        let config = self.config;
        let limit = config
            .memory_limit_bytes()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let pool = EnginePool::new(limit);
        let disk_mode = match &config.exec.spill_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    DataFusionError::IoError(e).context(format!(
                        "creating spill directory {} (exec.spill_dir)",
                        dir.display()
                    ))
                })?;
                DiskManagerMode::Directories(vec![dir.clone()])
            }
            None => DiskManagerMode::OsTmpDirectory,
        };
        let registry = QuiverObjectStoreRegistry::new(config.object_store.clone(), &config.data)?;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(disk_mode))
            .with_object_store_registry(Arc::new(registry))
            .build_arc()?;
        let models = Arc::new(ModelRegistry::new());
        for (name, declared) in &config.models {
            let spec = declared.spec(name).map_err(|e| {
                DataFusionError::External(Box::new(e)).context(format!("config: [models.{name}]"))
            })?;
            models.register(spec, true).map_err(|e| {
                DataFusionError::External(Box::new(e)).context(format!("config: [models.{name}]"))
            })?;
        }
        let shared_pool = Arc::clone(&runtime.memory_pool);
        let ctx = new_context(runtime, &config, &models, None)?;
        Ok(Quiver {
            ctx,
            config,
            models,
            pg: crate::pg_compat::PgParser::default(),
            shared_pool,
            states: Arc::default(),
            kept: Arc::default(),
            shared_tables: Arc::default(),
        })
    }
}

/// DataFusion's default for what each sort sets aside to merge its
/// spills (`datafusion.execution.sort_spill_reservation_bytes`).
const SORT_MERGE_RESERVATION: usize = 10 * 1024 * 1024;

/// What each sort sets aside to merge its spills under a memory limit of
/// `limit` bytes and `partitions` partitions: DataFusion's 10 MB, or an
/// eighth of the limit shared by the partitions where that is less (at
/// least 64 KB). Every partition's sort sets it aside before it sorts a
/// row: at 10 MB each, 16 partitions under 128 MB (or 1 under 10 MB)
/// could not sort two rows.
fn sort_merge_reservation(limit: usize, partitions: usize) -> usize {
    (limit / (8 * partitions.max(1))).clamp(64 * 1024, SORT_MERGE_RESERVATION)
}

/// A session over `runtime` (shared memory pool, disk manager and object
/// stores, and at most `session_limit` bytes of the pool) with every Quiver function, table function and factory
/// registered, and its own settings and temporary tables.
fn new_context(
    runtime: Arc<RuntimeEnv>,
    config: &QuiverConfig,
    models: &Arc<ModelRegistry>,
    session_limit: Option<usize>,
) -> Result<SessionContext> {
    let progress = Arc::new(StatementProgress::default());
    let mut session_config = SessionConfig::new()
        .with_target_partitions(config.target_partitions())
        .with_batch_size(config.exec.batch_size)
        .with_information_schema(true)
        // Files read and rows through model calls, for progress displays.
        .with_extension(Arc::clone(&progress))
        // Keep the Arrow schema stored in Parquet files, so that image
        // and embedding columns written by COPY read back tagged.
        .set_bool("datafusion.execution.parquet.skip_metadata", false)
        // Postgres client settings (`SET application_name`, timeouts).
        .with_option_extension(crate::pg_compat::ClientSettings::default())
        .with_option_extension(QuiverSettings {
            decode_limits: quiver_media::DecodeLimits {
                max_pixels: config.media.max_image_pixels,
                max_alloc: config.media.max_image_alloc,
            },
            audio_limits: quiver_media::AudioLimits {
                max_alloc: config.media.max_audio_alloc,
            },
            video_limits: quiver_media::video::VideoLimits {
                max_pixels: config.media.max_video_pixels,
                ..Default::default()
            },
            statement_progress: quiver_settings::ProgressHandle(Some(progress)),
            ..QuiverSettings::default()
        });
    // The engine's limit, or a connection's own where it is less.
    let limit = match (config.memory_limit_bytes().ok(), session_limit) {
        (Some(engine), Some(session)) => Some(engine.min(session)),
        (engine, session) => engine.or(session),
    };
    if let Some(limit) = limit {
        let reserved = sort_merge_reservation(limit, config.target_partitions());
        session_config = session_config.with_sort_spill_reservation_bytes(reserved);
    }
    // Joins carry paths; media bytes are fetched above them.
    let media_fetch = Arc::new(
        AsyncScalarUDF::new(Arc::new(MediaFetch::new(Arc::clone(&runtime)))).into_scalar_udf(),
    );
    let mut state = SessionStateBuilder::new()
        .with_config(session_config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(LateMaterialization::new(Arc::clone(&media_fetch))))
        // Asynchronous calls nested in others run innermost first.
        .with_physical_optimizer_rule(Arc::new(NestedAsyncRule))
        // Model calls run in InferenceExec, batched across partitions.
        .with_physical_optimizer_rule(Arc::new(InferenceRule::for_models(model_defaults(models))))
        .build();
    for format in ["PARQUET", "CSV", "JSON", "NDJSON"] {
        state.table_factories_mut().insert(
            format.to_string(),
            Arc::new(GlobbingTableFactory::default()),
        );
    }
    state.table_factories_mut().insert(
        "IMAGES".to_string(),
        Arc::new(quiver_sources::images::images_table_factory()),
    );
    state.table_factories_mut().insert(
        "AUDIO".to_string(),
        Arc::new(quiver_sources::audio::audio_table_factory()),
    );
    state.table_factories_mut().insert(
        "VIDEO".to_string(),
        Arc::new(quiver_sources::video::video_table_factory()),
    );
    // ORDER BY, GROUP BY, aggregates, window functions and join
    // conditions may call model (async) functions.
    state.add_analyzer_rule(Arc::new(crate::async_calls::AsyncCallsBelow));
    // COPY … STORED AS IMAGES / AUDIO writes one file per row.
    state.register_file_format(Arc::new(ImagesFormatFactory), true)?;
    state.register_file_format(Arc::new(AudioFormatFactory), true)?;
    let ctx = SessionContext::new_with_state(state);
    // pg_catalog and the Postgres functions clients call.
    let pg_functions = crate::pg_compat::register(&ctx)?;
    let before = function_names(&ctx);
    for kind in [FileKind::Parquet, FileKind::Csv, FileKind::Json] {
        ctx.register_udtf(kind.function_name(), Arc::new(ReadFileFunction::new(kind)));
    }
    ctx.register_udtf(
        "read_images",
        Arc::new(quiver_sources::images::read_images_function()),
    );
    ctx.register_udtf(
        "read_audio",
        Arc::new(quiver_sources::audio::read_audio_function()),
    );
    ctx.register_udtf(
        "read_video",
        Arc::new(quiver_sources::video::read_video_function()),
    );
    ctx.register_udtf(
        "video_frames",
        Arc::new(quiver_sources::frames::VideoFramesFunction),
    );
    quiver_udf_image::register_all(&ctx);
    quiver_udf_audio::register_all(&ctx);
    quiver_udf_models::register_all(&ctx, models);
    ctx.register_udf(
        AsyncScalarUDF::new(Arc::new(UrlDownload::new(ctx.runtime_env()))).into_scalar_udf(),
    );
    ctx.register_udf(Arc::unwrap_or_clone(media_fetch));
    // Everything registered since pg_catalog is Quiver's: listed in pg_proc.
    let (scalar, table) = function_names(&ctx);
    pg_functions.set(&scalar - &before.0, &table - &before.1);
    Ok(ctx)
}

/// The names of the scalar and table functions `ctx` has.
fn function_names(ctx: &SessionContext) -> (BTreeSet<String>, BTreeSet<String>) {
    let state = ctx.state_ref();
    let state = state.read();
    (
        state.scalar_functions().keys().cloned().collect(),
        state.table_functions().keys().cloned().collect(),
    )
}

/// What a model call's model was registered with (`batch_size`,
/// `replicas`): the model its constant first argument names.
fn model_defaults(models: &Arc<ModelRegistry>) -> ModelHint {
    let models = models.clone();
    Arc::new(move |call: &ScalarFunctionExpr| {
        let name = call.args().first()?.downcast_ref::<Literal>()?.value();
        let spec = models.spec(&quiver_settings::args::scalar_text(name)?)?;
        Some(ModelDefaults {
            batch_size: spec.batch_size,
            replicas: spec.replicas,
        })
    })
}

/// Whether each table still has the address it had (a name may since
/// have been given to another table).
async fn same_tables(state: &SessionState, tables: &[(TableReference, usize)]) -> bool {
    for (name, address) in tables {
        let Ok(schema) = state.schema_for_ref(name.clone()) else {
            return false;
        };
        match schema.table(name.table()).await {
            Ok(Some(table)) if crate::kept_plans::address(&table) == *address => {}
            _ => return false,
        }
    }
    true
}

/// `plan` with its parameters bound to `params`.
fn bind(plan: LogicalPlan, params: Option<ParamValues>) -> Result<LogicalPlan> {
    match params {
        Some(params) => plan.with_param_values(params),
        None => Ok(plan),
    }
}

/// Whether running `plan` may change the session's state (settings,
/// functions, prepared statements), so that a kept copy of it is stale.
fn changes_session(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_))
}

/// The Quiver engine: plan and run SQL over tables, files and object stores.
///
/// ```no_run
/// # async fn demo() -> datafusion::common::Result<()> {
/// let quiver = quiver::Quiver::builder().build()?;
/// let batches = quiver
///     .collect("SELECT count(*) FROM read_parquet('data/orders/')")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Quiver {
    pub(crate) ctx: SessionContext,
    config: QuiverConfig,
    /// Shared by every session of the engine: a model registered (and
    /// loaded) once serves all of them.
    models: Arc<ModelRegistry>,
    /// Plans statements that read Postgres' catalog.
    pg: crate::pg_compat::PgParser,
    /// The engine's memory pool, which every session's pool draws from.
    shared_pool: Arc<dyn MemoryPool>,
    /// The session's state as its queries are planned, kept between them.
    pub(crate) states: Arc<StateCache>,
    /// The physical plans the session keeps (see `kept_plans`).
    pub(crate) kept: Arc<KeptPlans>,
    /// The config's tables, in every session of the engine.
    shared_tables: Arc<SharedTables>,
}

impl std::fmt::Debug for Quiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quiver")
            .field("session_id", &self.ctx.session_id())
            .field("config", &self.config)
            .finish()
    }
}

impl Quiver {
    /// A builder with the default configuration.
    pub fn builder() -> QuiverBuilder {
        QuiverBuilder::default()
    }

    /// The underlying DataFusion context, for anything this API lacks
    /// (what is done through it is seen by the session's next statement).
    pub fn context(&self) -> &SessionContext {
        self.states.forget();
        &self.ctx
    }

    /// What this session's running statement has done (files read, rows
    /// through model calls; reset it when a statement starts): what a
    /// progress display shows.
    pub fn progress(&self) -> Option<Arc<StatementProgress>> {
        self.ctx
            .state_ref()
            .read()
            .config()
            .get_extension::<StatementProgress>()
    }

    /// Starts counting a statement: the session's progress counters,
    /// reset, and how often to report them (`Some` when `quiver.progress`
    /// is on: every `quiver.progress_interval_ms`, at least 1 ms); one
    /// read of the session's state (a server does this per statement).
    pub fn start_progress(&self) -> (Option<Arc<StatementProgress>>, Option<Duration>) {
        let state = self.ctx.state_ref();
        let state = state.read();
        let config = state.config();
        let progress = config.get_extension::<StatementProgress>();
        if let Some(p) = &progress {
            p.reset();
        }
        let every = config
            .options()
            .extensions
            .get::<QuiverSettings>()
            .filter(|s| s.progress)
            .map(|s| Duration::from_millis(s.progress_interval_ms.max(1)));
        (progress, every)
    }

    /// This session's `quiver.*` settings, as `SET` left them.
    pub fn settings(&self) -> QuiverSettings {
        QuiverSettings::from_options(self.ctx.state_ref().read().config().options())
    }

    /// This session's Postgres client setting `name` (lower case), as
    /// `SET` left it; `None` for a name that is not one.
    pub fn client_setting(&self, name: &str) -> Option<String> {
        self.read_client_setting(name, |v| v.map(str::to_string))
    }

    /// `read` of this session's client setting `name` (lower case), as
    /// [`Quiver::client_setting`] gives it, without copying it.
    pub fn read_client_setting<R>(&self, name: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
        crate::pg_compat::ClientSettings::read_in(&self.ctx, name, read)
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &QuiverConfig {
        &self.config
    }

    /// A new session on the same engine: it shares the memory pool, disk
    /// manager, object stores and the config's tables, and has its own
    /// settings, tables and prepared statements (one per server connection).
    pub fn new_session(&self) -> Result<Quiver> {
        self.new_session_with_memory_limit(None)
    }

    /// A new session, as [`Quiver::new_session`], whose queries may hold
    /// at most `limit` bytes of the shared memory pool at once (more is
    /// refused with "Resources exhausted" for this session only); what it
    /// holds is counted either way ([`Quiver::memory_held`]).
    pub fn new_session_with_memory_limit(&self, limit: Option<usize>) -> Result<Quiver> {
        let pool = SessionPool::new(Arc::clone(&self.shared_pool), limit);
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.ctx.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        let ctx = new_context(runtime, &self.config, &self.models, limit)?;
        self.shared_tables.register(&ctx)?;
        Ok(Quiver {
            ctx,
            config: self.config.clone(),
            models: self.models.clone(),
            pg: self.pg.clone(),
            shared_pool: Arc::clone(&self.shared_pool),
            states: Arc::default(),
            kept: Arc::default(),
            shared_tables: Arc::clone(&self.shared_tables),
        })
    }

    /// Makes table `name` as a config's `[tables.name]` declares it, and
    /// shares it: this session and every session made afterwards
    /// ([`Self::new_session`], each server connection) see the same table
    /// (an `in_memory` one is read once, its memory reserved in the pool
    /// for the engine's life). It replaces a table of that name in this
    /// session and among the shared ones.
    pub async fn share_table(&self, name: &str, table: &TableDeclaration) -> Result<()> {
        let scratch = self.new_session()?;
        let provider = self
            .shared_tables
            .create(&scratch.ctx, &self.shared_pool, name, table)
            .await?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, provider)?;
        Ok(())
    }

    /// Bytes of the memory pool this session's queries hold now (for a
    /// session of [`Quiver::new_session`]; the engine's own session
    /// reports the whole pool).
    pub fn memory_held(&self) -> usize {
        self.ctx.runtime_env().memory_pool.reserved()
    }

    /// Runs a model statement; `CREATE MODEL` may only read model
    /// directories under `data.roots` when those are set.
    fn run_model_statement(&self, stmt: ModelStatement) -> Result<LogicalPlan> {
        if let ModelStatement::Create { spec, .. } = &stmt {
            crate::object_stores::check_local_path(&self.config.data.roots, &spec.path)?;
        }
        run_model_statement(&self.ctx, &self.models, stmt)
    }

    /// The engine's models (`CREATE MODEL`, the config's `[models.*]`).
    pub fn models(&self) -> &Arc<ModelRegistry> {
        &self.models
    }

    /// Plans one SQL statement. DDL (`CREATE`, `DROP`, `SET`, and the model
    /// statements) takes effect here; queries run when the frame is
    /// executed.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let plan = self.create_logical_plan(sql).await?;
        self.execute_logical_plan(plan).await
    }

    /// Runs what a plan that is not a query does (DDL, `SET`, `PREPARE`,
    /// …), as `SessionContext::execute_logical_plan`; a query's frame.
    pub async fn execute_logical_plan(&self, plan: LogicalPlan) -> Result<DataFrame> {
        let changes_session = changes_session(&plan);
        let df = self.ctx.execute_logical_plan(plan).await;
        if changes_session {
            self.states.forget();
        }
        df
    }

    /// Plans (physically) and runs `plan`, streaming its result; a plan
    /// that is not a query first takes effect as
    /// [`Self::execute_logical_plan`] does. Queries plan on the session's
    /// kept state (see `state_cache`), without copying it.
    pub async fn execute_plan(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        self.execute_bound(plan, None).await
    }

    /// Runs `plan` with its parameters (`$1`, …) bound to `params`, as
    /// [`Self::execute_plan`] does. A statement the session ran before
    /// runs a fresh copy of the physical plan it kept then, when it may
    /// (see `kept_plans`): a prepared statement's generic plan, with
    /// `params` put in its filters and projections.
    pub async fn execute_bound(
        &self,
        plan: LogicalPlan,
        params: Option<ParamValues>,
    ) -> Result<SendableRecordBatchStream> {
        self.execute_statement(&plan, params, None).await
    }

    /// As [`Self::execute_bound`], for a statement run again and again (a
    /// prepared statement): `memo`, which lives as long as the statement,
    /// keeps between its executions what the engine learns of it, so that
    /// an execution finds the statement's kept plan without looking it up.
    pub async fn execute_prepared(
        &self,
        plan: &LogicalPlan,
        params: Option<ParamValues>,
        memo: &PlanMemo,
    ) -> Result<SendableRecordBatchStream> {
        self.execute_statement(plan, params, Some(memo)).await
    }

    async fn execute_statement(
        &self,
        plan: &LogicalPlan,
        params: Option<ParamValues>,
        memo: Option<&PlanMemo>,
    ) -> Result<SendableRecordBatchStream> {
        if matches!(plan, LogicalPlan::Dml(_)) {
            // The kept plans would hold the batches it replaces.
            self.kept.clear();
        }
        if changes_session(plan) || matches!(plan, LogicalPlan::Copy(_)) {
            let df = self
                .execute_logical_plan(bind(plan.clone(), params)?)
                .await?;
            return self.execute_frame(df).await;
        }
        // Constants in the filters of a statement that may be kept become
        // parameters (see `kept_plans`).
        let bound = params.is_some();
        let keepable = match memo {
            Some(memo) => memo.keepable(plan, bound),
            None => crate::kept_plans::keepable(plan, bound).map(Arc::new),
        };
        let (generic, params, keepable, memo) = match (params, keepable) {
            (None, Some(keepable)) => {
                let generic = match memo {
                    Some(memo) if memo.plain() => None,
                    _ => crate::kept_plans::with_constants_as_parameters(plan),
                };
                match generic {
                    Some((generic, values)) => {
                        let keepable = crate::kept_plans::keepable(&generic, true).map(Arc::new);
                        // The memo is the statement's, not this plan's.
                        (
                            Some(generic),
                            Some(ParamValues::from(values)),
                            keepable,
                            None,
                        )
                    }
                    None => {
                        if let Some(memo) = memo {
                            memo.note_plain();
                        }
                        (None, None, Some(keepable), memo)
                    }
                }
            }
            (params, keepable) => (None, params, keepable, memo),
        };
        let plan = generic.as_ref().unwrap_or(plan);
        let mut kept = self.states.take_unstarted(&self.ctx);
        let task = Arc::clone(&kept.task);
        let physical = self
            .physical_plan(
                &mut kept.state,
                kept.generation,
                plan,
                params,
                keepable,
                memo,
            )
            .await;
        self.states.put(kept);
        let (physical, hold) = physical?;
        let stream = datafusion::physical_plan::execute_stream(physical, task)?;
        Ok(match hold {
            // The plan's parameter slots are this stream's until it ends.
            Some(hold) => Box::pin(RecordBatchStreamAdapter::new(
                stream.schema(),
                stream.inspect(move |_| {
                    let _ = &hold;
                }),
            )),
            None => stream,
        })
    }

    /// The physical plan of `plan` with `params` bound: a fresh copy of the
    /// one kept, else made now (and kept when it may be); `memo` tells
    /// where the plan is kept, and learns it.
    async fn physical_plan(
        &self,
        state: &mut SessionState,
        generation: u64,
        plan: &LogicalPlan,
        params: Option<ParamValues>,
        keepable: Option<Arc<Keepable>>,
        memo: Option<&PlanMemo>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Option<Hold>)> {
        if let Some(statement) = keepable
            && let Some(versions) = statement.versions()
        {
            let entry = match memo.and_then(PlanMemo::entry) {
                Some(entry) => Some(entry),
                None => {
                    let entry = self.kept.find(plan);
                    if let (Some(memo), Some(entry)) = (memo, &entry) {
                        memo.remember(entry);
                    }
                    entry
                }
            };
            match KeptPlans::ready(entry.as_deref(), generation, &versions, params.as_ref())? {
                Lookup::Ready(physical, hold) => return Ok((physical, hold)),
                Lookup::PlanBound => {}
                Lookup::Missing => {
                    // Planning: `now()` is the statement's start.
                    state.mark_start_execution();
                    let physical = match statement.generic(plan) {
                        Some((generic, slots)) => state
                            .create_physical_plan(&generic)
                            .await
                            .map(|physical| (physical, slots)),
                        None => Err(DataFusionError::Plan("a parameter has no type".into())),
                    };
                    let remember = |entry: Option<Arc<_>>| {
                        if let (Some(memo), Some(entry)) = (memo, entry) {
                            memo.remember(&entry);
                        }
                    };
                    match physical {
                        Ok((physical, slots)) => {
                            let (copy, entry) = self.kept.keep(
                                plan,
                                &statement,
                                generation,
                                versions,
                                &physical,
                                slots,
                                params.as_ref(),
                            );
                            remember(entry);
                            if let Some(copy) = copy {
                                return Ok((copy, None));
                            }
                            // Without parameters the generic plan is the plan.
                            if !statement.has_parameters {
                                return Ok((physical, None));
                            }
                        }
                        // Without parameters the generic plan is the plan.
                        Err(e) if !statement.has_parameters => return Err(e),
                        Err(_) => remember(Some(self.kept.refuse(plan, generation, versions))),
                    }
                }
            }
        }
        state.mark_start_execution();
        Ok((
            state
                .create_physical_plan(&bind(plan.clone(), params)?)
                .await?,
            None,
        ))
    }

    /// Plans a statement that reads Postgres' catalog on `state`: after the
    /// Postgres rewrites, else as written; when both fail, the rewritten
    /// statement's error is the one reported.
    async fn plan_catalog_query(&self, state: &SessionState, sql: &str) -> Result<LogicalPlan> {
        let sql = &crate::pg_compat::psql_rewrites(sql);
        match self.pg.plan(state, sql).await {
            Some(Ok(plan)) => Ok(plan),
            Some(Err(rewritten)) => state.create_logical_plan(sql).await.map_err(|_| rewritten),
            None => state.create_logical_plan(sql).await,
        }
    }

    /// Plans one SQL statement without running it, as
    /// `SessionState::create_logical_plan` does, model statements included
    /// (those take effect here). Planned on the session's kept state.
    pub async fn create_logical_plan(&self, sql: &str) -> Result<LogicalPlan> {
        if let Some(stmt) = parse_model_statement(sql)? {
            return self.run_model_statement(stmt);
        }
        let kept = self.states.take(&self.ctx);
        // A constant statement (`SELECT 1`) is planned once per session
        // state (see `kept_plans`).
        let plan = match self.kept.statement(sql, kept.generation) {
            Some(plan) => Ok(plan),
            None => self.plan_on(&kept.state, sql).await.inspect(|plan| {
                self.kept.remember_statement(sql, kept.generation, plan);
            }),
        };
        self.states.put(kept);
        plan
    }

    /// Plans one statement of a simple query (no parameters of its own) as
    /// [`Self::create_logical_plan`] does; a statement that differs from
    /// one the session planned before only in the constants its filters
    /// compare with (`WHERE id = 42`) is neither parsed nor planned: the
    /// plan comes back with parameters, and their values from the
    /// statement's constants (see `shapes`). Run it with
    /// [`Self::execute_bound`].
    pub async fn plan_statement(&self, sql: &str) -> Result<(LogicalPlan, Option<ParamValues>)> {
        if let Some(stmt) = parse_model_statement(sql)? {
            return Ok((self.run_model_statement(stmt)?, None));
        }
        let kept = self.states.take(&self.ctx);
        let planned = self
            .plan_statement_on(&kept.state, kept.generation, sql)
            .await;
        self.states.put(kept);
        planned
    }

    async fn plan_statement_on(
        &self,
        state: &SessionState,
        generation: u64,
        sql: &str,
    ) -> Result<(LogicalPlan, Option<ParamValues>)> {
        if let Some(plan) = self.kept.statement(sql, generation) {
            return Ok((plan, None));
        }
        let shape = (!sql.contains("=>") && !crate::pg_compat::reads_catalog(sql))
            .then(|| Shape::of(sql, state.config().options().sql_parser.dialect.as_ref()))
            .flatten();
        let shaping = match &shape {
            Some(shape) => self.kept.shaped(shape, generation),
            None => Shaping::AsWritten,
        };
        let learn = matches!(shaping, Shaping::Unknown);
        if let Shaping::Plan(shaped) = shaping {
            let (plan, values, tables) = *shaped;
            if same_tables(state, &tables).await {
                return Ok((plan, Some(ParamValues::from(values))));
            }
        }
        let plan = self.plan_on(state, sql).await?;
        self.kept.remember_statement(sql, generation, &plan);
        let Some(shape) = shape.filter(|_| learn) else {
            return Ok((plan, None));
        };
        if crate::kept_plans::keepable(&plan, false).is_none() {
            return Ok((plan, None));
        }
        let Some((generic, values)) = crate::kept_plans::with_constants_as_parameters(&plan) else {
            return Ok((plan, None));
        };
        // Which literal gives which parameter, proved by planning the
        // statement with those literals changed.
        let mut proved = None;
        if let Some(mapping) = shape.mapping(&values)
            && let Some((changed_sql, changed_values)) = shape.changed(&mapping)
            && let Ok(changed) = self.plan_on(state, &changed_sql).await
            && let Some((changed_generic, got)) =
                crate::kept_plans::with_constants_as_parameters(&changed)
            && changed_generic == generic
            && got == changed_values
        {
            proved = Some(mapping);
        }
        self.kept
            .remember_shape(&shape, generation, proved, &generic);
        Ok((generic, Some(ParamValues::from(values))))
    }

    /// Plans `sql` on `state`: table functions may take named arguments
    /// (`video_frames('v.mp4', fps => 1)`); statements that read the
    /// catalog go through the Postgres rewrites.
    async fn plan_on(&self, state: &SessionState, sql: &str) -> Result<LogicalPlan> {
        if sql.contains("=>") {
            let dialect = state.config().options().sql_parser.dialect;
            let mut statement = state.sql_to_statement(sql, &dialect)?;
            crate::named_args::rewrite(&mut statement);
            return state.statement_to_plan(statement).await;
        }
        if crate::pg_compat::reads_catalog(sql) {
            return self.plan_catalog_query(state, sql).await;
        }
        state.create_logical_plan(sql).await
    }

    /// Plans and runs one statement, streaming its result. A `COPY … TO`
    /// that fails removes whatever it had written.
    pub async fn execute_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let plan = self.create_logical_plan(sql).await?;
        self.execute_plan(plan).await
    }

    /// Runs a planned frame as [`Self::execute_stream`] does.
    pub async fn execute_frame(&self, df: DataFrame) -> Result<SendableRecordBatchStream> {
        let LogicalPlan::Copy(copy) = df.logical_plan() else {
            return df.execute_stream().await;
        };
        let guard = CopyGuard::new(&self.ctx, &copy.output_url).await?;
        let stream = match df.execute_stream().await {
            Ok(s) => s,
            Err(e) => {
                guard.cleanup().await;
                return Err(e);
            }
        };
        let schema = stream.schema();
        let guarded = futures::stream::unfold(
            (stream, Some(guard)),
            |(mut stream, mut guard)| async move {
                let item = stream.next().await?;
                if item.is_err()
                    && let Some(g) = guard.take()
                {
                    g.cleanup().await;
                }
                Some((item, (stream, guard)))
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, guarded)))
    }

    /// Plans and runs one statement and collects its result.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.execute_stream(sql).await?.try_collect().await
    }

    /// Registers a table over Parquet files at `location` (a path, prefix or
    /// glob on any supported object store).
    pub async fn register_parquet(&self, name: &str, location: &str) -> Result<()> {
        self.register_files(name, "parquet", location).await
    }

    /// Registers a table over CSV files (with a header row) at `location`.
    pub async fn register_csv(&self, name: &str, location: &str) -> Result<()> {
        self.register_files(name, "csv", location).await
    }

    /// Registers a table over newline-delimited JSON files at `location`.
    pub async fn register_json(&self, name: &str, location: &str) -> Result<()> {
        self.register_files(name, "json", location).await
    }

    async fn register_files(&self, name: &str, format: &str, location: &str) -> Result<()> {
        let state = self.ctx.state();
        let mut options = std::collections::HashMap::new();
        if format == "csv" {
            options.insert("format.has_header".to_string(), "true".to_string());
        }
        let table = file_table(&state, format, &[location.to_string()], &options, None).await?;
        self.register_table(name, table)
    }

    /// Registers any DataFusion table provider under `name`.
    pub fn register_table(&self, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
        self.ctx.register_table(name, table).map(|_| ())
    }

    /// Registers an in-memory batch as a table.
    pub fn register_batch(&self, name: &str, batch: RecordBatch) -> Result<()> {
        self.ctx.register_batch(name, batch).map(|_| ())
    }

    /// Names of the tables in the default schema, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("public"))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Remembers what existed at a `COPY` target so that a failed copy can
/// delete exactly what it wrote.
struct CopyGuard {
    store: Arc<dyn ObjectStore>,
    target: Path,
    before: HashSet<Path>,
    local: Option<std::path::PathBuf>,
    local_existed: bool,
    /// Directories above a local target that the copy will create.
    created_dirs: Vec<std::path::PathBuf>,
}

impl CopyGuard {
    async fn new(ctx: &SessionContext, output_url: &str) -> Result<Self> {
        let url = ListingTableUrl::parse(output_url)?;
        let store = ctx.runtime_env().object_store(&url)?;
        let target = url.prefix().clone();
        let before = Self::existing(store.as_ref(), &target).await;
        let local = (url.scheme() == "file")
            .then(|| url.get_url().to_file_path().ok())
            .flatten();
        let local_existed = local.as_ref().is_some_and(|p| p.exists());
        let created_dirs = local
            .as_ref()
            .map(|p| {
                p.ancestors()
                    .skip(1)
                    .take_while(|a| !a.exists())
                    .map(|a| a.to_path_buf())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            store,
            target,
            before,
            local,
            local_existed,
            created_dirs,
        })
    }

    /// The target object itself and everything below it.
    async fn existing(store: &dyn ObjectStore, target: &Path) -> HashSet<Path> {
        use object_store::ObjectStoreExt;
        let mut found: HashSet<Path> = store
            .list(Some(target))
            .filter_map(|m| async move { m.ok().map(|m| m.location) })
            .collect()
            .await;
        if store.head(target).await.is_ok() {
            found.insert(target.clone());
        }
        found
    }

    /// Deletes every object the copy created; best effort, never fails.
    async fn cleanup(self) {
        use object_store::ObjectStoreExt;
        let now = Self::existing(self.store.as_ref(), &self.target).await;
        for path in now.difference(&self.before) {
            let _ = self.store.delete(path).await;
        }
        if let Some(local) = &self.local
            && !self.local_existed
        {
            // Staging files of an unfinished upload and empty directories
            // the copy created.
            if local.is_dir() {
                let _ = std::fs::remove_dir_all(local);
            } else if let (Some(dir), Some(name)) = (local.parent(), local.file_name()) {
                let _ = std::fs::remove_file(local);
                let stem = format!("{}#", name.to_string_lossy());
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for e in entries.flatten() {
                        if e.file_name().to_string_lossy().starts_with(&stem) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
        // Deepest first; remove_dir only succeeds on empty directories.
        for dir in &self.created_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
