//! `quiver models list|import|check`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use quiver::Quiver;
use quiver_models::{ModelRegistry, ModelSpec};

use crate::args::{EngineArgs, ModelsCommand};

/// Runs one `quiver models` action.
pub async fn run(
    engine_args: &EngineArgs,
    action: ModelsCommand,
    engine: fn(&EngineArgs) -> anyhow::Result<Quiver>,
) -> anyhow::Result<ExitCode> {
    match action {
        ModelsCommand::List { output } => {
            let quiver = engine(engine_args)?;
            let mut sink = output.open()?;
            let ok =
                crate::run::run_script(&quiver, "<models list>", "SHOW MODELS", &mut sink, false)
                    .await;
            crate::finish(sink, ok, !ok)
        }
        ModelsCommand::Import { source, name, dir } => {
            let imported = quiver_models::import::import(&source, &dir, name.as_deref())
                .with_context(|| format!("cannot import {}", source.display()))?;
            let path = imported.dir.display();
            println!(
                "imported {} ({}) into {path}",
                imported.name, imported.architecture
            );
            println!("register it with:");
            println!(
                "  CREATE MODEL {} TYPE {} FROM '{path}';",
                imported.name.replace('-', "_"),
                imported.architecture
            );
            println!("or in the config file:");
            println!(
                "  [models.{}]\n  type = \"{}\"\n  path = \"{path}\"",
                imported.name.replace('-', "_"),
                imported.architecture
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Check {
            model,
            architecture,
            device,
        } => {
            let quiver = engine(engine_args)?;
            let registry: &ModelRegistry = quiver.models();
            let name = if registry.describe(&model).is_ok() {
                model.clone()
            } else {
                let mut spec = ModelSpec::new("check", architecture.parse()?, &model);
                spec.set_option("device", &device)?;
                registry.register(spec, true)?;
                "check".to_string()
            };
            let (spec, info) = registry.describe(&name)?;
            let loaded = registry
                .get(&name)
                .with_context(|| format!("cannot load {model}"))?;
            if let Some(w) = loaded.warning() {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: {} ({}) from {}, loaded on {} in {:.2} s",
                spec.name,
                spec.architecture,
                spec.architecture.task(),
                spec.path.display(),
                loaded.device(),
                loaded.load_time().as_secs_f64()
            );
            let text = "Quiver runs models over media from SQL.";
            let started = Instant::now();
            let v = loaded.embed_texts(vec![text.to_string()]).await?;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            println!(
                "embedded {text:?}: {} floats (expected {}), length {norm:.4}, {:.1} ms",
                v.len(),
                info.embedding_dim().unwrap_or(0),
                started.elapsed().as_secs_f64() * 1e3
            );
            Ok(if Some(v.len()) == info.embedding_dim() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
