//! SQL functions over audio.
//!
//! | function | returns |
//! |---|---|
//! | `audio_decode(audio [, sample_rate [, mono]])` | decoded audio (PCM struct) |
//! | `audio_resample(audio, sample_rate)` | decoded audio |
//! | `audio_to_mono(audio)` | decoded audio |
//! | `audio_slice(audio, start_s, end_s)` | decoded audio |
//! | `audio_encode(audio, 'wav'\|'flac')` | encoded bytes (16-bit) |
//! | `audio_duration(audio)`, `audio_rms(audio)`, `audio_peak(audio)` | `float64` |
//! | `audio_mel_spectrogram(audio [, n_mels [, n_fft [, hop]]])` | `arrow.variable_shape_tensor` `[n_mels, n_frames]` |
//! | `audio_segments(audio_or_seconds, window_s [, hop_s])` | list of `{index, start_s, end_s}`, for `unnest` |
//!
//! `audio` is encoded bytes (the `audio` column of `read_audio`, any
//! `bytea`) or decoded audio another function returned. Decoded audio is
//! `Struct{sample_rate u32, channels u16, samples List<Float32>}` with the
//! samples **interleaved** (`L R L R …`), in `[-1, 1]`. Decoding runs under
//! `quiver.media.max_audio_alloc`. NULL in gives NULL out (a NULL optional
//! argument takes its default); a bad file is an error naming the row, and
//! every function that reads audio has a `try_` twin that returns NULL
//! instead.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryViewBuilder, Float64Array, Float64Builder, ListArray, StructArray,
    UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use quiver_media::arrow_types::{
    PcmColumn, audio_field, is_pcm, mel_array, mel_field, pcm_field, read_pcm_ref,
};
use quiver_media::audio::PcmRef;
use quiver_media::audio::{
    self, AudioEncoding, Window, decode_audio, decode_audio_into, probe_audio_bytes, resample,
    to_mono,
};
use quiver_media::mel::{MelParams, MelSpectrogram, log_mel_spectrogram};
use quiver_media::{AudioLimits, MediaError, Pcm};
use quiver_settings::QuiverSettings;
use quiver_settings::args::{
    BinaryValues, check_arity, columnar_result, is_binary, is_integer, is_text, rest_args,
    row_error, scalar_bool, scalar_float, scalar_int, scalar_text,
};

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioOp {
    /// `audio_decode(audio [, sample_rate [, mono]])`.
    Decode,
    /// `audio_resample(audio, sample_rate)`.
    Resample,
    /// `audio_to_mono(audio)`.
    ToMono,
    /// `audio_slice(audio, start_s, end_s)`.
    Slice,
    /// `audio_encode(audio, format)`.
    Encode,
    /// `audio_duration(audio)`.
    Duration,
    /// `audio_rms(audio)`.
    Rms,
    /// `audio_peak(audio)`.
    Peak,
    /// `audio_mel_spectrogram(audio [, n_mels [, n_fft [, hop]]])`.
    MelSpectrogram,
    /// `audio_segments(audio_or_seconds, window_s [, hop_s])`.
    Segments,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Int,
    Float,
    Text,
    Bool,
}

/// Name, kind, optional, meaning.
type ParamSpec = (&'static str, Param, bool, &'static str);

struct Spec {
    base: &'static str,
    params: &'static [ParamSpec],
    returns: &'static str,
    description: &'static str,
    example: &'static str,
}

impl AudioOp {
    /// Every function.
    pub const ALL: [AudioOp; 10] = [
        AudioOp::Decode,
        AudioOp::Resample,
        AudioOp::ToMono,
        AudioOp::Slice,
        AudioOp::Encode,
        AudioOp::Duration,
        AudioOp::Rms,
        AudioOp::Peak,
        AudioOp::MelSpectrogram,
        AudioOp::Segments,
    ];

