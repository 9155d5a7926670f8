"""The paper's efficient-training comparison on a GPU (Section 3 / Table 3 of He et al., 2018).

timm ``resnet50d`` trained on synthetic 224 x 224 input, side by side in one process:
  baseline   batch 256, FP32, NCHW
  efficient  batch 1024, mixed precision (torch.autocast fp16 + GradScaler), channels_last
Prints images/s, time per step and peak GPU memory for each, and the speed ratio. Takes 2-4 minutes.

    python benchmarks/gpu_efficient_training.py [--steps 20] [--warmup 5] [--model resnet50d]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def run(model_name: str, batch: int, amp: bool, channels_last: bool, steps: int, warmup: int) -> dict:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=1000).cuda()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    res = {"batch": batch, "amp": amp, "channels_last": channels_last, "step_s": step, "images_per_s": batch / step,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
    del model, opt, x, y
    torch.cuda.empty_cache()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50d")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--baseline-batch", type=int, default=256)
    p.add_argument("--efficient-batch", type=int, default=1024)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, model {a.model}")
    base = run(a.model, a.baseline_batch, False, False, a.steps, a.warmup)
    eff = run(a.model, a.efficient_batch, True, True, a.steps, a.warmup)
    for name, r in (("baseline FP32", base), ("efficient AMP+CL", eff)):
        print(f"{name:18s} batch {r['batch']:5d}: {r['images_per_s']:8.1f} img/s, {r['step_s'] * 1000:7.1f} ms/step, "
              f"peak {r['peak_mem_gib']:.1f} GiB")
    print(f"speed-up (images/s): {eff['images_per_s'] / base['images_per_s']:.2f}x "
          "(paper, 8 V100: 13.3 -> 4.4 min/epoch, about 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
