//! Log-mel spectrograms computed the way Whisper prepares its input:
//! a periodic Hann window of `n_fft` samples, frames every `hop` samples
//! over the signal padded by `n_fft / 2` reflected samples at each end
//! (`torch.stft(center=True)`), the last frame dropped, power spectra
//! projected onto librosa's Slaney-style mel filter bank (`htk=False`,
//! `norm='slaney'`, 0 Hz to half the sample rate), then
//! `log10(max(x, 1e-10))`, floored at 8 below the maximum and scaled as
//! `(x + 4) / 4`.

use realfft::RealFftPlanner;

use crate::MediaError;

/// A log-mel spectrogram: `n_mels` rows of `n_frames` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MelSpectrogram {
    /// Mel bands (rows).
    pub n_mels: usize,
    /// Time frames (columns).
    pub n_frames: usize,
    /// `n_mels × n_frames` values, band after band.
    pub data: Vec<f32>,
}

/// The parameters of [`log_mel_spectrogram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MelParams {
    /// Mel bands (Whisper: 80, or 128 for large-v3).
    pub n_mels: usize,
    /// FFT size and window length in samples (Whisper: 400).
    pub n_fft: usize,
    /// Samples between frames (Whisper: 160).
    pub hop: usize,
}

impl Default for MelParams {
    fn default() -> Self {
        Self {
            n_mels: 80,
            n_fft: 400,
            hop: 160,
        }
    }
}

