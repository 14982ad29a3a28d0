//! `log_mel_spectrogram` against numbers computed by Whisper's steps with
//! librosa (tests/reference/whisper_mel.py, committed output).

use quiver_media::mel::{MelParams, log_mel_spectrogram};

/// The signal of whisper_mel.py: two tones and a chirp, 0.25 s at 16 kHz.
fn reference_signal(n: usize, sr: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let tau = 2.0 * std::f64::consts::PI;
            let x = 0.4 * (tau * 440.0 * t).sin()
                + 0.2 * (tau * 3000.0 * t).sin()
                + 0.1 * (tau * (200.0 + 4000.0 * t) * t).sin();
            x as f32
        })
        .collect()
}

#[test]
fn matches_whisper_preprocessing() {
    let text = include_str!("reference/whisper_mel.json");
    let reference: serde_json::Value = serde_json::from_str(text).unwrap();
    let n = reference["samples"].as_u64().unwrap() as usize;
    let expected: Vec<f64> = reference["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let samples = reference_signal(n, 16000.0);
    let mel = log_mel_spectrogram(&samples, 16000, MelParams::default()).unwrap();
    assert_eq!([mel.n_mels, mel.n_frames], [80, 25]);
    assert_eq!(mel.data.len(), expected.len());
    let worst = mel
        .data
        .iter()
        .zip(&expected)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    // Log-scaled values of order 1; float32 FFTs differ in the 5th digit.
    assert!(
        worst < 2e-4,
        "largest difference from the reference: {worst}"
    );
}
