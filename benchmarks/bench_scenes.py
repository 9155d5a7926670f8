"""Time the generation of fashion scenes: ``python -m benchmarks.bench_scenes [--count 2000] [--image-size 128]``.

Writes into a temporary folder (removed afterwards) and prints scenes per second, wall-clock, including the
Fashion-MNIST and photo loading, PNG writing, COCO json and preview.
"""

import argparse
import tempfile
import time

from plugins.data.scenes import generate_scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="train scenes (default 2000)")
    parser.add_argument("--image-size", type=int, default=128, help="scene side (default 128)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate_scenes(out, train=args.count, val=0, image_size=args.image_size, seed=0, progress=False)
        seconds = time.perf_counter() - start
    print(f"{args.count} scenes of {args.image_size}x{args.image_size}: {seconds:.1f} s, "
          f"{args.count / seconds:.0f} scenes/s")


if __name__ == "__main__":
    main()
