"""Benchmark of the TIE-KD loss: memory and time of forward + backward, three ways side by side.

    python bench/bench_loss.py [--frames 2 --height 242 --width 704 --bins 257 --repeats 3 --threads N]

Variants (same inputs, same loss up to the last digits):

* ``naive``: as the released code writes it: the whole teacher DPM tensor (the Gaussian's CDF at
  every bin edge), p_S = softmax(logits), KL with log(p_S + 1e-7) elementwise, expected depth,
  autograd keeps everything.
* ``log_softmax``: the usual rewrite, KL from log_softmax (no epsilon, so its value differs a
  little), still whole tensors.
* ``lean``: ``tiekd.pipeline.losses.tiekd_loss``, chunked with a hand-written backward.

Each variant runs in a fresh subprocess. Peak memory is ``ru_maxrss`` after one forward + backward
minus the resident set once the inputs are allocated (and a small warm-up run has loaded every
kernel), so it counts the loss's own working memory plus the gradient of the logits. Time is the
median of ``--repeats`` runs, with ``--threads`` CPU threads (default: torch's choice; on a shared
machine one thread gives steadier figures). The table gives ratios against ``naive``; memory
figures mean something for logits of tens of MB and more. This is a script, not a test.
"""

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from tiekd.pipeline.dpm import bin_centres, bin_edges
from tiekd.pipeline.losses import KL_EPSILON, TIEKD_ALPHA, TIEKD_SCALE, ssim, tiekd_loss

KITTI_MIN_DEPTH = 1e-3
"""method.md section 2: KITTI depth range start, metres."""

KITTI_MAX_DEPTH = 80.0
"""method.md section 2: KITTI depth range end, metres."""

SIGMA = 0.8
"""method.md section 3: KITTI teacher DPM sigma, metres."""

LOGIT_SCALE = 3.0
"""Standard deviation of the random logits: spreads the student DPM over a few dozen bins."""

SEED = 0
"""Same inputs in every subprocess."""

WARMUP_SHAPE = (1, 8, 16, 16)
"""Frames, bins, height, width of the warm-up run that loads kernels before the baseline is read."""

VARIANTS = ("naive", "log_softmax", "lean")


def dense_teacher_dpm(teacher_depth, edges):
    """Paper-form teacher DPM written out directly: Phi at all K+1 edges, differences, renormalised."""
    scaled = (edges.view(1, -1, 1, 1) - teacher_depth) / (SIGMA * math.sqrt(2))
    cdf = (1 + torch.erf(scaled)) / 2
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / mass.sum(dim=1, keepdim=True)