    fn spec(self) -> Spec {
        use Param::*;
        match self {
            AudioOp::Decode => Spec {
                base: "audio_decode",
                params: &[
                    (
                        "sample_rate",
                        Int,
                        true,
                        "resample to this rate (Hz); default: the file's",
                    ),
                    ("mono", Bool, true, "mix down to one channel; default false"),
                ],
                returns: "decoded audio: struct{sample_rate, channels, samples (interleaved float32)}",
                description: "Decodes WAV, FLAC, MP3, Ogg Vorbis or AAC/M4A to float samples in [-1, 1], optionally mixed to mono and resampled (rubato, FFT). audio_decode(audio, 16000, true) is the input speech models expect.",
                example: "SELECT audio_decode(audio, 16000, true) FROM read_audio('clips/')",
            },
            AudioOp::Resample => Spec {
                base: "audio_resample",
                params: &[("sample_rate", Int, false, "target rate in Hz")],
                returns: "decoded audio",
                description: "Resamples to sample_rate with rubato's band-limited FFT resampler.",
                example: "SELECT audio_resample(audio, 16000) FROM read_audio('clips/')",
            },
            AudioOp::ToMono => Spec {
                base: "audio_to_mono",
                params: &[],
                returns: "decoded audio",
                description: "Mixes all channels down to one (their mean).",
                example: "SELECT audio_to_mono(audio) FROM read_audio('clips/')",
            },
            AudioOp::Slice => Spec {
                base: "audio_slice",
                params: &[
                    ("start_s", Float, false, "start in seconds"),
                    (
                        "end_s",
                        Float,
                        false,
                        "end in seconds (clipped to the clip's length)",
                    ),
                ],
                returns: "decoded audio",
                description: "The samples from start_s to end_s. On encoded audio the decoder seeks to start_s (sample-accurately, where the container allows; else it decodes from the start) and stops at end_s, so a window of a recording too long to decode whole still works and costs what the window costs.",
                example: "SELECT audio_slice(audio, 1.0, 2.5) FROM read_audio('clips/')",
            },
            AudioOp::Encode => Spec {
                base: "audio_encode",
                params: &[("format", Text, false, "'wav' or 'flac' (16-bit)")],
                returns: "encoded audio bytes",
                description: "Encodes audio as 16-bit WAV or FLAC.",
                example: "SELECT audio_encode(audio_decode(audio, 16000, true), 'flac') FROM read_audio('clips/')",
            },
            AudioOp::Duration => Spec {
                base: "audio_duration",
                params: &[],
                returns: "float64 seconds",
                description: "The length in seconds: from the headers for encoded audio (decoding only when they do not say), from the samples for decoded audio.",
                example: "SELECT sum(audio_duration(audio)) FROM read_audio('clips/')",
            },
            AudioOp::Rms => Spec {
                base: "audio_rms",
                params: &[],
                returns: "float64",
                description: "Root mean square of all samples (all channels), 0 for silence.",
                example: "SELECT avg(audio_rms(audio)) FROM read_audio('clips/')",
            },
            AudioOp::Peak => Spec {
                base: "audio_peak",
                params: &[],
                returns: "float64",
                description: "Largest absolute sample value (1.0 is full scale).",
                example: "SELECT path FROM read_audio('clips/') WHERE audio_peak(audio) >= 0.99",
            },
            AudioOp::MelSpectrogram => Spec {
                base: "audio_mel_spectrogram",
                params: &[
                    ("n_mels", Int, true, "mel bands, default 80"),
                    (
                        "n_fft",
                        Int,
                        true,
                        "FFT and window length in samples, default 400",
                    ),
                    ("hop", Int, true, "samples between frames, default 160"),
                ],
                returns: "arrow.variable_shape_tensor struct{data, shape} of shape [n_mels, n_frames], row-major",
                description: "Whisper's log-mel spectrogram: periodic Hann window, centred STFT with reflect padding, librosa's Slaney mel filter bank, log10, floored 8 below the maximum, (x + 4) / 4. Stereo is mixed to mono first; Whisper expects 16 kHz: audio_mel_spectrogram(audio_decode(audio, 16000, true)).",
                example: "SELECT audio_mel_spectrogram(audio_decode(audio, 16000, true)).shape FROM read_audio('clips/')",
            },
            AudioOp::Segments => Spec {
                base: "audio_segments",
                params: &[
                    ("window_s", Float, false, "segment length in seconds"),
                    (
                        "hop_s",
                        Float,
                        true,
                        "seconds between segment starts; default window_s",
                    ),
                ],
                returns: "list of struct{index, start_s, end_s}",
                description: "Cuts a clip (or a length in seconds) into windows starting every hop_s seconds, the last one clipped to the end; unnest it for one row per window and cut each with audio_slice.",
                example: "SELECT path, unnest(audio_segments(duration, 30.0)) AS seg FROM read_audio('talks/')",
            },
        }
    }
}

