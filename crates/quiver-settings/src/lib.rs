//! Quiver's session settings: a DataFusion config extension under the
//! prefix `quiver`, so that `SET quiver.media.max_image_pixels = 50000000`
//! and `SHOW quiver.media.max_image_pixels` work per session, and every
//! function, scan and operator reads them from the options it is handed at
//! execution time. The library seeds the defaults from the config file.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `quiver.media.max_image_pixels` | 100000000 | images declaring more pixels are refused before decoding |
//! | `quiver.media.max_image_alloc` | 1073741824 | bytes a decoder may allocate for one image |
//! | `quiver.media.max_audio_alloc` | 1073741824 | bytes of decoded samples one audio decode may hold |
//! | `quiver.media.max_video_pixels` | 36000000 | pixels of one video frame; larger videos are refused before decoding |
//! | `quiver.io.max_concurrent_requests` | 32 | requests `url_download` keeps in flight per partition |
//! | `quiver.inference.batch_size` | 0 | rows per model call in `InferenceExec`; 0 takes the model's `batch_size` |
//! | `quiver.inference.replicas` | 0 | forward passes of one model running at once (worker threads sharing its weights); 0 takes the model's `replicas` (1 unless `CREATE MODEL` says) |
//! | `quiver.inference.queue_depth` | 4 | slices (a quarter of `batch_size` rows) each partition keeps queued ahead of its consumer, at least |
//! | `quiver.inference.max_wait_ms` | 250 | how long a partly filled model batch waits for more rows (longer while `replicas` calls are in flight: until one ends) |
//! | `quiver.progress` | off | the server sends NOTICEs with a running statement's progress |
//! | `quiver.progress_interval_ms` | 1000 | how often those NOTICEs come |

pub mod args;
pub mod progress;

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::{DataFusionError, Result};
use quiver_media::video::VideoLimits;
use quiver_media::{AudioLimits, DecodeLimits};

/// The `quiver.*` settings of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiverSettings {
    /// Limits on every image decode.
    pub decode_limits: DecodeLimits,
    /// Limits on every audio decode.
    pub audio_limits: AudioLimits,
    /// Limits on every video probe and decode.
    pub video_limits: VideoLimits,
    /// Requests `url_download` keeps in flight at once, per partition.
    pub max_concurrent_requests: usize,
    /// How `InferenceExec` batches and runs model calls.
    pub inference: InferenceSettings,
    /// Whether the server sends progress NOTICEs for running statements.
    pub progress: bool,
    /// Milliseconds between two progress NOTICEs.
    pub progress_interval_ms: u64,
    /// The session's [`progress::StatementProgress`], for functions, which
    /// see the options but not the session's other extensions
    /// (`media_fetch` counts the files it reads). Not a setting.
    pub statement_progress: ProgressHandle,
}

/// A session's [`progress::StatementProgress`], carried in its settings.
#[derive(Debug, Clone, Default)]
pub struct ProgressHandle(pub Option<std::sync::Arc<progress::StatementProgress>>);

impl PartialEq for ProgressHandle {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for ProgressHandle {}

/// The knobs of the streaming inference operator (`quiver.inference.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceSettings {
    /// Rows per model call; 0 takes the model's own `batch_size`.
    pub batch_size: usize,
    /// Forward passes of one model that run at once, each on its own
    /// worker thread over the same weights; 0 takes the model's own
    /// `replicas` (1 unless registered with more).
    pub replicas: usize,
    /// Slices (a quarter of `batch_size` rows) each partition keeps
    /// queued ahead of its consumer, at least: the bound that makes a slow
    /// consumer stop the decoding upstream.
    pub queue_depth: usize,
    /// How long, in milliseconds, a partly filled model batch waits for
    /// rows from other partitions before it runs anyway (longer while
    /// `replicas` calls are in flight: until one of them ends).
    pub max_wait_ms: u64,
}

impl InferenceSettings {
    /// The replicas to run: the session's, or where it leaves them to the
    /// model (0), `model`'s.
    pub fn replicas_or(&self, model: usize) -> usize {
        match self.replicas {
            0 => model.max(1),
            n => n,
        }
    }
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            batch_size: 0,
            replicas: 0,
            queue_depth: 4,
            max_wait_ms: 250,
        }
    }
}

