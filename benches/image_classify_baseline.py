"""Baseline for benches/benches/image_classify.rs: EfficientNet-Lite0's
forward pass in PyTorch (CPU build, the `efficientnet_lite_pytorch` port,
the checkpoint the bench imports), batches of the given sizes of random
224x224 inputs, on every core PyTorch uses by default. Prints one line per
batch size: `torch batch=N images=M seconds=S`.

    python3 image_classify_baseline.py CHECKPOINT.pth 32[,8,...] [ROUNDS]
"""

import sys
import time

import torch
from efficientnet_lite_pytorch import EfficientNet


def main():
    checkpoint, sizes = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"), strict=False)
    model.eval()
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        x = torch.rand((size, 3, 224, 224), generator=gen) * 2 - 1
        with torch.inference_mode():
            model(x)  # warm up
            best = None
            for _ in range(rounds):
                started = time.perf_counter()
                model(x)
                took = time.perf_counter() - started
                best = took if best is None else min(best, took)
        print("torch batch=%d images=%d seconds=%.6f" % (size, size, best), flush=True)


if __name__ == "__main__":
    main()
