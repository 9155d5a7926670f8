"""Forward + backward time of the plugins losses next to torch's own, measured side by side.

    python benchmarks/bench_losses.py --threads 1

Cases run interleaved (one call of each per round, in a rotating order) so that load on a shared machine
hits them alike; the figure is the median over rounds after warmup. With one thread on the CPU the clock is this thread's CPU
time (time spent descheduled by other processes does not count); otherwise wall time.

On the CPU, glibc hands freed 2 MB buffers back to the OS and faults fresh pages in on the next call, which
penalises every case by its number of live buffers and varies from run to run. For steadier figures run
with ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824`` (or jemalloc / tcmalloc). Ratios compare:
  - label smoothing, both forms, with torch's ``F.cross_entropy(..., label_smoothing=0.1)``;
  - the distillation loss with plain cross entropy plus a softmax of the teacher logits (and, for
    reference, the same loss written with torch's composite soft-target cross entropy);
  - soft-target cross entropy with torch's ``F.cross_entropy`` on probability targets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.tricks.distillation import distillation_loss
from plugins.tricks.label_smoothing import label_smoothing_cross_entropy, soft_target_cross_entropy  # noqa: E402

EPS, TEMPERATURE = 0.1, 20.0


def _cases(logits, teacher, target, soft):
    def run(loss_fn):
        def call():
            logits.grad = None
            loss_fn().backward()

        return call

    def teacher_softmax_plus_ce():
        F.softmax(teacher, dim=1)
        return F.cross_entropy(logits, target)

    def torch_distillation():
        probs = F.softmax(teacher / TEMPERATURE, dim=1)
        return F.cross_entropy(logits, target) + TEMPERATURE**2 * F.cross_entropy(logits / TEMPERATURE, probs)

    return {
        "torch CE label_smoothing=0.1": run(lambda: F.cross_entropy(logits, target, label_smoothing=EPS)),
        "ours uniform": run(lambda: label_smoothing_cross_entropy(logits, target, EPS, "uniform")),
        "ours paper": run(lambda: label_smoothing_cross_entropy(logits, target, EPS, "paper")),
        "torch CE + softmax(teacher)": run(teacher_softmax_plus_ce),
        "ours distillation": run(lambda: distillation_loss(logits, teacher, target, TEMPERATURE)),
        "torch-composite distillation": run(torch_distillation),
        "torch CE soft targets": run(lambda: F.cross_entropy(logits, soft)),
        "ours soft_target_cross_entropy": run(lambda: soft_target_cross_entropy(logits, soft)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch, args.classes, generator=g).to(args.device).requires_grad_(True)
    teacher = torch.randn(args.batch, args.classes, generator=g).to(args.device)
    target = torch.randint(0, args.classes, (args.batch,), generator=g).to(args.device)
    soft = torch.softmax(torch.randn(args.batch, args.classes, generator=g), dim=1).to(args.device)
    cases = _cases(logits, teacher, target, soft)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    cpu_clock = args.device == "cpu" and args.threads == 1
    clock = time.thread_time if cpu_clock else time.perf_counter

    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(args.warmup + args.rounds):
        shift = round_index % len(names)  # rotate the order: no case always runs first or after the same one
        for name in names[shift:] + names[:shift]:
            call = cases[name]
            sync()
            start = clock()
            call()
            sync()
            if round_index >= args.warmup:
                times[name].append(clock() - start)
    median = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    fastest = {name: min(values) * 1e6 for name, values in times.items()}

    print(
        f"forward+backward, logits ({args.batch}, {args.classes}), {args.device}, {args.threads} thread(s), "
        f"{args.rounds} rounds, {'thread CPU' if cpu_clock else 'wall'} time in us: median (min)"
    )
    for name in cases:
        print(f"  {name:32s} {median[name]:9.1f} ({fastest[name]:.1f})")
    ratios = [
        ("ours uniform / torch label_smoothing", "ours uniform", "torch CE label_smoothing=0.1"),
        ("ours paper / torch label_smoothing", "ours paper", "torch CE label_smoothing=0.1"),
        ("ours distillation / (CE + softmax(teacher))", "ours distillation", "torch CE + softmax(teacher)"),
        (
            "torch-composite distillation / (CE + softmax)",
            "torch-composite distillation",
            "torch CE + softmax(teacher)",
        ),
        (
            "ours soft-target CE / torch soft-target CE",
            "ours soft_target_cross_entropy",
            "torch CE soft targets",
        ),
    ]
    print("ratios: of medians (of mins)")
    for label, ours, reference in ratios:
        print(
            f"  {label:48s} {median[ours] / median[reference]:.3f} ({fastest[ours] / fastest[reference]:.3f})"
        )


if __name__ == "__main__":
    main()