impl Default for QuiverSettings {
    fn default() -> Self {
        Self {
            decode_limits: DecodeLimits::default(),
            audio_limits: AudioLimits::default(),
            video_limits: VideoLimits::default(),
            max_concurrent_requests: 32,
            inference: InferenceSettings::default(),
            progress: false,
            progress_interval_ms: 1000,
            statement_progress: ProgressHandle::default(),
        }
    }
}

impl QuiverSettings {
    /// The settings in `options`, or the defaults when the extension was
    /// not registered (a bare `SessionContext`).
    pub fn from_options(options: &ConfigOptions) -> Self {
        options
            .extensions
            .get::<QuiverSettings>()
            .cloned()
            .unwrap_or_default()
    }
}

fn parse_whole(key: &str, value: &str) -> Result<u64> {
    value.trim().parse().map_err(|_| {
        DataFusionError::Configuration(format!(
            "quiver.{key} must be a whole number, got '{value}'"
        ))
    })
}

/// The most replicas a session may ask of a model: a model runs at most
/// this many worker threads (`quiver_models::worker::MAX_REPLICAS`, and
/// `CREATE MODEL … OPTIONS (replicas …)` takes no more).
pub const MAX_REPLICAS: u64 = 16;

/// The most rows a session may ask a model call to take.
pub const MAX_INFERENCE_BATCH: u64 = 65_536;

/// The most slices a session may ask each output queue to hold.
pub const MAX_QUEUE_DEPTH: u64 = 1_024;

/// The longest a session may ask a partly filled call to wait: an hour.
pub const MAX_WAIT_MS: u64 = 3_600_000;

/// A whole number from 0 (from 1 unless `zero`) to `max`.
fn parse_up_to(key: &str, value: &str, zero: bool, max: u64) -> Result<u64> {
    let least = u64::from(!zero);
    let v = parse_whole(key, value).map_err(|_| out_of_range(key, value, least, max))?;
    if v < least || v > max {
        return Err(out_of_range(key, value, least, max));
    }
    Ok(v)
}

fn out_of_range(key: &str, value: &str, least: u64, max: u64) -> DataFusionError {
    DataFusionError::Configuration(format!(
        "quiver.{key} must be a whole number from {least} to {max}, got '{value}'"
    ))
}

fn parse_count(key: &str, value: &str) -> Result<u64> {
    let v = parse_whole(key, value).map_err(|_| {
        DataFusionError::Configuration(format!(
            "quiver.{key} must be a positive whole number, got '{value}'"
        ))
    })?;
    if v == 0 {
        return Err(DataFusionError::Configuration(format!(
            "quiver.{key} must be greater than 0"
        )));
    }
    Ok(v)
}

/// `on`/`off` as Postgres reads booleans (`true`, `yes`, `1`, …).
fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value
        .trim()
        .trim_matches('\'')
        .to_ascii_lowercase()
        .as_str()
    {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok(false),
        _ => Err(DataFusionError::Configuration(format!(
            "quiver.{key} must be on or off, got '{value}'"
        ))),
    }
}

