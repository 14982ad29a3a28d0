//! Quiver: a SQL-fronted multimodal query engine on Apache DataFusion.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`QuiverConfig`]: TOML file + `QUIVER_*` environment overrides |
//! | [`engine`] | [`Quiver`] and [`QuiverBuilder`]: the embeddable engine |
//! | [`listing`] | (from `quiver-sources`) `read_parquet` / `read_csv` / `read_json` and globbing `CREATE EXTERNAL TABLE` on every object store |
//! | [`images`] | (from `quiver-sources`) `read_images` and `STORED AS IMAGES` tables |
//! | [`object_stores`] | lazily built `s3://`, `gs://`, `az://`, `http(s)://` stores; local data roots |
//! | [`models`] | `CREATE MODEL`, `DROP MODEL`, `SHOW MODELS`, `DESCRIBE MODEL` |
//! | [`pg_compat`] | `pg_catalog` and the Postgres functions psql, JDBC and SQLAlchemy read |
//! | [`named_args`] | named arguments of table functions (`fps => 1`) as `'name=value'` options |
//! | [`statements`] | splitting SQL scripts into statements with their line and column |
//! | [`sample`] | the built-in sample dataset and benchmark data generators |
//! | [`sample_audio`] | generated audio: the sample clips, lossy copies via ffmpeg, damaged files, the benchmark corpus |
//! | [`sample_video`] | generated video via ffmpeg: the sample clips, damaged files, the benchmark corpus |
//! | [`session_pool`] | one session's share of the engine's memory pool: what a connection holds, and its limit |
//!
//! ```no_run
//! # async fn demo() -> datafusion::common::Result<()> {
//! use quiver::{Quiver, QuiverConfig};
//! let cfg = QuiverConfig::default().with_env_overrides().map_err(|e| {
//!     datafusion::error::DataFusionError::External(Box::new(e))
//! })?;
//! let quiver = Quiver::builder().config(cfg).build()?;
//! let df = quiver.sql("SELECT 1 AS one").await?;
//! df.show().await?;
//! # Ok(()) }
//! ```

pub mod async_calls;
pub mod config;
mod constant_rows;
pub mod display;
pub mod engine;
pub mod engine_pool;
mod kept_plans;
mod lookup;
pub mod models;
pub mod named_args;
pub mod object_stores;
pub mod pg_compat;
pub mod pg_proc;
pub mod sample;
pub mod sample_audio;
pub mod sample_video;
pub mod session_pool;
mod shapes;
mod state_cache;
pub mod statements;
mod tables;

pub use config::{ConfigError, QuiverConfig, TableDeclaration};
pub use datafusion;
pub use engine::{Quiver, QuiverBuilder};
pub use kept_plans::PlanMemo;
pub use quiver_exec::StatementProgress;
pub use quiver_sources::images;
pub use quiver_sources::listing;
