"""Baseline for benches/benches/text_embed.rs: sentence-transformers on
PyTorch's CPU path embedding the same sentences with the same model
directory, at each batch size. Prints one line per batch size:

    st batch=<n> sentences=<count> seconds=<s>

Usage: python3 text_embed_baseline.py MODEL_DIR SENTENCES_FILE 16,64,256
(pip install sentence-transformers; the benchmark finds the interpreter in
QUIVER_BENCH_PYTHON, else python3).
"""

import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def main():
    model_dir, path, sizes = sys.argv[1], sys.argv[2], sys.argv[3]
    sentences = open(path, encoding="utf-8").read().splitlines()
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(sentences[:32], batch_size=32)  # warm up
    print(f"st torch={torch.__version__} threads={torch.get_num_threads()}", flush=True)
    for size in [int(s) for s in sizes.split(",")]:
        started = time.perf_counter()
        with torch.inference_mode():
            model.encode(sentences, batch_size=size, convert_to_numpy=True)
        seconds = time.perf_counter() - started
        print(f"st batch={size} sentences={len(sentences)} seconds={seconds:.3f}", flush=True)


if __name__ == "__main__":
    main()
