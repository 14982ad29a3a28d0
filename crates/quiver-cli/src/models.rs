//! `quiver models list|import|check`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use quiver_models::{ModelRegistry, ModelSpec};

use crate::args::{EngineArgs, ModelsCommand};

/// Runs one `quiver models` action.
pub async fn run(engine_args: &EngineArgs, action: ModelsCommand) -> anyhow::Result<ExitCode> {
    match action {
        ModelsCommand::List { output } => {
            let quiver = crate::engine(engine_args).await?;
            let mut sink = output.open()?;
            let ok =
                crate::run::run_script(&quiver, "<models list>", "SHOW MODELS", &mut sink, false)
                    .await;
            crate::finish(sink, ok, !ok)
        }
        ModelsCommand::Import {
            source,
            name,
            dir,
            labels,
        } => {
            let options = quiver_models::import::ImportOptions {
                name: name.as_deref(),
                labels: labels.as_deref(),
            };
            let imported = quiver_models::import::import(&source, &dir, &options)
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
            let quiver = crate::engine(engine_args).await?;
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
            if let quiver_models::ModelInfo::Speech(w) = &info {
                // Thirty seconds of silence: checks the weights load and run.
                let started = Instant::now();
                let text = loaded
                    .transcribe(vec![-1.5; w.n_mels * 3000], vec![1], None)
                    .await?;
                println!(
                    "transcribed 30 s of silence: {:?}, {:.1} ms",
                    text.first().map(String::as_str).unwrap_or_default(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                return Ok(if text.len() == 1 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            if let quiver_models::ModelInfo::ImageClassifier(c) = &info {
                // A mid-grey image: checks the weights load and run end to end.
                let rgb = vec![128u8; c.image_size * c.image_size * 3];
                let started = Instant::now();
                let ranked = loaded.classify_images(rgb, 3).await?;
                let top: Vec<String> = ranked
                    .first()
                    .map(|r| {
                        r.iter()
                            .map(|(i, p)| format!("{} {p:.3}", c.labels[*i]))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "classified a grey {0}x{0} image: {1}, {2:.1} ms",
                    c.image_size,
                    top.join(", "),
                    started.elapsed().as_secs_f64() * 1e3
                );
                return Ok(if top.len() == 3 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
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
