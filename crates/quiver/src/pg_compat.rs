//! Postgres' catalog for the clients that read it: `pg_catalog` (served by
//! `datafusion-pg-catalog`: `pg_class`, `pg_namespace`, `pg_attribute`,
//! `pg_type`, `pg_proc`, `pg_database`, … over the session's tables) and
//! the functions psql, JDBC and SQLAlchemy call (`pg_table_is_visible`,
//! `format_type`, `pg_get_userbyid`, `current_schema`, `has_*_privilege`,
//! `array_upper`, …).
//!
//! Statements that read the catalog are planned through the crate's
//! Postgres compatibility parser, which rewrites what DataFusion does not
//! accept (`'t'::regclass`, `OPERATOR(pg_catalog.~)`, `= ANY(array)`,
//! `COLLATE`, …); every other statement is planned as written, so
//! DataFusion's own statements (`CREATE EXTERNAL TABLE`, `COPY … STORED
//! AS`) are untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, BooleanArray, Int32Array, Int64Array, StringArray, new_null_array,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility, create_udf,
};
use datafusion::sql::parser::Statement;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

/// The Postgres version whose protocol and behaviour clients may assume,
/// with Quiver's: what `server_version`, `SHOW server_version` and
/// `version()` report.
pub const SERVER_VERSION: &str = concat!("16.6 (Quiver ", env!("CARGO_PKG_VERSION"), ")");

/// Postgres settings a fresh session reports, by lower-case name: what
/// `SHOW` answers for client settings a connection has not changed, and
/// what `current_setting` answers.
pub const PG_SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("idle_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    ("jit", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// A timeout setting (`statement_timeout`, `idle_session_timeout`) as
/// Postgres reads it: milliseconds unless a unit says otherwise; 0 is none.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    // The default, read before every statement.
    if value == "0" {
        return None;
    }
    let v = value.trim().trim_matches('\'').trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => number,
        "s" => number * 1e3,
        "min" => number * 60e3,
        "h" => number * 3600e3,
        "d" => number * 86_400e3,
        "us" => number / 1e3,
        _ => return None,
    };
    (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1e3))
}

/// A session's Postgres client settings (`SET application_name = …`,
/// `statement_timeout`, `idle_session_timeout`, …): the defaults of
/// [`PG_SETTINGS`] and what the connection has set. It lives on the
/// session's options, so `current_setting` and `information_schema.df_settings`
/// see the connection's values, and the server reads its timeouts from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings(BTreeMap<String, String>);

impl Default for ClientSettings {
    fn default() -> Self {
        Self(
            PG_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl ClientSettings {
    /// The value of `name` (lower case), when it is a client setting.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `read` of the value of client setting `name` (lower case) in `ctx`'s
    /// session.
    pub fn read_in<R>(ctx: &SessionContext, name: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
        let state = ctx.state_ref();
        let state = state.read();
        match state.config().options().extensions.get::<ClientSettings>() {
            Some(settings) => read(settings.get(name)),
            None => read(
                PG_SETTINGS
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v),
            ),
        }
    }

    /// Sets `name` (lower case) to `value` in `ctx`'s session.
    pub fn set_in(ctx: &SessionContext, name: &str, value: &str) {
        let state = ctx.state_ref();
        let mut state = state.write();
        let extensions = &mut state.config_mut().options_mut().extensions;
        match extensions.get_mut::<ClientSettings>() {
            Some(settings) => {
                settings.0.insert(name.to_string(), value.to_string());
            }
            None => {
                let mut settings = ClientSettings::default();
                settings.0.insert(name.to_string(), value.to_string());
                extensions.insert(settings);
            }
        }
    }
}

impl ExtensionOptions for ClientSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.0.insert(key.to_ascii_lowercase(), value.to_string());
        Ok(())
    }

    /// Postgres' names, without a prefix, as `current_setting` takes them.
    fn entries(&self) -> Vec<ConfigEntry> {
        self.0
            .iter()
            .map(|(key, value)| ConfigEntry {
                key: key.clone(),
                value: Some(value.clone()),
                description: "A Postgres client setting (SET by the connection, or its default).",
            })
            .collect()
    }
}

impl ConfigExtension for ClientSettings {
    const PREFIX: &'static str = "pg_client";
}

