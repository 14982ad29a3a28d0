"""Reference log-mel spectrogram for quiver-media's `log_mel_spectrogram`.

Follows openai-whisper's `log_mel_spectrogram` (whisper/audio.py) step by
step, with librosa standing in for torch: librosa's mel filter bank is the
one Whisper ships in mel_filters.npz, and `librosa.stft(center=True,
pad_mode="reflect", window="hann")` is `torch.stft` with a periodic Hann
window. Run once (`pip install librosa==0.11.0 numpy`) and commit the
output; the test never runs Python.

    python3 whisper_mel.py > whisper_mel.json
"""

import json

import librosa
import numpy as np

SR, N_FFT, HOP, N_MELS = 16000, 400, 160, 80
N = 4000  # 0.25 s -> 25 frames


def signal():
    # The same formula as `reference_signal` in tests/mel_reference.rs,
    # evaluated in float64 and stored as float32.
    t = np.arange(N, dtype=np.float64) / SR
    x = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3000.0 * t)
    x += 0.1 * np.sin(2 * np.pi * (200.0 + 4000.0 * t) * t)
    return x.astype(np.float32)


def whisper_log_mel(audio):
    stft = librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, window="hann",
                        center=True, pad_mode="reflect")
    magnitudes = np.abs(stft[..., :-1]) ** 2
    filters = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS)
    mel_spec = filters @ magnitudes
    log_spec = np.log10(np.clip(mel_spec, 1e-10, None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


mel = whisper_log_mel(signal())
print(json.dumps({
    "source": "librosa " + librosa.__version__ + ", whisper/audio.py steps",
    "sample_rate": SR, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
    "samples": N, "shape": list(mel.shape),
    "values": [round(float(v), 6) for v in mel.reshape(-1)],
}))