def naive_loss(logits, teacher_depth, edges):
    """Released-code style TIE-KD loss ("paper" form): whole tensors, autograd saves them all."""
    teacher = dense_teacher_dpm(teacher_depth, edges)
    student = torch.softmax(logits, dim=1)
    kl = F.kl_div(torch.log(student + KL_EPSILON), teacher, reduction="none").sum(dim=1).mean()
    depth = (student * bin_centres(edges).view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
    return TIEKD_SCALE * (TIEKD_ALPHA * kl + (1 - TIEKD_ALPHA) * (1 - ssim(depth, teacher_depth)))


def log_softmax_loss(logits, teacher_depth, edges):
    """The plain log_softmax rewrite: KL(t || softmax) from log_softmax, whole tensors."""
    teacher = dense_teacher_dpm(teacher_depth, edges)
    log_student = torch.log_softmax(logits, dim=1)
    kl = F.kl_div(log_student, teacher, reduction="none").sum(dim=1).mean()
    depth = (log_student.exp() * bin_centres(edges).view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
    return TIEKD_SCALE * (TIEKD_ALPHA * kl + (1 - TIEKD_ALPHA) * (1 - ssim(depth, teacher_depth)))


def lean_loss(logits, teacher_depth, edges):
    """The library's loss."""
    return tiekd_loss(logits, teacher_depth, edges, sigma=SIGMA)


LOSSES = {"naive": naive_loss, "log_softmax": log_softmax_loss, "lean": lean_loss}


def make_inputs(frames, bins, height, width):
    """Random logits (B, K, H, W) with gradient and a smooth teacher depth map (B, 1, H, W) in metres."""
    generator = torch.Generator().manual_seed(SEED)
    logits = (torch.randn(frames, bins, height, width, generator=generator) * LOGIT_SCALE).requires_grad_()
    rows = torch.linspace(0, 1, height).view(1, 1, -1, 1)
    cols = torch.linspace(0, 1, width).view(1, 1, 1, -1)
    ramp = KITTI_MAX_DEPTH * (1 - rows) ** 2 + 5 * torch.sin(12 * cols)
    noise = torch.rand(frames, 1, height, width, generator=generator)
    teacher_depth = (ramp + noise).clamp(KITTI_MIN_DEPTH, KITTI_MAX_DEPTH)
    return logits, teacher_depth, bin_edges(KITTI_MIN_DEPTH, KITTI_MAX_DEPTH, bins)


def current_rss_kib():
    """Resident set size of this process now, KiB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * resource.getpagesize() // 1024


def forward_backward(loss_fn, logits, teacher_depth, edges):
    """One loss forward + backward; returns the loss value and the seconds taken."""
    logits.grad = None
    start = time.perf_counter()
    loss = loss_fn(logits, teacher_depth, edges)
    loss.backward()
    return loss.item(), time.perf_counter() - start


def measure(variant, frames, bins, height, width, repeats, threads):
    """Child process: peak memory above the inputs (bytes), median time (s) and value of one variant."""
    if threads:
        torch.set_num_threads(threads)
    loss_fn = LOSSES[variant]
    forward_backward(loss_fn, *make_inputs(*WARMUP_SHAPE))
    inputs = make_inputs(frames, bins, height, width)
    baseline_kib = current_rss_kib()
    value, first_time = forward_backward(loss_fn, *inputs)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = [first_time] + [forward_backward(loss_fn, *inputs)[1] for _ in range(repeats - 1)]
    logits_bytes = inputs[0].numel() * inputs[0].element_size()
    return {
        "variant": variant,
        "value": value,
        "peak_bytes": (peak_kib - baseline_kib) * 1024,
        "logits_bytes": logits_bytes,
        "seconds": statistics.median(times),
        "threads": torch.get_num_threads(),
    }


def run_child(variant, args):
    """Run ``measure`` for one variant in a fresh interpreter and return its result."""
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--frames",
        str(args.frames),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
        "--bins",
        str(args.bins),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_table(results):
    """Side-by-side table with ratios against the naive variant."""
    naive = results[0]
    print(f"logits: {naive['logits_bytes'] / 2**20:.0f} MiB, threads: {naive['threads']}")
    print(
        f"{'variant':<12} {'peak MiB':>9} {'x logits':>9} {'x naive':>8} {'time s':>8} {'x naive':>8} "
        f"{'value':>12} {'rel diff':>9}"
    )
    for result in results:
        peak = result["peak_bytes"]
        print(
            f"{result['variant']:<12} {peak / 2**20:9.0f} {peak / result['logits_bytes']:9.2f} "
            f"{peak / naive['peak_bytes']:8.3f} {result['seconds']:8.3f} {result['seconds'] / naive['seconds']:8.3f} "
            f"{result['value']:12.7f} {abs(result['value'] - naive['value']) / abs(naive['value']):9.1e}"
        )


def main():
    """Parse the options; as parent run every variant in a child, as child measure one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--height", type=int, default=242)
    parser.add_argument("--width", type=int, default=704)
    parser.add_argument("--bins", type=int, default=257)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.child, args.frames, args.bins, args.height, args.width, args.repeats, args.threads)
        print(json.dumps(result))
        return
    print_table([run_child(variant, args) for variant in VARIANTS])


if __name__ == "__main__":
    main()
