//! Running scripts: statement by statement, with errors reported as
//! `file:line:col: error: message`.

use std::time::Instant;

use datafusion::common::{DataFusionError, Result};
use quiver::Quiver;
use quiver::statements::{Statement, error_position, split_statements};

use crate::output::Sink;
use crate::progress::Progress;

/// Runs every statement of `text`; returns false if any failed. `name` is
/// the file name used in error messages.
pub async fn run_script(
    quiver: &Quiver,
    name: &str,
    text: &str,
    sink: &mut Sink,
    continue_on_error: bool,
) -> bool {
    let mut ok = true;
    for stmt in split_statements(text) {
        if let Err(e) = run_statement(quiver, &stmt, sink).await {
            report(name, &stmt, &e);
            ok = false;
            if !continue_on_error {
                break;
            }
        }
    }
    ok
}

/// Runs one statement into the sink, with progress, timing and Ctrl-C.
pub async fn run_statement(quiver: &Quiver, stmt: &Statement, sink: &mut Sink) -> Result<()> {
    let started = Instant::now();
    let progress = Progress::start(quiver.progress());
    let work = async {
        let stream = quiver.execute_stream(&stmt.sql).await?;
        sink.write_stream(stream, &progress).await
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(DataFusionError::Execution("cancelled by Ctrl-C".into())),
    };
    progress.clear();
    result?;
    if sink.timing() {
        eprintln!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// Prints `name:line:col: error: message` to stderr, pointing at the parse
/// error's position when the parser gave one, else at the statement.
pub fn report(name: &str, stmt: &Statement, err: &DataFusionError) {
    let message = err.to_string();
    let (line, col) = match error_position(&message) {
        Some((l, c)) => stmt.script_position(l, c),
        None => (stmt.line, stmt.column),
    };
    eprintln!("{name}:{line}:{col}: error: {}", message.trim_end());
}
