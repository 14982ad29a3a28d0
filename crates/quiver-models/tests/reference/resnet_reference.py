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
from patterns import pattern

SIZE = 64
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def logits(block, path):
    model = ResNet(block, [1, 1, 1, 1], num_classes=10)
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    assert not unexpected, unexpected
    model.eval()
    x = torch.stack([torch.from_numpy(pattern(k, SIZE).astype(np.float32) / 255.0).permute(2, 0, 1) for k in range(4)])
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
