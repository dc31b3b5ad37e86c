"""JPEG decoders for the whole pipeline (``--mode pipeline``), compared on the same bytes: every
usable one of simplejpeg, PyTurboJPEG, OpenCV and Pillow (``visionbench.data.decode``) decodes
the shipped photos (or ``--data``'s JPEGs) in alternating rounds, each round every decoder in a
rotated order, so a drift of the machine falls on all of them. Prints each decoder's median
milliseconds per image [min-max over the rounds] and its ratio to Pillow and to the fastest,
and checks they decode the same pixels (libjpeg-turbo's decoders agree to the bit; Pillow's and
OpenCV's builds may differ by their IDCT settings: the largest difference is printed).

    python benchmarks/decoders.py [--rounds 7] [--repeats 20] [--data DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from visionbench.data.decode import installed, photos, read_jpegs

from _common import median, spread


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=20, help="decodes of every image per round")
    ap.add_argument("--data", type=Path, help="a folder of JPEGs [default: the shipped photos]")
    a = ap.parse_args()
    decoders = installed()
    paths = sorted(a.data.glob("*.jp*g")) if a.data else photos()
    blobs = read_jpegs(paths, decoders[-1])
    times: dict[str, list[float]] = {d.name: [] for d in decoders}
    for r in range(a.rounds):
        for d in decoders[r % len(decoders):] + decoders[:r % len(decoders)]:
            t = time.perf_counter()
            for _ in range(a.repeats):
                for blob in blobs:
                    d.decode(blob)
            times[d.name].append((time.perf_counter() - t) * 1e3 / (a.repeats * len(blobs)))
    pixels = sum(d.decode(b).shape[0] * d.decode(b).shape[1] for d in decoders[:1] for b in blobs)
    print(f"{len(blobs)} JPEGs, {pixels / len(blobs) / 1e3:.0f} kpixels each on average; "
          f"{a.rounds} alternating rounds of {a.repeats} decodes of each")
    fastest = min(median(v) for v in times.values())
    pillow = median(times["pillow"]) if "pillow" in times else None
    for d in decoders:
        m = median(times[d.name])
        diff = max(int(np.abs(d.decode(b).astype(int) - decoders[-1].decode(b).astype(int)).max())
                   for b in blobs)
        print(f"  {d.label:32s} {spread(times[d.name])} ms/image, {m / fastest:.2f}x the fastest"
              + (f", Pillow / it {pillow / m:.2f}" if pillow else "")
              + f"; largest pixel difference from {decoders[-1].name}: {diff}")


if __name__ == "__main__":
    main()
