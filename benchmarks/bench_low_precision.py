"""The paper's low-precision trick on this machine: a training step in float32 against bfloat16 autocast +
channels_last, same model, same batch, side by side (alternating every round; CPU time of this thread with one
thread, else wall time).

    python benchmarks/bench_low_precision.py [--model tricks_resnet26nd] [--batch 128] [--size 32] [--threads 2]
    python benchmarks/bench_low_precision.py --sweep   # the study's models and tricks_resnet18d/50d, batch 8 and 128

The study's efficient rows use bfloat16 autocast + channels_last where ``plugins.reproduce.study.low_precision()``
says the CPU has bfloat16 units (AVX512-BF16 or AMX), float32 otherwise. Whether it is faster depends on the model
and the batch (tricks-train measures it at start of an ``--amp`` run on a CPU and says so when it is slower);
``--sweep`` prints the table.
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


def _setup(model_name: str, batch: int, size: int, bf16: bool, channels_last: bool | None = None):
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, in_chans=3).train()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if bf16 if channels_last is None else channels_last:
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


SWEEP_MODELS = ("tricks_resnet26nb", "tricks_resnet26nd", "tricks_resnet50nd", "tricks_resnet18d", "tricks_resnet50d")
SWEEP_BATCHES = (8, 128)


def _measure(model: str, batch: int, size: int, rounds: int, clock, plain_bf16: bool = False) -> dict[str, float]:
    setups = {"float32": _setup(model, batch, size, False), "bfloat16 + channels_last": _setup(model, batch, size, True)}
    if plain_bf16:
        setups["bfloat16"] = _setup(model, batch, size, True, channels_last=False)
    times = {n: [] for n in setups}
    for r in range(2 + rounds):
        for n, step in (setups.items() if r % 2 else reversed(setups.items())):
            t0 = clock()
            step()
            if r >= 2:
                times[n].append(clock() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tricks_resnet26nd")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--sweep", action="store_true", help="every model of SWEEP_MODELS at every batch of SWEEP_BATCHES")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    print(f"torch {torch.__version__}, {a.threads} thread(s)"
          + ("" if a.sweep else f", {a.model}, batch {a.batch} x {a.size} px") + f"; bfloat16 units: {low_precision()}")
    if a.sweep:
        print(f"{'model':20s} {'batch':>5s} {'fp32 ms':>8s} {'bf16 ms':>8s} {'bf16+NHWC ms':>13s} "
              f"{'bf16 speed-up':>14s} {'bf16+NHWC speed-up':>19s}  ({a.size} px, {a.threads} threads)")
        for model in SWEEP_MODELS:
            for batch in SWEEP_BATCHES:
                m = _measure(model, batch, a.size, a.rounds, clock, plain_bf16=True)
                fp32, bf16, nhwc = m["float32"], m["bfloat16"], m["bfloat16 + channels_last"]
                print(f"{model:20s} {batch:5d} {fp32 * 1e3:8.1f} {bf16 * 1e3:8.1f} {nhwc * 1e3:13.1f} "
                      f"{fp32 / bf16:13.2f}x {fp32 / nhwc:18.2f}x")
        return 0
    medians = _measure(a.model, a.batch, a.size, a.rounds, clock)
    base = medians["float32"]
    for n, m in medians.items():
        print(f"  {n:26s} median {m * 1e3:8.1f} ms/step  {a.batch / m:7.0f} images/s  speed-up {base / m:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