/// One audio function; see the crate docs.
#[derive(Debug)]
pub struct AudioUdf {
    name: String,
    op: AudioOp,
    lenient: bool,
    signature: Signature,
    doc: Documentation,
}

impl PartialEq for AudioUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for AudioUdf {}
impl std::hash::Hash for AudioUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl AudioUdf {
    /// The function for `op`; `lenient` makes the `try_` twin.
    pub fn new(op: AudioOp, lenient: bool) -> Self {
        let spec = op.spec();
        let name = if lenient {
            format!("try_{}", spec.base)
        } else {
            spec.base.to_string()
        };
        let first = if op == AudioOp::Segments {
            "audio_or_seconds"
        } else {
            "audio"
        };
        let mut syntax = format!("{name}({first}");
        for (p, _, optional, _) in spec.params {
            if *optional {
                syntax.push_str(&format!(" [, {p}]"));
            } else {
                syntax.push_str(&format!(", {p}"));
            }
        }
        syntax.push(')');
        let on_bad = if lenient {
            "NULL when the audio cannot be read or the arguments do not fit it".to_string()
        } else {
            format!(
                "an error naming the row when the audio cannot be read (try_{name} returns NULL instead)"
            )
        };
        let mut doc = Documentation::builder(
            DocSection {
                include: true,
                label: "Audio Functions",
                description: None,
            },
            format!(
                "{} Returns {}. NULL input gives NULL; {on_bad}.",
                spec.description, spec.returns
            ),
            syntax,
        )
        .with_argument(
            first,
            if op == AudioOp::Segments {
                "encoded audio, decoded audio, or a length in seconds"
            } else {
                "encoded audio bytes (bytea) or decoded audio from another audio function"
            },
        );
        for (p, _, _, what) in spec.params {
            doc = doc.with_argument(*p, *what);
        }
        let doc = doc
            .with_sql_example(spec.example.replace(spec.base, &name))
            .build();
        let mut names = vec![first.to_string()];
        names.extend(spec.params.iter().map(|p| p.0.to_string()));
        let signature = Signature::user_defined(Volatility::Immutable);
        // Named arguments (`n_mels => 128`); user-defined signatures
        // accept any names, so this cannot fail.
        let signature = signature
            .clone()
            .with_parameter_names(names)
            .unwrap_or(signature);
        Self {
            name,
            op,
            lenient,
            signature,
            doc,
        }
    }

    fn params(&self) -> &'static [ParamSpec] {
        self.op.spec().params
    }

    /// Checks constant arguments at planning time, so that a wrong format
    /// name is an error even in a `try_` twin.
    fn check_constants(&self, scalars: &[Option<&ScalarValue>]) -> Result<()> {
        if self.op == AudioOp::Encode
            && let Some(Some(v)) = scalars.get(1)
            && let Some(text) = scalar_text(v)
            && let Err(e) = AudioEncoding::parse(&text)
        {
            return plan_err!("{}: {e}", self.name);
        }
        Ok(())
    }
}

