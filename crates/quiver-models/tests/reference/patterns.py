"""The test images the reference scripts share with the Rust tests
(`quiver_models::testing::pattern_image`): four patterns computed from
integer formulas, so both sides build them byte for byte."""

import numpy as np

MASK = (1 << 64) - 1


def splitmix(seed):
    """SplitMix64, as `quiver_models::testing::SplitMix`."""
    state = seed & MASK
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def pattern(kind, size):
    """Pattern `kind` (0 gradient, 1 checkerboard, 2 rings, 3 noise) as a
    `size` x `size` x 3 uint8 array."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    rng = splitmix(kind)
    for y in range(size):
        for x in range(size):
            if kind == 0:
                px = (x * 255 // (size - 1), y * 255 // (size - 1), 128)
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
