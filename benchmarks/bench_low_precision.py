"""The paper's low-precision trick on this machine: a training step in float32 against bfloat16 autocast +
channels_last, same model, same batch, side by side (alternating every round; CPU time of this thread with one
thread, else wall time).

    python benchmarks/bench_low_precision.py [--model tricks_resnet26nd] [--batch 128] [--size 32] [--threads 2]

The study's efficient rows use bfloat16 autocast + channels_last where ``plugins.reproduce.study.low_precision()``
says the CPU has bfloat16 units (AVX512-BF16 or AMX), float32 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

import timm_ext  # noqa: E402,F401  (registers tricks_* models)
from plugins.reproduce.study import low_precision  # noqa: E402


def _setup(model_name: str, batch: int, size: int, bf16: bool):
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, in_chans=3).train()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tricks_resnet26nd")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.model}, batch {a.batch} x {a.size} px; "
          f"bfloat16 units: {low_precision()}")
    setups = {"float32": _setup(a.model, a.batch, a.size, False),
              "bfloat16 + channels_last": _setup(a.model, a.batch, a.size, True)}
    times = {n: [] for n in setups}
    for r in range(2 + a.rounds):
        for n, step in (setups.items() if r % 2 else reversed(setups.items())):
            t0 = clock()
            step()
            if r >= 2:
                times[n].append(clock() - t0)
    base = statistics.median(times["float32"])
    for n, t in times.items():
        m = statistics.median(t)
        print(f"  {n:26s} median {m * 1e3:8.1f} ms/step  {a.batch / m:7.0f} images/s  speed-up {base / m:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
