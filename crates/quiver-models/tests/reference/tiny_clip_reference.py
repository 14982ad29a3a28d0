"""Reference embeddings for quiver-models' CLIP: Hugging Face transformers'
CLIPModel on the tiny generated CLIP (`write_tiny_clip(dir, 5)`, the
deterministic weights the Rust test makes; run it with
QUIVER_KEEP_TINY_CLIP=DIR to keep a copy), for fixed token ids and fixed
images (the `pattern_image` formulas at 32x32), normalised as CLIP's
processor does. Run once and commit the output; the test never runs Python.

    venv/bin/pip install torch transformers
    QUIVER_KEEP_TINY_CLIP=/tmp/tinyclip cargo nextest run -p quiver-models -E 'binary(tiny_clip)'
    venv/bin/python tiny_clip_reference.py /tmp/tinyclip > tiny_clip_reference.json
"""

import json
import sys

import numpy as np
import tokenizers
import torch
import transformers
from transformers import CLIPModel
from patterns import pattern

SIZE = 32
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
TEXTS = ["a cat", "a photo of a dog on the grass", "", "boat"]


def unit(t):
    return (t / t.norm(dim=-1, keepdim=True)).tolist()


def main():
    d = sys.argv[1]
    model = CLIPModel.from_pretrained(d).eval()
    tok = tokenizers.Tokenizer.from_file(d + "/tokenizer.json")
    texts = []
    with torch.no_grad():
        for text in TEXTS:
            ids = tok.encode(text).ids
            out = model.get_text_features(input_ids=torch.tensor([ids]))
            out = getattr(out, "pooler_output", out)
            texts.append(unit(out)[0])
        images = []
        for k in range(4):
            x = torch.from_numpy(pattern(k, SIZE).astype(np.float32) / 255.0).permute(2, 0, 1)
            x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
            out = model.get_image_features(pixel_values=x[None])
            out = getattr(out, "pooler_output", out)
            images.append(unit(out)[0])
    json.dump(
        {"transformers": transformers.__version__, "texts": TEXTS, "text_embeddings": texts, "image_embeddings": images},
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
