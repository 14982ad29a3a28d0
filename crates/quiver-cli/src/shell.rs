//! `quiver shell`: an interactive SQL prompt with history, multi-line
//! statements, `\d`, `\timing`, `\q` and tab completion of table names.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use quiver::Quiver;
use quiver::statements::{Statement, is_complete, split_statements};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::args::OutputArgs;
use crate::output::Sink;
use crate::run::{report, run_statement};

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "HAVING",
    "WITH",
    "AS",
    "AND",
    "OR",
    "NOT",
    "COUNT",
    "DISTINCT",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "STORED",
    "PARQUET",
    "CSV",
    "JSON",
    "LOCATION",
    "COPY",
    "TO",
    "DESCRIBE",
    "SHOW",
    "TABLES",
    "EXPLAIN",
    "read_parquet",
    "read_csv",
    "read_json",
];

const HELP: &str = "\
Statements end with ';' and may span lines.
  \\d             list tables
  \\d NAME        describe a table
  \\timing [on|off]  show how long each statement takes
  \\?             this help
  \\q             quit (or Ctrl-D)
Ctrl-C cancels a running statement or clears the current input.";

/// Completes table names and a few keywords.
struct ShellHelper {
    tables: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let word = line[start..pos].to_ascii_lowercase();
        if word.is_empty() {
            return Ok((pos, vec![]));
        }
        let tables = self.tables.lock().map(|t| t.clone()).unwrap_or_default();
        let mut out: Vec<String> = tables
            .into_iter()
            .filter(|t| t.to_ascii_lowercase().starts_with(&word))
            .collect();
        out.extend(
            KEYWORDS
                .iter()
                .filter(|k| k.to_ascii_lowercase().starts_with(&word))
                .map(|k| k.to_string()),
        );
        Ok((start, out))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUIVER_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quiver_history"))
}

/// Runs the shell until `\q` or end of input.
pub async fn run_shell(quiver: Quiver, output: OutputArgs) -> anyhow::Result<()> {
    let mut sink = output.open()?;
    let tables = Arc::new(Mutex::new(quiver.table_names()));
    let mut rl: Editor<ShellHelper, DefaultHistory> =
        Editor::new().context("cannot start the line editor")?;
    rl.set_helper(Some(ShellHelper {
        tables: Arc::clone(&tables),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "quiver {} — type \\? for help, \\q to quit",
        env!("CARGO_PKG_VERSION")
    );
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "quiver> "
        } else {
            "     -> "
        };
        let line = tokio::task::block_in_place(|| rl.readline(prompt));
        match line {
            Ok(line) => {
                if buf.trim().is_empty() && line.trim_start().starts_with('\\') {
                    let _ = rl.add_history_entry(line.trim());
                    if !meta_command(&quiver, line.trim(), &mut sink).await {
                        break;
                    }
                    continue;
                }
                buf.push_str(&line);
                buf.push('\n');
                if is_complete(&buf) {
                    let _ = rl.add_history_entry(buf.trim());
                    run_buffer(&quiver, &buf, &mut sink).await;
                    buf.clear();
                    if let Ok(mut t) = tables.lock() {
                        *t = quiver.table_names();
                    }
                }
            }
            Err(ReadlineError::Interrupted) => buf.clear(),
            Err(ReadlineError::Eof) => {
                if !buf.trim().is_empty() {
                    run_buffer(&quiver, &buf, &mut sink).await;
                }
                break;
            }
            Err(e) => return Err(e).context("cannot read input"),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    sink.commit()
}

async fn run_buffer(quiver: &Quiver, buf: &str, sink: &mut Sink) {
    for stmt in split_statements(buf) {
        if let Err(e) = run_statement(quiver, &stmt, sink).await {
            report("shell", &stmt, &e);
        }
    }
}

/// Runs a backslash command; false means quit.
async fn meta_command(quiver: &Quiver, line: &str, sink: &mut Sink) -> bool {
    let mut parts = line.split_whitespace();
    let cmd = parts.next().unwrap_or_default();
    let arg = parts.next();
    let sql = match (cmd, arg) {
        ("\\q" | "\\quit", _) => return false,
        ("\\?" | "\\h" | "\\help", _) => {
            println!("{HELP}");
            return true;
        }
        ("\\timing", a) => {
            let on = match a {
                Some("on") => true,
                Some("off") => false,
                _ => !sink.timing(),
            };
            sink.set_timing(on);
            println!("Timing is {}.", if on { "on" } else { "off" });
            return true;
        }
        ("\\d", None) => "SELECT table_schema AS schema, table_name AS name, table_type AS type \
             FROM information_schema.tables \
             WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, 2"
            .to_string(),
        ("\\d", Some(name)) => {
            let known = quiver.table_names();
            if !known.iter().any(|t| t == name) {
                eprintln!("Did not find any relation named \"{name}\".");
                return true;
            }
            format!(
                "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
                 FROM information_schema.columns WHERE table_name = '{}' \
                 ORDER BY ordinal_position",
                name.replace('\'', "''")
            )
        }
        _ => {
            eprintln!("invalid command {cmd}; try \\? for help");
            return true;
        }
    };
    let stmt = Statement {
        sql,
        line: 1,
        column: 1,
    };
    if let Err(e) = run_statement(quiver, &stmt, sink).await {
        report("shell", &stmt, &e);
    }
    true
}