/// The audio of one row.
enum Input<'a> {
    Encoded(&'a [u8]),
    Decoded(PcmRef<'a>),
    Seconds(f64),
}

/// Decoded audio, owned (just decoded) or borrowed (an input column).
enum Samples<'a> {
    Owned(Pcm),
    Borrowed(PcmRef<'a>),
}

impl Samples<'_> {
    fn view(&self) -> PcmRef<'_> {
        match self {
            Samples::Owned(p) => p.view(),
            Samples::Borrowed(p) => *p,
        }
    }

    /// Mixed down to one channel (the same samples when already mono).
    fn mono(self) -> Self {
        if self.view().channels <= 1 {
            self
        } else {
            Samples::Owned(to_mono(self.view()))
        }
    }
}

impl<'a> Input<'a> {
    fn samples(self, limits: &AudioLimits) -> Result<Samples<'a>, MediaError> {
        match self {
            Input::Encoded(bytes) => decode_audio(bytes, limits, None).map(Samples::Owned),
            Input::Decoded(p) => Ok(Samples::Borrowed(p)),
            Input::Seconds(_) => Err(MediaError::Invalid(
                "a number of seconds is not audio".to_string(),
            )),
        }
    }
}

/// What one row produces.
enum Out {
    /// Decoded audio whose `len` samples were appended to the column.
    Pcm {
        rate: u32,
        channels: u16,
        len: usize,
    },
    Bytes(Vec<u8>),
    Float(f64),
    Mel(MelSpectrogram),
    Segments(Vec<(f64, f64)>),
}

/// At most this many segments per row.
const MAX_SEGMENTS: usize = 1_000_000;

fn int_param(values: &[ScalarValue], i: usize, name: &str) -> Result<Option<usize>, MediaError> {
    match values.get(i).and_then(scalar_int) {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(usize::try_from(v).unwrap_or(usize::MAX))),
        Some(v) => Err(MediaError::Invalid(format!(
            "{name} must be greater than 0, got {v}"
        ))),
    }
}

fn rate_param(values: &[ScalarValue], i: usize) -> Result<Option<u32>, MediaError> {
    match int_param(values, i, "sample_rate")? {
        None => Ok(None),
        Some(r) if r <= 768_000 => Ok(Some(r as u32)),
        Some(r) => Err(MediaError::Invalid(format!(
            "sample_rate must be at most 768000, got {r}"
        ))),
    }
}

fn float_param(values: &[ScalarValue], i: usize) -> Option<f64> {
    values.get(i).and_then(scalar_float)
}

/// Fixed windows over `duration` seconds: `(start, end)` pairs.
fn segments(duration: f64, window: f64, hop: f64) -> Result<Vec<(f64, f64)>, MediaError> {
    let positive = window > 0.0 && hop > 0.0 && window.is_finite() && hop.is_finite();
    if !positive {
        return Err(MediaError::Invalid(format!(
            "window_s and hop_s must be positive, got {window} and {hop}"
        )));
    }
    let valid = duration >= 0.0 && duration.is_finite();
    if !valid {
        return Err(MediaError::Invalid(format!(
            "a duration must be a non-negative number of seconds, got {duration}"
        )));
    }
    let count = (duration / hop).ceil();
    if count > MAX_SEGMENTS as f64 {
        return Err(MediaError::Invalid(format!(
            "{duration} s in steps of {hop} s makes more than {MAX_SEGMENTS} segments"
        )));
    }
    Ok((0..count as usize)
        .map(|i| i as f64 * hop)
        .filter(|start| *start < duration)
        .map(|start| (start, (start + window).min(duration)))
        .collect())
}

/// Appends decoded audio to the column being built.
fn append(column: &mut PcmColumn, pcm: PcmRef<'_>) -> Out {
    column.samples.extend_from_slice(pcm.samples);
    Out::Pcm {
        rate: pcm.sample_rate,
        channels: pcm.channels,
        len: pcm.samples.len(),
    }
}