impl ExtensionOptions for QuiverSettings {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "media.max_image_pixels" => {
                self.decode_limits.max_pixels = parse_count(key, value)?;
            }
            "media.max_image_alloc" => {
                self.decode_limits.max_alloc = parse_count(key, value)?;
            }
            "media.max_audio_alloc" => {
                self.audio_limits.max_alloc = parse_count(key, value)?;
            }
            "media.max_video_pixels" => {
                self.video_limits.max_pixels = parse_count(key, value)?;
            }
            "io.max_concurrent_requests" => {
                self.max_concurrent_requests =
                    usize::try_from(parse_count(key, value)?).unwrap_or(usize::MAX);
            }
            "inference.batch_size" => {
                self.inference.batch_size =
                    usize::try_from(parse_up_to(key, value, true, MAX_INFERENCE_BATCH)?)
                        .unwrap_or(usize::MAX);
            }
            "inference.replicas" => {
                self.inference.replicas =
                    usize::try_from(parse_up_to(key, value, true, MAX_REPLICAS)?)
                        .unwrap_or(usize::MAX);
            }
            "inference.queue_depth" => {
                self.inference.queue_depth =
                    usize::try_from(parse_up_to(key, value, false, MAX_QUEUE_DEPTH)?)
                        .unwrap_or(usize::MAX);
            }
            "inference.max_wait_ms" => {
                self.inference.max_wait_ms = parse_up_to(key, value, true, MAX_WAIT_MS)?;
            }
            "progress" => self.progress = parse_bool(key, value)?,
            "progress_interval_ms" => self.progress_interval_ms = parse_count(key, value)?,
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown setting quiver.{key}; known: {}",
                    self.entries()
                        .iter()
                        .map(|e| e.key.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Full keys (with the `quiver.` prefix): `SHOW` and
    /// `information_schema.df_settings` list them as they are.
    fn entries(&self) -> Vec<ConfigEntry> {
        vec![
            ConfigEntry {
                key: "quiver.media.max_image_pixels".to_string(),
                value: Some(self.decode_limits.max_pixels.to_string()),
                description: "Images whose header declares more pixels (width × height) are refused before decoding.",
            },
            ConfigEntry {
                key: "quiver.media.max_image_alloc".to_string(),
                value: Some(self.decode_limits.max_alloc.to_string()),
                description: "Bytes an image decoder may allocate for one image.",
            },
            ConfigEntry {
                key: "quiver.media.max_audio_alloc".to_string(),
                value: Some(self.audio_limits.max_alloc.to_string()),
                description: "Bytes of decoded samples (4 per sample and channel) one audio decode may hold; longer audio is refused before decoding.",
            },
            ConfigEntry {
                key: "quiver.media.max_video_pixels".to_string(),
                value: Some(self.video_limits.max_pixels.to_string()),
                description: "Videos whose frames have more pixels (width × height) are refused before decoding.",
            },
            ConfigEntry {
                key: "quiver.io.max_concurrent_requests".to_string(),
                value: Some(self.max_concurrent_requests.to_string()),
                description: "Requests url_download keeps in flight at once, per partition.",
            },
            ConfigEntry {
                key: "quiver.inference.batch_size".to_string(),
                value: Some(self.inference.batch_size.to_string()),
                description: "Rows per model call in InferenceExec, gathered across partitions; 0 takes the model's own batch_size.",
            },
            ConfigEntry {
                key: "quiver.inference.replicas".to_string(),
                value: Some(self.inference.replicas.to_string()),
                description: "Forward passes of one model running at once, each on its own worker thread over the same weights; 0 takes the model's own replicas (1 unless CREATE MODEL says).",
            },
            ConfigEntry {
                key: "quiver.inference.queue_depth".to_string(),
                value: Some(self.inference.queue_depth.to_string()),
                description: "Slices (a quarter of batch_size rows) each partition of InferenceExec keeps queued ahead of its consumer, at least.",
            },
            ConfigEntry {
                key: "quiver.inference.max_wait_ms".to_string(),
                value: Some(self.inference.max_wait_ms.to_string()),
                description: "Milliseconds a partly filled model batch waits for rows from other partitions before it runs.",
            },
            ConfigEntry {
                key: "quiver.progress".to_string(),
                value: Some(if self.progress { "on" } else { "off" }.to_string()),
                description: "Whether quiver serve sends NOTICE messages with a running statement's progress (rows sent, files read, model rows).",
            },
            ConfigEntry {
                key: "quiver.progress_interval_ms".to_string(),
                value: Some(self.progress_interval_ms.to_string()),
                description: "Milliseconds between two progress NOTICEs.",
            },
        ]
    }
}

impl ConfigExtension for QuiverSettings {
    const PREFIX: &'static str = "quiver";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_read_back() {
        let mut options = ConfigOptions::new();
        options.extensions.insert(QuiverSettings::default());
        options
            .set("quiver.media.max_image_pixels", "1000")
            .unwrap();
        assert_eq!(
            QuiverSettings::from_options(&options)
                .decode_limits
                .max_pixels,
            1000
        );
        let err = options
            .set("quiver.media.max_image_pixels", "lots")
            .unwrap_err()
            .to_string();
        assert!(err.contains("positive whole number"), "{err}");
        options.set("quiver.progress", "on").unwrap();
        assert!(QuiverSettings::from_options(&options).progress);
        let err = options
            .set("quiver.progress", "sometimes")
            .unwrap_err()
            .to_string();
        assert!(err.contains("on or off"), "{err}");
        let err = options.set("quiver.nope", "1").unwrap_err().to_string();
        assert!(err.contains("quiver.media.max_image_alloc"), "{err}");
    }
}
