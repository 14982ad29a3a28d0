"""Reference logits for quiver-models' ResNet: torchvision's ResNet
(BasicBlock and Bottleneck, one block per stage, 10 classes) with the
deterministic weights `write_resnet(dir, [1, 1, 1, 1], …, 10, 64, 21)`
generates (run the Rust test with QUIVER_KEEP_RESNET=DIR to keep copies),
on the four 64x64 `pattern_image` patterns, normalised with ImageNet's mean
and deviation. Run once and commit the output; the test never runs Python.

    venv/bin/pip install torch torchvision safetensors
    QUIVER_KEEP_RESNET=/tmp/resnet cargo nextest run -p quiver-models -E 'binary(resnet)'
    venv/bin/python resnet_reference.py /tmp/resnet > resnet_reference.json
"""

import json
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import load_file
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

SIZE = 64
MASK = (1 << 64) - 1
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def splitmix(seed):
    state = seed & MASK
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def pattern(kind):
    img = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    rng = splitmix(kind)
    for y in range(SIZE):
        for x in range(SIZE):
            if kind == 0:
                px = (x * 255 // (SIZE - 1), y * 255 // (SIZE - 1), 128)
            elif kind == 1:
                v = 255 if ((x // 16) + (y // 16)) % 2 else 0
                px = (v, v // 2, 255 - v)
            elif kind == 2:
                d2 = (x - 112) ** 2 + (y - 112) ** 2
                v = (d2 // 64) % 256
                px = (v, 255 - v, (v * 3) % 256)
            else:
                z = next(rng)
                px = (z & 255, (z >> 8) & 255, (z >> 16) & 255)
            img[y, x] = px
    return img


def logits(block, path):
    model = ResNet(block, [1, 1, 1, 1], num_classes=10)
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    assert not unexpected, unexpected
    model.eval()
    x = torch.stack([torch.from_numpy(pattern(k).astype(np.float32) / 255.0).permute(2, 0, 1) for k in range(4)])
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        return [[round(v, 6) for v in row] for row in model(x).tolist()]


def main():
    d = sys.argv[1]
    json.dump(
        {
            "torchvision": torchvision.__version__,
            "basic": logits(BasicBlock, d + "/basic/model.safetensors"),
            "bottleneck": logits(Bottleneck, d + "/bottleneck/model.safetensors"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
