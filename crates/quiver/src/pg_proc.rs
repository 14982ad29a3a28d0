//! Quiver's own functions in `pg_catalog.pg_proc`, so that psql's `\df`
//! (and any client that lists functions from the catalog) shows them.
//!
//! `datafusion-pg-catalog` serves `pg_proc` from a static export of
//! Postgres' built-ins, all in the `pg_catalog` namespace (OID 11), and
//! gives every other schema an OID when `pg_namespace` is scanned, per
//! session. The `pg_catalog` schema is therefore wrapped: its `pg_proc` is
//! the static rows followed by one row per Quiver function (scalar
//! functions and table functions such as `read_images`), in the session's
//! default schema (`public`), whose OID is read from `pg_namespace` at
//! scan time. `pg_get_function_arguments(oid)` and
//! `pg_get_function_result(oid)` answer for those rows (the documented
//! argument names; `SETOF record` for table functions) and NULL for the
//! others, as before.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarUDF, Signature, TypeSignature, Volatility, create_udf,
};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, collect};

/// The first OID given to a Quiver function: far above Postgres' own
/// (below 16384) and the OIDs `datafusion-pg-catalog` hands out to
/// schemas and tables (counting up from 16384).
const FIRST_OID: i32 = 1_000_000_000;

/// `record`, the result type of a set-returning function.
const RECORD_OID: i32 = 2249;
/// `any`, the pseudo-type of an argument or result of any type.
const ANY_OID: i32 = 2276;

/// Which functions are Quiver's, and what `\df` says of each once
/// `pg_proc` has been read.
#[derive(Debug, Default)]
pub struct QuiverFunctions {
    /// Scalar functions, then table functions, by name.
    names: RwLock<(BTreeSet<String>, BTreeSet<String>)>,
    /// Arguments and result by OID, for `pg_get_function_*`.
    described: RwLock<HashMap<i32, (String, String)>>,
}

impl QuiverFunctions {
    /// Declares the session's scalar and table functions that are
    /// Quiver's.
    pub fn set(&self, scalar: BTreeSet<String>, table: BTreeSet<String>) {
        if let Ok(mut names) = self.names.write() {
            *names = (scalar, table);
        }
    }

    fn describe(&self, oid: i32, which: usize) -> Option<String> {
        let described = self.described.read().ok()?;
        described
            .get(&oid)
            .map(|(args, result)| if which == 0 { args } else { result })
            .cloned()
    }
}

/// One `pg_proc` row of Quiver's.
struct Proc {
    oid: i32,
    name: String,
    args: String,
    result: String,
    nargs: i16,
    set: bool,
    volatility: &'static str,
}

/// The rows for the functions `state` has of `functions`.
fn procs(functions: &QuiverFunctions, state: &SessionState) -> Vec<Proc> {
    let Ok(names) = functions.names.read() else {
        return vec![];
    };
    let (scalar, table) = &*names;
    let mut out = vec![];
    for (oid, name) in (FIRST_OID..).zip(scalar.iter().chain(table.iter())) {
        if let Some(udf) = state.scalar_functions().get(name) {
            let args = argument_names(udf);
            out.push(Proc {
                oid,
                name: name.clone(),
                nargs: i16::try_from(args.len()).unwrap_or(i16::MAX),
                args: args.join(", "),
                result: "any".into(),
                set: false,
                volatility: match udf.signature().volatility {
                    Volatility::Immutable => "i",
                    Volatility::Stable => "s",
                    Volatility::Volatile => "v",
                },
            });
        } else if state.table_functions().contains_key(name) {
            out.push(Proc {
                oid,
                name: name.clone(),
                nargs: 0,
                args: "VARIADIC \"any\"".into(),
                result: "SETOF record".into(),
                set: true,
                volatility: "v",
            });
        }
    }
    out
}

