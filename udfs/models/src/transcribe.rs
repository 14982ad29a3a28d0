//! `transcribe(model, audio [, language])`: the text spoken in each clip,
//! with a Whisper model. `try_transcribe` gives NULL for audio that does
//! not decode instead of stopping the query.
//!
//! Each clip is decoded, mixed to mono, resampled to 16 kHz, cut into
//! 30-second windows (the last zero-padded) and turned into Whisper's
//! log-mel spectrogram (`quiver_media::mel`, the front end of
//! `audio_mel_spectrogram`) on the blocking pool; the windows' texts,
//! decoded greedily on the model's thread, are joined with spaces. Rows
//! are sent to the model in groups of at most [`WINDOWS_PER_CALL`]
//! windows, so a batch of long recordings never holds all its
//! spectrograms at once.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, StringBuilder, StructArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use quiver_media::MediaError;
use quiver_media::arrow_types::{is_pcm, read_pcm_ref};
use quiver_media::audio::PcmRef;
use quiver_media::audio::{AudioLimits, decode_audio, resample, to_mono};
use quiver_media::mel::{WHISPER_RATE, whisper_windows};
use quiver_models::{ModelInfo, ModelRegistry};
use quiver_settings::QuiverSettings;
use quiver_settings::args::{BinaryValues, check_arity, row_error, scalar_text};

use crate::Registry;
use crate::embed_text::{load_model, model_error};

const USAGE: &str = "transcribe(model, audio [, language])";

/// The most 30-second windows sent to the model in one call (about 1 MB
/// of spectrogram each).
pub const WINDOWS_PER_CALL: usize = 32;

/// `transcribe` (or, lenient, `try_transcribe`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Transcribe {
    name: &'static str,
    lenient: bool,
    signature: Signature,
    registry: Registry,
}

impl Transcribe {
    /// `transcribe`, or `try_transcribe` when `lenient`.
    pub fn new(registry: Arc<ModelRegistry>, lenient: bool) -> Self {
        Self {
            name: if lenient {
                "try_transcribe"
            } else {
                "transcribe"
            },
            lenient,
            signature: Signature::variadic_any(Volatility::Immutable),
            registry: Registry(registry),
        }
    }

    /// The model's name and its mel bands.
    fn speech_model(&self, arg: Option<&ScalarValue>) -> Result<(String, usize)> {
        self.registry
            .model_of(self.name, arg, "a speech model", |info| match info {
                ModelInfo::Speech(i) => Some(i.n_mels),
                _ => None,
            })
    }
}

/// The log-mel windows of one clip: `n_mels × 3000` values each.
fn windows(pcm: PcmRef<'_>, n_mels: usize) -> Result<(Vec<f32>, usize), MediaError> {
    let mono = to_mono(pcm);
    let pcm16 = if mono.sample_rate == WHISPER_RATE {
        mono
    } else {
        resample(mono.view(), WHISPER_RATE)?
    };
    whisper_windows(&pcm16.samples, n_mels)
}

/// One row made ready: `None` for NULL, else its windows or why its audio
/// could not be read.
type Prepared = Option<Result<(Vec<f32>, usize), MediaError>>;

fn prepare(audio: &ArrayRef, row: usize, n_mels: usize, limits: &AudioLimits) -> Prepared {
    if audio.is_null(row) {
        return None;
    }
    let result = if let Some(b) = BinaryValues::of(audio) {
        decode_audio(b.value(row), limits, None).and_then(|p| windows(p.view(), n_mels))
    } else if let Some(s) = audio.as_any().downcast_ref::<StructArray>() {
        // Decoded audio is read in place.
        match read_pcm_ref(s, row) {
            Ok(Some(p)) => windows(p, n_mels),
            Ok(None) => return None,
            Err(e) => Err(e),
        }
    } else {
        Err(MediaError::Invalid(format!(
            "audio must be encoded bytes or audio_decode's PCM, not {}",
            audio.data_type()
        )))
    };
    Some(result)
}

impl ScalarUDFImpl for Transcribe {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        check_arity(self.name, USAGE, 2, 3, args.arg_fields.len())?;
        self.speech_model(args.scalar_arguments.first().copied().flatten())?;
        let audio = args.arg_fields[1].data_type();
        let fits = matches!(
            audio,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
        ) || is_pcm(audio);
        if !fits {
            return plan_err!(
                "{}: the audio must be encoded bytes (bytea) or audio_decode's PCM, not {audio}",
                self.name
            );
        }
        Ok(Arc::new(Field::new(self.name, DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{} runs asynchronously", self.name)
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for Transcribe {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        check_arity(self.name, USAGE, 2, 3, args.args.len())?;
        let ColumnarValue::Scalar(model_arg) = &args.args[0] else {
            return plan_err!("{}: the model must be a constant string", self.name);
        };
        let (name, n_mels) = self.speech_model(Some(model_arg))?;
        let language = match args.args.get(2) {
            None => None,
            Some(ColumnarValue::Scalar(v)) => scalar_text(v),
            Some(_) => return plan_err!("{}: the language must be a constant", self.name),
        };
        let rows = args.number_rows;
        let audio = args.args[1].to_array(rows)?;
        if audio.logical_null_count() == rows {
            return Ok(ColumnarValue::Array(new_null_array(&DataType::Utf8, rows)));
        }
        let limits = QuiverSettings::from_options(&args.config_options).audio_limits;
        let model = load_model(&self.registry.0, &name, &args.config_options).await?;

        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut out = StringBuilder::new();
        let mut row = 0;
        while row < rows {
            // Prepare rows until the group holds enough windows.
            let mut group: Vec<(usize, Prepared)> = vec![];
            let mut in_group = 0;
            while row < rows && in_group < WINDOWS_PER_CALL {
                // A few clips at once, one per core.
                let end = (row + parallelism).min(rows);
                let tasks: Vec<_> = (row..end)
                    .map(|r| {
                        let audio = audio.clone();
                        tokio::task::spawn_blocking(move || {
                            (r, prepare(&audio, r, n_mels, &limits))
                        })
                    })
                    .collect();
                for task in tasks {
                    let (r, prepared) = task
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    if let Some(Ok((_, n))) = &prepared {
                        in_group += n;
                    }
                    group.push((r, prepared));
                }
                row = end;
            }
            let mut mels = vec![];
            let mut counts = vec![];
            for (r, prepared) in &mut group {
                match prepared {
                    Some(Ok((m, n))) => {
                        mels.append(m);
                        counts.push(*n);
                    }
                    Some(Err(_)) if self.lenient => *prepared = None,
                    Some(Err(e)) => {
                        let e = std::mem::replace(e, MediaError::Invalid(String::new()));
                        return Err(row_error(self.name, *r, e));
                    }
                    None => {}
                }
            }
            let texts = if counts.is_empty() {
                vec![]
            } else {
                model
                    .transcribe(mels, counts, language.clone())
                    .await
                    .map_err(model_error)?
            };
            let mut texts = texts.into_iter();
            for (_, prepared) in &group {
                match prepared {
                    Some(Ok(_)) => out.append_option(texts.next()),
                    _ => out.append_null(),
                }
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(array))
    }
}