/// Registers `pg_catalog` and the Postgres functions in `ctx`, under its
/// default catalog; the handle says which functions `pg_proc` lists as
/// Quiver's ([`crate::pg_proc`]).
pub fn register(ctx: &SessionContext) -> Result<Arc<crate::pg_proc::QuiverFunctions>> {
    let catalog = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    datafusion_pg_catalog::setup_pg_catalog(ctx, &catalog, EmptyContextProvider)
        .map_err(|e| (*e).context("registering pg_catalog"))?;
    for udf in [
        visible("pg_function_is_visible"),
        visible("pg_type_is_visible"),
        size_pretty(),
        unknown("pg_table_size", vec![DataType::Int32], DataType::Int64),
        unknown(
            "obj_description",
            vec![DataType::Int32, DataType::Utf8],
            DataType::Utf8,
        ),
        unknown(
            "col_description",
            vec![DataType::Int32, DataType::Int32],
            DataType::Utf8,
        ),
        version(),
        to_regtype(),
        ScalarUDF::new_from_impl(CurrentSetting::new()),
        set_config(),
    ] {
        ctx.register_udf(udf);
    }
    crate::pg_proc::register(ctx, &catalog)
}

/// `version()`: a Postgres version string (clients such as SQLAlchemy parse
/// it) naming Quiver and DataFusion.
fn version() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {SERVER_VERSION} on {}-linux, DataFusion {}",
        std::env::consts::ARCH,
        datafusion::DATAFUSION_VERSION
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))
        }),
    )
}

/// Type names (and their SQL spellings) with their Postgres OIDs, as
/// `pg_type` has them.
const TYPE_OIDS: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("char", 18),
    ("name", 19),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("unknown", 705),
    ("bool[]", 1000),
    ("_bool", 1000),
    ("bytea[]", 1001),
    ("_bytea", 1001),
    ("int2[]", 1005),
    ("_int2", 1005),
    ("int4[]", 1007),
    ("_int4", 1007),
    ("text[]", 1009),
    ("_text", 1009),
    ("varchar[]", 1015),
    ("_varchar", 1015),
    ("int8[]", 1016),
    ("_int8", 1016),
    ("float4[]", 1021),
    ("_float4", 1021),
    ("float8[]", 1022),
    ("_float8", 1022),
    ("bpchar", 1042),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("numeric", 1700),
    ("decimal", 1700),
    ("uuid", 2950),
    ("jsonb", 3802),
];

/// `to_regtype(text)`: the OID of a type name (as `pg_catalog.` qualified
/// or plain, any case), NULL when there is no such type.
fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let Some(names) = arrays
                .first()
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            else {
                return Err(DataFusionError::Internal("to_regtype takes text".into()));
            };
            let out: Int32Array = names
                .iter()
                .map(|n| {
                    let n = n?.trim().to_ascii_lowercase();
                    let n = n
                        .strip_prefix("pg_catalog.")
                        .unwrap_or(&n)
                        .trim_matches('"');
                    TYPE_OIDS.iter().find(|(t, _)| *t == n).map(|(_, oid)| *oid)
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// `current_setting(name [, missing_ok])`: a DataFusion, `quiver.*` or
/// client setting of the session ([`ClientSettings`], as the connection
/// set it), else the Postgres default of [`PG_SETTINGS`];
/// an unknown name is an error (NULL with `missing_ok`), as in Postgres.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = arrays
            .first()
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| DataFusionError::Internal("current_setting takes text".into()))?;
        let missing_ok = arrays
            .get(1)
            .and_then(|a| a.as_any().downcast_ref::<BooleanArray>());
        let entries = args.config_options.entries();
        let mut out = Vec::with_capacity(names.len());
        for (row, name) in names.iter().enumerate() {
            let Some(name) = name else {
                out.push(None);
                continue;
            };
            let key = name.trim().to_ascii_lowercase();
            let found = entries
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone().unwrap_or_default())
                .or_else(|| {
                    PG_SETTINGS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| (*v).to_string())
                });
            match found {
                Some(v) => out.push(Some(v)),
                None if missing_ok.is_some_and(|m| m.is_valid(row) && m.value(row)) => {
                    out.push(None)
                }
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )));
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `set_config('jit', value, is_local)`: Quiver has no JIT, so any value
/// is accepted and returned, as Postgres returns it (asyncpg turns `jit`
/// off this way before introspecting types). Other settings are changed
/// with `SET` (a function cannot change the session), so they are refused.
fn set_config() -> ScalarUDF {
    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = |i: usize| {
                arrays
                    .get(i)
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| DataFusionError::Internal("set_config takes text".into()))
            };
            let (names, values) = (text(0)?, text(1)?);
            let mut out = Vec::with_capacity(names.len());
            for (name, value) in names.iter().zip(values.iter()) {
                if !name.is_some_and(|n| n.trim().eq_ignore_ascii_case("jit")) {
                    return Err(DataFusionError::Plan(format!(
                        "set_config accepts only 'jit' (Quiver has none); use SET {} = … to change a setting",
                        name.unwrap_or("NULL")
                    )));
                }
                out.push(value);
            }
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
        }),
    )
}