impl AudioUdf {
    fn apply(
        &self,
        input: Input<'_>,
        args: &[ScalarValue],
        limits: &AudioLimits,
        column: &mut PcmColumn,
    ) -> Result<Out, MediaError> {
        Ok(match self.op {
            AudioOp::Decode => {
                let rate = rate_param(args, 0)?;
                let mono = args.get(1).and_then(scalar_bool).unwrap_or(false);
                if let (Input::Encoded(bytes), false, None) = (&input, mono, rate) {
                    // Straight into the column: no copy of the samples.
                    let start = column.samples.len();
                    let (rate, channels) =
                        decode_audio_into(bytes, limits, None, &mut column.samples)?;
                    return Ok(Out::Pcm {
                        rate,
                        channels,
                        len: column.samples.len() - start,
                    });
                }
                let mut samples = input.samples(limits)?;
                if mono {
                    samples = samples.mono();
                }
                if let Some(r) = rate {
                    samples = Samples::Owned(resample(samples.view(), r)?);
                }
                append(column, samples.view())
            }
            AudioOp::Resample => {
                let rate = rate_param(args, 0)?.unwrap_or(0);
                append(
                    column,
                    resample(input.samples(limits)?.view(), rate)?.view(),
                )
            }
            AudioOp::ToMono => append(column, input.samples(limits)?.mono().view()),
            AudioOp::Slice => {
                let start = float_param(args, 0).unwrap_or(0.0);
                let end = float_param(args, 1).unwrap_or(0.0);
                let window = Window::new(start, end)?;
                match input {
                    Input::Encoded(bytes) => {
                        let start = column.samples.len();
                        let (rate, channels) =
                            decode_audio_into(bytes, limits, Some(window), &mut column.samples)?;
                        Out::Pcm {
                            rate,
                            channels,
                            len: column.samples.len() - start,
                        }
                    }
                    other => append(
                        column,
                        audio::slice(other.samples(limits)?.view(), window).view(),
                    ),
                }
            }
            AudioOp::Encode => {
                let encoding =
                    AudioEncoding::parse(&args.first().and_then(scalar_text).unwrap_or_default())?;
                Out::Bytes(audio::encode_audio(
                    input.samples(limits)?.view(),
                    encoding,
                )?)
            }
            AudioOp::Duration => Out::Float(match input {
                Input::Encoded(bytes) => match probe_audio_bytes(bytes)?.duration {
                    Some(d) => d,
                    None => decode_audio(bytes, limits, None)?.duration(),
                },
                Input::Seconds(s) => s,
                Input::Decoded(p) => p.duration(),
            }),
            AudioOp::Rms => Out::Float(audio::rms(input.samples(limits)?.view().samples)),
            AudioOp::Peak => Out::Float(audio::peak(input.samples(limits)?.view().samples)),
            AudioOp::MelSpectrogram => {
                let d = MelParams::default();
                let params = MelParams {
                    n_mels: int_param(args, 0, "n_mels")?.unwrap_or(d.n_mels),
                    n_fft: int_param(args, 1, "n_fft")?.unwrap_or(d.n_fft),
                    hop: int_param(args, 2, "hop")?.unwrap_or(d.hop),
                };
                let mono = input.samples(limits)?.mono();
                let pcm = mono.view();
                Out::Mel(log_mel_spectrogram(pcm.samples, pcm.sample_rate, params)?)
            }
            AudioOp::Segments => {
                let window = float_param(args, 0).unwrap_or(0.0);
                let hop = float_param(args, 1).unwrap_or(window);
                let duration = match input {
                    Input::Seconds(s) => s,
                    Input::Decoded(p) => p.duration(),
                    Input::Encoded(bytes) => match probe_audio_bytes(bytes)?.duration {
                        Some(d) => d,
                        None => decode_audio(bytes, limits, None)?.duration(),
                    },
                };
                Out::Segments(segments(duration, window, hop)?)
            }
        })
    }

