//! `quiver`: run SQL files, one-off statements or an interactive shell over
//! the Quiver engine, and the built-in demo.

mod args;
mod demo;
mod models;
mod output;
mod progress;
mod run;
mod shell;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use quiver::{Quiver, QuiverConfig};

use crate::args::{Cli, Command, EngineArgs};

fn main() -> ExitCode {
    // Before any thread starts: glibc's malloc arenas, two (see `arenas`).
    quiver_models::arenas::limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the engine (with the config's models and tables) from the config
/// file, `QUIVER_*` variables and flags, in that order of precedence
/// (flags win).
async fn engine(args: &EngineArgs) -> anyhow::Result<Quiver> {
    let cfg = match &args.config {
        Some(path) => QuiverConfig::from_file(path)?,
        None => QuiverConfig::default(),
    };
    let mut cfg = cfg.with_env_overrides()?;
    if let Some(v) = &args.memory_limit {
        cfg.set("exec.memory_limit", v, "--memory-limit")?;
    }
    if let Some(v) = args.target_partitions {
        cfg.exec.target_partitions = v;
    }
    if let Some(v) = args.batch_size {
        cfg.set("exec.batch_size", &v.to_string(), "--batch-size")?;
    }
    if let Some(v) = &args.spill_dir {
        cfg.exec.spill_dir = Some(v.clone());
    }
    if !args.data_root.is_empty() {
        cfg.data.roots = args.data_root.clone();
    }
    cfg.validate("the command line")?;
    Quiver::builder()
        .config(cfg)
        .open()
        .await
        .context("cannot start the engine")
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            files,
            continue_on_error,
            output,
        } => {
            let quiver = engine(&cli.engine).await?;
            let mut sink = output.open()?;
            let mut failed = false;
            for file in &files {
                let text = match std::fs::read_to_string(file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: cannot read {}: {e}", file.display());
                        failed = true;
                        if continue_on_error {
                            continue;
                        }
                        break;
                    }
                };
                let name = file.display().to_string();
                let ok = run::run_script(&quiver, &name, &text, &mut sink, continue_on_error).await;
                failed |= !ok;
                if !ok && !continue_on_error {
                    break;
                }
            }
            // With --continue-on-error the results that did succeed are kept.
            finish(sink, !failed || continue_on_error, failed)
        }
        Command::Sql { sql, output } => {
            let quiver = engine(&cli.engine).await?;
            let mut sink = output.open()?;
            let ok = run::run_script(&quiver, "<sql>", &sql, &mut sink, false).await;
            finish(sink, ok, !ok)
        }
        Command::Shell { output } => {
            let quiver = engine(&cli.engine).await?;
            shell::run_shell(quiver, output).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            workdir,
            no_serve,
            listen,
        } => {
            let quiver_args = cli.engine;
            let serve_on = (!no_serve).then_some(listen.as_str());
            demo::run_demo(&workdir, serve_on, &quiver_args).await
        }
        Command::Serve { listen } => {
            let quiver = engine(&cli.engine).await?;
            serve(quiver, &listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { action } => models::run(&cli.engine, action).await,
        Command::GenerateData { dir } => {
            let files = quiver::sample::generate(&dir)?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serves `quiver` on `listen` until Ctrl-C or SIGTERM.
pub async fn serve(quiver: quiver::Quiver, listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "quiver: serving Postgres clients on {addr} (connect with: psql -h {} -p {}); Ctrl-C stops",
        addr.ip(),
        addr.port()
    );
    let shutdown = async {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    quiver_server::serve(listener, quiver, shutdown).await?;
    eprintln!("quiver: stopped");
    Ok(())
}

/// Commits the output file on success and discards it on failure, so a
/// failed run never leaves half-written output.
pub(crate) fn finish(sink: output::Sink, keep: bool, failed: bool) -> anyhow::Result<ExitCode> {
    if keep {
        sink.commit()?;
    } else {
        sink.discard();
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
