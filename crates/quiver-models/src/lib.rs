//! Quiver's models: a registry of local weights (Hugging Face layout),
//! device choice, and the forward passes of the architectures Quiver runs,
//! with Candle. Knows nothing of SQL or DataFusion.

pub mod arenas;
pub mod bert;
pub mod clip;
pub mod convnet;
pub mod ct2;
pub mod device;
pub mod efficientnet;
pub mod error;
pub mod import;
pub mod pth;
pub mod registry;
pub mod resnet;
pub mod share;
pub mod speech;
pub mod testing;
pub mod text;
pub mod vision;
pub mod weights;
pub mod whisper;
mod worker;

pub use device::{DeviceChoice, Precision};
pub use error::{ModelError, Result};
pub use registry::{
    Architecture, Model, ModelInfo, ModelListing, ModelRegistry, ModelSpec, Tokens,
};
pub use share::DeviceFraction;
pub use worker::MAX_REPLICAS;
