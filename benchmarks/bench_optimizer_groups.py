"""Optimizer step time: our two no-bias-decay groups against MMEngine's ``paramwise_cfg`` (one group per parameter).

Both optimizers are built by MMEngine's ``build_optim_wrapper`` for mmdet's ResNet-50 (same SGD settings; the
paramwise one with ``norm_decay_mult=0, bias_decay_mult=0``, which gives the same decay per tensor), then
``optimizer.step()`` is timed side by side on the same random gradients, alternating, median of the rounds.

    python benchmarks/bench_optimizer_groups.py [--rounds 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper

    import mm_ext  # noqa: F401  (registers NoBiasDecayOptimWrapperConstructor)

    register_all_modules()
    sgd = dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    models, wrappers = {}, {}
    for name, cfg in {
        "two groups (NoBiasDecayOptimWrapperConstructor)": dict(optimizer=sgd,
                                                                constructor="NoBiasDecayOptimWrapperConstructor"),
        "paramwise_cfg (one group per parameter)": dict(optimizer=sgd,
                                                        paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0)),
    }.items():
        torch.manual_seed(0)
        model = MODELS.build(dict(type="ResNet", depth=50, norm_eval=False))
        for q in model.parameters():
            q.grad = torch.randn_like(q) * 1e-3
        models[name], wrappers[name] = model, build_optim_wrapper(model, dict(type="OptimWrapper", **cfg))
    times = {n: [] for n in wrappers}
    for _ in range(a.rounds):
        for name, w in wrappers.items():
            t0 = time.perf_counter()
            w.optimizer.step()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["paramwise_cfg (one group per parameter)"])
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.rounds} rounds, mmdet ResNet-50 "
          f"({sum(q.numel() for q in next(iter(models.values())).parameters()) / 1e6:.1f} M parameters)")
    for name, t in times.items():
        groups = len(wrappers[name].optimizer.param_groups)
        print(f"  {name:50s} {groups:4d} groups  median {statistics.median(t) * 1e3:7.2f} ms  "
              f"ratio {statistics.median(t) / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