/// The names of a function's arguments as its documentation lists them,
/// else as many `any` as its signature takes when that is fixed.
fn argument_names(udf: &ScalarUDF) -> Vec<String> {
    if let Some(args) = udf.documentation().and_then(|d| d.arguments.as_ref())
        && !args.is_empty()
    {
        return args.iter().map(|(name, _)| name.clone()).collect();
    }
    let fixed = |s: &Signature| match &s.type_signature {
        TypeSignature::Exact(types) => Some(types.len()),
        TypeSignature::Any(n) | TypeSignature::Uniform(n, _) => Some(*n),
        TypeSignature::Nullary => Some(0),
        _ => None,
    };
    match fixed(udf.signature()) {
        Some(n) => vec!["\"any\"".to_string(); n],
        None => vec!["VARIADIC \"any\"".to_string()],
    }
}

/// The `pg_catalog` schema, with Quiver's functions added to `pg_proc`.
#[derive(Debug)]
struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    functions: Arc<QuiverFunctions>,
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        if name != "pg_proc" {
            return Ok(table);
        }
        let (Some(procs), Some(namespaces)) = (table, self.inner.table("pg_namespace").await?)
        else {
            return Ok(None);
        };
        Ok(Some(Arc::new(PgProc {
            procs,
            namespaces,
            functions: self.functions.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_proc`: Postgres' built-ins, then Quiver's functions.
#[derive(Debug)]
struct PgProc {
    procs: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    functions: Arc<QuiverFunctions>,
}

impl PgProc {
    /// The OID `pg_namespace` gives the session's default schema.
    async fn schema_oid(&self, state: &dyn Session) -> Result<Option<i32>> {
        let schema = state.config_options().catalog.default_schema.clone();
        let plan = self.namespaces.scan(state, None, &[], None).await?;
        let names = plan.schema().index_of("nspname")?;
        let oids = plan.schema().index_of("oid")?;
        for batch in collect(plan, state.task_ctx()).await? {
            let name = cast(batch.column(names), &DataType::Utf8)?;
            let oid = cast(batch.column(oids), &DataType::Int32)?;
            let (name, oid) = (name.as_string::<i32>(), oid.as_primitive::<Int32Type>());
            if let Some(row) = (0..batch.num_rows()).find(|r| name.value(*r) == schema) {
                return Ok(Some(oid.value(row)));
            }
        }
        Ok(None)
    }

    /// Quiver's rows in `pg_proc`'s layout.
    fn batch(&self, rows: &[Proc], namespace: i32) -> Result<RecordBatch> {
        let schema = self.procs.schema();
        let n = rows.len();
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let text = |f: &dyn Fn(&Proc) -> String| -> ArrayRef {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
                };
                let int = |f: &dyn Fn(&Proc) -> i32| -> ArrayRef {
                    Arc::new(Int32Array::from_iter_values(rows.iter().map(f)))
                };
                let values: ArrayRef = match field.name().as_str() {
                    "oid" => int(&|p| p.oid),
                    "proname" => text(&|p| p.name.clone()),
                    "pronamespace" => int(&|_| namespace),
                    "proowner" => int(&|_| 10),
                    "prolang" => int(&|_| 12),
                    "prokind" => text(&|_| "f".into()),
                    "proretset" => Arc::new(datafusion::arrow::array::BooleanArray::from(
                        rows.iter().map(|p| p.set).collect::<Vec<_>>(),
                    )),
                    "provolatile" => text(&|p| p.volatility.into()),
                    "proparallel" => text(&|_| "s".into()),
                    "pronargs" => int(&|p| i32::from(p.nargs)),
                    "prorettype" => int(&|p| if p.set { RECORD_OID } else { ANY_OID }),
                    "prosrc" => text(&|p| p.name.clone()),
                    "procost" => int(&|_| 1),
                    _ if field.is_nullable() => {
                        datafusion::arrow::array::new_null_array(field.data_type(), n)
                    }
                    _ => ScalarValue::new_default(field.data_type())?.to_array_of_size(n)?,
                };
                if values.data_type() == field.data_type() {
                    Ok(values)
                } else {
                    cast(&values, field.data_type()).map_err(DataFusionError::from)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl TableProvider for PgProc {
    fn schema(&self) -> SchemaRef {
        self.procs.schema()
    }

    fn table_type(&self) -> TableType {
        self.procs.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let builtins = self.procs.scan(state, projection, &[], None).await?;
        let Some(session) = state.as_any().downcast_ref::<SessionState>() else {
            return Ok(builtins);
        };
        let rows = procs(&self.functions, session);
        let Some(namespace) = self.schema_oid(state).await? else {
            return Ok(builtins);
        };
        if let Ok(mut described) = self.functions.described.write() {
            *described = rows
                .iter()
                .map(|p| (p.oid, (p.args.clone(), p.result.clone())))
                .collect();
        }
        let ours = MemorySourceConfig::try_new_exec(
            &[vec![self.batch(&rows, namespace)?]],
            self.schema(),
            projection.cloned(),
        )?;
        UnionExec::try_new(vec![builtins, ours])
    }
}

/// Wraps `catalog`'s `pg_catalog` schema so that `pg_proc` lists
/// Quiver's functions, and registers `pg_get_function_arguments` and
/// `pg_get_function_result` for them. Which functions are Quiver's is set
/// on the returned handle once they are registered.
pub fn register(ctx: &SessionContext, catalog: &str) -> Result<Arc<QuiverFunctions>> {
    let functions = Arc::new(QuiverFunctions::default());
    let catalog = ctx
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Internal(format!("no catalog {catalog}")))?;
    let inner = catalog
        .schema("pg_catalog")
        .ok_or_else(|| DataFusionError::Internal("no pg_catalog schema".into()))?;
    catalog.register_schema(
        "pg_catalog",
        Arc::new(PgCatalog {
            inner,
            functions: functions.clone(),
        }),
    )?;
    for (name, which) in [
        ("pg_get_function_arguments", 0),
        ("pg_get_function_result", 1),
    ] {
        let known = functions.clone();
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Int32],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let Some(oids) = arrays.first() else {
                    return Err(DataFusionError::Internal(
                        "pg_get_function_*: no argument".into(),
                    ));
                };
                let oids = cast(oids, &DataType::Int32)?;
                let oids = oids.as_primitive::<Int32Type>();
                let out: StringArray = (0..oids.len())
                    .map(|i| {
                        (!oids.is_null(i))
                            .then(|| known.describe(oids.value(i), which))
                            .flatten()
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }),
        ));
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use crate::Quiver;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    #[tokio::test]
    async fn quivers_functions_are_in_pg_proc_under_public() {
        let q = Quiver::builder().build().expect("engine");
        let sql = "SELECT n.nspname, p.proname, p.proretset, \
                   pg_catalog.pg_get_function_arguments(p.oid) AS args, \
                   pg_catalog.pg_get_function_result(p.oid) AS result \
                   FROM pg_catalog.pg_proc p \
                   JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                   WHERE p.proname IN ('image_resize', 'try_audio_rms', 'read_images', 'array_in') \
                   ORDER BY p.proname";
        let batches = q.collect(sql).await.expect("pg_proc reads");
        let text = pretty_format_batches(&batches).expect("prints").to_string();
        for row in [
            "| pg_catalog | array_in      | false     |                              |              |",
            "| public     | image_resize  | false     | image, width, height, filter | any          |",
            "| public     | read_images   | true      | VARIADIC \"any\"               | SETOF record |",
            "| public     | try_audio_rms | false     | audio                        | any          |",
        ] {
            assert!(text.contains(row), "no {row} in\n{text}");
        }
        // Postgres' own rows are all still there; only Quiver's are public.
        let batches = q
            .collect(
                "SELECT count(*) FROM pg_catalog.pg_proc p \
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = 'public' AND p.proname = 'sum'",
            )
            .await
            .expect("counts");
        let text = pretty_format_batches(&batches).expect("prints").to_string();
        assert!(text.contains("| 0 "), "{text}");
    }
}
