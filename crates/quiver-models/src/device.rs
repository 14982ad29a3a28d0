//! Where a model runs: the CPU always; a CUDA GPU when the crate is built
//! with the `cuda` feature and one is present.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::ModelError;

/// The device a model asks for (`OPTIONS (device '…')`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// GPU 0 when built with `cuda` and present, else the CPU (with a warning).
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            _ => Err(ModelError::BadOption {
                option: "device".into(),
                reason: format!("'{s}' is not one of cpu, cuda"),
            }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// The floating-point type weights are held in (`OPTIONS (dtype '…')`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit IEEE floats.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// Candle's type.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl FromStr for Precision {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(Self::F32),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(ModelError::BadOption {
                option: "dtype".into(),
                reason: format!("'{s}' is not one of f32, f16, bf16"),
            }),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

/// The device to run on for `choice`, and a warning when the choice could
/// not be honoured (CUDA asked for, but not built in or no GPU present).
pub fn pick_device(choice: DeviceChoice) -> (Device, Option<String>) {
    match choice {
        DeviceChoice::Cpu => (Device::Cpu, None),
        DeviceChoice::Cuda => cuda_or_cpu(),
    }
}

#[cfg(feature = "cuda")]
fn cuda_or_cpu() -> (Device, Option<String>) {
    match Device::new_cuda(0) {
        Ok(device) => {
            // The host's large buffers are now media on its way to the
            // GPU: returned when freed (see `arenas`).
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                crate::arenas::return_freed_buffers();
            });
            (device, None)
        }
        Err(e) => (
            Device::Cpu,
            Some(format!(
                "device 'cuda' asked for, but no GPU is usable ({e}); running on the CPU"
            )),
        ),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_or_cpu() -> (Device, Option<String>) {
    (
        Device::Cpu,
        Some(
            "device 'cuda' asked for, but this build of Quiver has no CUDA support (build with --features cuda); running on the CPU"
                .to_string(),
        ),
    )
}

/// What `device` is, in words (`cpu`, `cuda:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