/// Slaney's mel scale (librosa with `htk=False`): linear below 1 kHz
/// (`F_SP` Hz per mel), logarithmic above (`ln(6.4) / 27` per mel).
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// librosa's `filters.mel(sr, n_fft, n_mels)`: `n_mels` rows of
/// `n_fft / 2 + 1` weights, Slaney-normalised.
pub fn mel_filter_bank(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<Vec<f32>> {
    let bins = n_fft / 2 + 1;
    let sr = f64::from(sample_rate);
    let fft_freqs: Vec<f64> = (0..bins).map(|k| k as f64 * sr / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    (0..n_mels)
        .map(|m| {
            let (left, center, right) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
            let enorm = 2.0 / (right - left);
            fft_freqs
                .iter()
                .map(|f| {
                    let lower = (f - left) / (center - left);
                    let upper = (right - f) / (right - center);
                    (lower.min(upper).max(0.0) * enorm) as f32
                })
                .collect()
        })
        .collect()
}

/// Whisper's sample rate.
pub const WHISPER_RATE: u32 = 16_000;
/// Samples in one Whisper window (30 s).
pub const WHISPER_WINDOW: usize = 30 * WHISPER_RATE as usize;

/// Whisper's input for 16 kHz mono `samples`: 30-second windows (the last
/// padded with silence; no samples give one silent window), each a
/// log-mel spectrogram of `n_mels` bands × 3000 frames, band after band;
/// returns the values and the number of windows.
pub fn whisper_windows(samples: &[f32], n_mels: usize) -> Result<(Vec<f32>, usize), MediaError> {
    let params = MelParams {
        n_mels,
        ..MelParams::default()
    };
    let samples = if samples.is_empty() {
        &[0.0][..]
    } else {
        samples
    };
    let mut mels = vec![];
    let mut padded = vec![0f32; WHISPER_WINDOW];
    for chunk in samples.chunks(WHISPER_WINDOW) {
        padded[..chunk.len()].copy_from_slice(chunk);
        padded[chunk.len()..].fill(0.0);
        mels.extend(log_mel_spectrogram(&padded, WHISPER_RATE, params)?.data);
    }
    Ok((mels, samples.len().div_ceil(WHISPER_WINDOW)))
}

/// The log-mel spectrogram of mono `samples` at `sample_rate`.
///
/// Needs more than `n_fft / 2` samples (the reflection padding must fit).
pub fn log_mel_spectrogram(
    samples: &[f32],
    sample_rate: u32,
    params: MelParams,
) -> Result<MelSpectrogram, MediaError> {
    let MelParams { n_mels, n_fft, hop } = params;
    if n_mels == 0 || n_fft < 2 || hop == 0 {
        return Err(MediaError::Invalid(format!(
            "n_mels, n_fft and hop must be positive (n_fft at least 2), got {n_mels}, {n_fft}, {hop}"
        )));
    }
    if n_mels > 1024 || n_fft > 1 << 16 {
        return Err(MediaError::Invalid(format!(
            "n_mels must be at most 1024 and n_fft at most 65536, got {n_mels} and {n_fft}"
        )));
    }
    let pad = n_fft / 2;
    if samples.len() <= pad {
        return Err(MediaError::Invalid(format!(
            "a spectrogram with n_fft = {n_fft} needs more than {pad} samples, got {}",
            samples.len()
        )));
    }
    let len = samples.len();
    // Reflect-padded signal: x[pad] … x[1], x, x[len-2] … x[len-1-pad].
    let mut padded = Vec::with_capacity(len + 2 * pad);
    padded.extend((1..=pad).rev().map(|i| samples[i]));
    padded.extend_from_slice(samples);
    padded.extend((1..=pad).map(|i| samples[len - 1 - i]));
    let n_frames = len / hop;
    let window: Vec<f32> = (0..n_fft)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos()) as f32)
        .collect();
    let filters = mel_filter_bank(sample_rate, n_fft, n_mels);
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut power = vec![0f32; n_fft / 2 + 1];
    let mut data = vec![0f32; n_mels * n_frames];
    for t in 0..n_frames {
        let frame = &padded[t * hop..t * hop + n_fft];
        for ((dst, x), w) in input.iter_mut().zip(frame).zip(&window) {
            *dst = x * w;
        }
        fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch)
            .map_err(|e| MediaError::Invalid(format!("spectrogram FFT: {e}")))?;
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.norm_sqr();
        }
        for (m, weights) in filters.iter().enumerate() {
            let energy: f32 = weights.iter().zip(&power).map(|(w, p)| w * p).sum();
            data[m * n_frames + t] = energy.max(1e-10).log10();
        }
    }
    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in &mut data {
        *v = (v.max(max - 8.0) + 4.0) / 4.0;
    }
    Ok(MelSpectrogram {
        n_mels,
        n_frames,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whisper_windows_are_30_seconds_of_3000_frames() {
        let tone: Vec<f32> = (0..WHISPER_WINDOW + 16_000)
            .map(|i| (i as f32 * 0.05).sin())
            .collect();
        let (mels, n) = whisper_windows(&tone, 80).expect("mel");
        assert_eq!((n, mels.len()), (2, 2 * 80 * 3000));
        // The second window is mostly padding: quieter on average.
        let mean = |w: &[f32]| w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean(&mels[80 * 3000..]) < mean(&mels[..80 * 3000]));
        let (silent, one) = whisper_windows(&[], 80).expect("mel");
        assert_eq!((one, silent.len()), (1, 80 * 3000));
    }

    #[test]
    fn filter_bank_matches_librosa_shape() {
        let bank = mel_filter_bank(16000, 400, 80);
        assert_eq!(bank.len(), 80);
        assert!(bank.iter().all(|row| row.len() == 201));
        // Every band has some weight, and none is negative.
        assert!(bank.iter().all(|row| row.iter().any(|w| *w > 0.0)));
        assert!(bank.iter().flatten().all(|w| *w >= 0.0));
    }

    #[test]
    fn frames_and_errors() {
        let samples: Vec<f32> = (0..16000).map(|i| ((i as f32) * 0.05).sin()).collect();
        let mel = log_mel_spectrogram(&samples, 16000, MelParams::default()).unwrap();
        assert_eq!((mel.n_mels, mel.n_frames), (80, 100));
        assert_eq!(mel.data.len(), 8000);
        assert!(log_mel_spectrogram(&samples[..100], 16000, MelParams::default()).is_err());
        let zero_hop = MelParams {
            hop: 0,
            ..MelParams::default()
        };
        assert!(log_mel_spectrogram(&samples, 16000, zero_hop).is_err());
    }
}