/// `pg_function_is_visible(oid)`, `pg_type_is_visible(oid)`: true, since
/// every function and type is on the search path (there is one namespace
/// of each).
fn visible(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let rows = arrays.first().map_or(1, |a| a.len());
            Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![
                true;
                rows
            ]))))
        }),
    )
}

/// A Postgres catalog function whose answer Quiver does not keep (table
/// sizes of external tables, comments): NULL, as Postgres answers for an
/// unknown object. (Function signatures: [`crate::pg_proc`].)
fn unknown(name: &str, args: Vec<DataType>, returns: DataType) -> ScalarUDF {
    let out = returns.clone();
    create_udf(
        name,
        args,
        returns,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let rows = arrays.first().map_or(1, |a| a.len());
            Ok(ColumnarValue::Array(new_null_array(&out, rows)))
        }),
    )
}

/// `pg_size_pretty(bigint)`: bytes in the largest unit that keeps at
/// least 10 of it, rounded, as Postgres writes them (`123 bytes`,
/// `10 kB`, `52 MB`).
fn size_pretty() -> ScalarUDF {
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let Some(sizes) = arrays
                .first()
                .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
            else {
                return Err(DataFusionError::Internal(
                    "pg_size_pretty takes a bigint".into(),
                ));
            };
            let out: StringArray = sizes.iter().map(|v| v.map(pretty_size)).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// Postgres' `pg_size_pretty` (15): bytes below 10 kB, else the largest of
/// kB, MB, GB, TB below 20 × 1024 − 1 halves of it, rounded half away from
/// zero.
fn pretty_size(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT2: i64 = LIMIT * 2 - 1;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    // One extra bit kept for rounding.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB"] {
        if size.abs() < LIMIT2 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} TB", half_rounded(size))
}

#[cfg(test)]
mod tests {
    use super::pretty_size;

    #[test]
    fn sizes_print_as_postgres_prints_them() {
        // SELECT pg_size_pretty(x::bigint) in PostgreSQL 15.
        assert_eq!(pretty_size(0), "0 bytes");
        assert_eq!(pretty_size(10239), "10239 bytes");
        assert_eq!(pretty_size(10240), "10 kB");
        assert_eq!(pretty_size(1_000_000), "977 kB");
        assert_eq!(pretty_size(52_428_800), "50 MB");
        assert_eq!(pretty_size(-10240), "-10 kB");
        assert_eq!(pretty_size(1 << 40), "1024 GB");
    }
}

/// Whether `sql` reads Postgres' catalog or uses its casts and operators,
/// and so is worth planning through [`PgParser`].
pub fn reads_catalog(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    [
        "pg_",
        "information_schema",
        "::reg",
        "operator(",
        "current_schema",
    ]
    .iter()
    .any(|k| lower.contains(k))
}

/// Pieces of psql's own catalog queries (psql 15, `\d+`) that DataFusion
/// cannot plan, and what they come to in Quiver's catalog, where no table
/// has storage options, TOAST tables or per-column statistics targets.
const PSQL_REWRITES: &[(&str, &str)] = &[
    // `\d+ t`: the table's storage options, with its TOAST table's
    // (`array(subquery)` over `unnest` of an outer column).
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
];

/// `sql` with the pieces of psql's catalog queries that DataFusion cannot
/// plan replaced by what they come to here ([`PSQL_REWRITES`]).
pub fn psql_rewrites(sql: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(sql);
    for (theirs, ours) in PSQL_REWRITES {
        if out.contains(theirs) {
            out = std::borrow::Cow::Owned(out.replace(theirs, ours));
        }
    }
    out
}

/// The compatibility parser, built once per engine.
#[derive(Debug, Clone)]
pub struct PgParser(Arc<PostgresCompatibilityParser>);

impl Default for PgParser {
    fn default() -> Self {
        Self(Arc::new(PostgresCompatibilityParser::new()))
    }
}

impl PgParser {
    /// Plans `sql` (one statement) on `state` after the Postgres rewrites;
    /// `None` when the parser cannot read it as one statement.
    pub async fn plan(&self, state: &SessionState, sql: &str) -> Option<Result<LogicalPlan>> {
        let mut statements = self.0.parse(sql).ok()?;
        if statements.len() != 1 {
            return None;
        }
        let statement = statements.pop()?;
        Some(
            state
                .statement_to_plan(Statement::Statement(Box::new(statement)))
                .await,
        )
    }
}
