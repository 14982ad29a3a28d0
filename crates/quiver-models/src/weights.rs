//! Opening weight files as Candle [`VarBuilder`]s.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{ModelError, Result};

/// The names a Hugging Face model directory's weights go by, in order of
/// preference: `model.safetensors` (memory-mapped), `pytorch_model.bin`
/// (read through Candle's pickle support).
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// The weights file of a Hugging Face model directory (see [`WEIGHT_FILES`]).
pub fn weights_file(model: &str, dir: &Path) -> Result<PathBuf> {
    for name in WEIGHT_FILES {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(ModelError::io(
        model,
        &dir.join(WEIGHT_FILES[0]),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "neither model.safetensors nor pytorch_model.bin is in the model directory",
        ),
    ))
}

/// A [`VarBuilder`] over `path` holding tensors as `dtype` on `device`.
pub fn var_builder(
    model: &str,
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let weights_error = |source: candle_core::Error| ModelError::Weights {
        model: model.to_string(),
        path: path.to_path_buf(),
        message: "not a readable weights file".into(),
        source: Box::new(source),
    };
    if path.extension().is_some_and(|e| e == "safetensors") {
        mmap_safetensors(path, dtype, device).map_err(weights_error)
    } else {
        VarBuilder::from_pth(path, dtype, device).map_err(weights_error)
    }
}

/// Memory-maps a safetensors file. Tensors are copied out of the map onto
/// `device` as the architecture asks for them, all at load time; the map
/// is dropped with the builder once the model is built.
#[allow(unsafe_code)]
fn mmap_safetensors(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<VarBuilder<'static>> {
    // SAFETY: the file is mapped read-only and only for the duration of the
    // load; Quiver never writes weight files it has registered. A file
    // truncated by another process while it loads would fault, as any
    // memory-mapped reader would (candle and safetensors document the same).
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
}

/// Maps a Candle loading error onto [`ModelError::Weights`], naming the
/// file: a missing tensor reads "cannot find tensor …".
pub fn load_error(model: &str, path: &Path, source: candle_core::Error) -> ModelError {
    ModelError::Weights {
        model: model.to_string(),
        path: path.to_path_buf(),
        message: source.to_string(),
        source: Box::new(source),
    }
}