    fn build(&self, outs: Vec<Option<Out>>, mut column: PcmColumn) -> Result<ArrayRef> {
        Ok(match self.op {
            AudioOp::Encode => {
                let mut b = BinaryViewBuilder::new();
                for o in outs {
                    match o {
                        Some(Out::Bytes(v)) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            AudioOp::Duration | AudioOp::Rms | AudioOp::Peak => {
                let mut b = Float64Builder::with_capacity(outs.len());
                for o in outs {
                    b.append_option(match o {
                        Some(Out::Float(v)) => Some(v),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            AudioOp::MelSpectrogram => {
                let values: Vec<Option<MelSpectrogram>> = outs
                    .into_iter()
                    .map(|o| match o {
                        Some(Out::Mel(m)) => Some(m),
                        _ => None,
                    })
                    .collect();
                Arc::new(mel_array(&values))
            }
            AudioOp::Segments => segments_array(outs)?,
            _ => {
                for o in outs {
                    match o {
                        Some(Out::Pcm {
                            rate,
                            channels,
                            len,
                        }) => column.push(rate, channels, len),
                        _ => column.push_null(),
                    }
                }
                Arc::new(column.finish())
            }
        })
    }
}

fn segment_fields() -> Fields {
    Fields::from(vec![
        Field::new("index", DataType::UInt32, false),
        Field::new("start_s", DataType::Float64, false),
        Field::new("end_s", DataType::Float64, false),
    ])
}

fn segments_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(segment_fields()),
        false,
    )))
}

fn segments_array(outs: Vec<Option<Out>>) -> Result<ArrayRef> {
    let mut lengths = Vec::with_capacity(outs.len());
    let mut valid = Vec::with_capacity(outs.len());
    let (mut index, mut start, mut end) = (vec![], vec![], vec![]);
    for o in outs {
        match o {
            Some(Out::Segments(s)) => {
                lengths.push(s.len());
                valid.push(true);
                for (i, (a, b)) in s.into_iter().enumerate() {
                    index.push(u32::try_from(i).unwrap_or(u32::MAX));
                    start.push(a);
                    end.push(b);
                }
            }
            _ => {
                lengths.push(0);
                valid.push(false);
            }
        }
    }
    let items = StructArray::try_new(
        segment_fields(),
        vec![
            Arc::new(UInt32Array::from(index)),
            Arc::new(Float64Array::from(start)),
            Arc::new(Float64Array::from(end)),
        ],
        None,
    )?;
    let DataType::List(item) = segments_type() else {
        return exec_err!("audio_segments: the list type is a list");
    };
    Ok(Arc::new(ListArray::try_new(
        item,
        OffsetBuffer::from_lengths(lengths),
        Arc::new(items),
        Some(valid.into()),
    )?))
}

impl ScalarUDFImpl for AudioUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let params = self.params();
        let required = 1 + params.iter().filter(|p| !p.2).count();
        let usage = self.doc.syntax_example.clone();
        check_arity(
            &self.name,
            &usage,
            required,
            1 + params.len(),
            arg_types.len(),
        )?;
        let mut out = Vec::with_capacity(arg_types.len());
        let first = &arg_types[0];
        if first == &DataType::Null {
            out.push(DataType::Binary);
        } else if is_binary(first) {
            // Any binary layout is read as it is, without a cast.
            out.push(first.clone());
        } else if is_pcm(first) {
            out.push(first.clone());
        } else if self.op == AudioOp::Segments && first.is_numeric() {
            out.push(DataType::Float64);
        } else {
            return plan_err!(
                "{}: the audio argument must be encoded audio (bytea) or decoded audio{}, got {first}: {usage}",
                self.name,
                if self.op == AudioOp::Segments {
                    " or a number of seconds"
                } else {
                    ""
                }
            );
        }
        for ((pname, kind, _, _), t) in params.iter().zip(&arg_types[1..]) {
            let ok = match kind {
                Param::Int => is_integer(t),
                Param::Float => t.is_numeric() || t == &DataType::Null,
                Param::Text => is_text(t),
                Param::Bool => matches!(t, DataType::Boolean | DataType::Null),
            };
            if !ok {
                return plan_err!("{}: argument {pname} cannot be {t}: {usage}", self.name);
            }
            out.push(match kind {
                Param::Int => DataType::Int64,
                Param::Float => DataType::Float64,
                Param::Text => DataType::Utf8,
                Param::Bool => DataType::Boolean,
            });
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        // return_field_from_args decides; this is never called by the planner.
        plan_err!(
            "{}: the return type comes from return_field_from_args",
            self.name
        )
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.check_constants(args.scalar_arguments)?;
        let field = match self.op {
            AudioOp::Encode => audio_field(&self.name),
            AudioOp::Duration | AudioOp::Rms | AudioOp::Peak => {
                Field::new(&self.name, DataType::Float64, true)
            }
            AudioOp::MelSpectrogram => mel_field(&self.name),
            AudioOp::Segments => Field::new(&self.name, segments_type(), true),
            _ => pcm_field(&self.name),
        };
        Ok(Arc::new(field))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some((first, rest)) = args.args.split_first() else {
            return plan_err!("{}: missing the audio argument", self.name);
        };
        let first = first.to_array(rows)?;
        let extra = rest_args(&args.args);
        let limits = QuiverSettings::from_options(&args.config_options).audio_limits;
        // An untyped NULL column reads as NULLs below.
        let binary = BinaryValues::of(&first);
        let decoded = first.as_any().downcast_ref::<StructArray>();
        let seconds = first.as_any().downcast_ref::<Float64Array>();
        let mut outs = Vec::with_capacity(rows);
        let mut column = PcmColumn::default();
        if let (AudioOp::Decode, true, Some(binary)) = (self.op, rest.is_empty(), binary) {
            // Plain decoding writes every row into one buffer: size it
            // once from the headers (about 2 µs a file) instead of letting
            // it grow and move.
            let declared: u64 = (0..rows)
                .filter(|r| !first.is_null(*r))
                .filter_map(|r| probe_audio_bytes(binary.value(r)).ok())
                .map(|i| i.frames.unwrap_or(0) * u64::from(i.channels.unwrap_or(1)))
                .sum();
            let cap = declared.min(limits.max_alloc / 4);
            column.samples.reserve(usize::try_from(cap).unwrap_or(0));
        }
        for row in 0..rows {
            if first.is_null(row) {
                outs.push(None);
                continue;
            }
            let values = extra
                .iter()
                .map(|a| a.get(row))
                .collect::<Result<Vec<_>>>()?;
            // A NULL required argument gives NULL.
            let null_arg = self
                .params()
                .iter()
                .zip(&values)
                .any(|((_, _, optional, _), v)| !optional && v.is_null());
            if null_arg {
                outs.push(None);
                continue;
            }
            let input = match (binary, decoded, seconds) {
                (Some(b), _, _) => Ok(Input::Encoded(b.value(row))),
                (None, Some(s), _) => read_pcm_ref(s, row).map(|p| match p {
                    Some(p) => Input::Decoded(p),
                    None => Input::Encoded(&[]),
                }),
                (None, None, Some(f)) => Ok(Input::Seconds(f.value(row))),
                _ => return exec_err!("{}: unexpected input type", self.name),
            };
            match input.and_then(|input| self.apply(input, &values, &limits, &mut column)) {
                Ok(out) => outs.push(Some(out)),
                Err(_) if self.lenient => outs.push(None),
                Err(e) => return Err(row_error(&self.name, row, e)),
            }
        }
        let array = self.build(outs, column)?;
        columnar_result(&args.args, array)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }
}

/// Every audio function and its `try_` twin.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    [false, true]
        .into_iter()
        .flat_map(|lenient| {
            AudioOp::ALL
                .into_iter()
                .map(move |op| Arc::new(ScalarUDF::new_from_impl(AudioUdf::new(op, lenient))))
        })
        .collect()
}

/// Registers [`functions`] with a context.
pub fn register_all(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(f.as_ref().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_clip() {
        let s = segments(65.0, 30.0, 30.0).unwrap();
        assert_eq!(s, vec![(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]);
        let s = segments(10.0, 4.0, 2.0).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[4], (8.0, 10.0));
        assert!(segments(0.0, 1.0, 1.0).unwrap().is_empty());
        assert!(segments(10.0, 0.0, 1.0).is_err());
        assert!(segments(1e12, 1.0, 1e-6).is_err());
    }
}
