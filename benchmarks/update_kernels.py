"""Ways to compute base + w1 * d1 + w2 * d2 into an existing float32 tensor, on CPU.

    python benchmarks/update_kernels.py [--compile]

The candidates for LiveMerger's task-arithmetic update (docs/benchmarks.md): copy + two
in-place multiply-adds, ``add(out=)`` + one multiply-add, one matrix-vector product over the
stacked rows, and (with ``--compile``) a ``torch.compile``d single-pass kernel, whose
compilation time is printed too. Medians of 5 runs, for the size of a 135M model's
embedding (28M elements) and of one MLP matrix (1.3M).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    for n in (28_000_000, 1_300_000):
        run(n, args.compile)


def run(n: int, compile: bool) -> None:
    base, d1, d2, out = (torch.randn(n) for _ in range(4))
    stacked = torch.stack([base, d1, d2])
    coeffs = torch.tensor([1.0, 0.3, 0.7])

    def copy_add_add() -> None:
        out.copy_(base)
        out.add_(d1, alpha=0.3)
        out.add_(d2, alpha=0.7)

    def add_out_add() -> None:
        torch.add(base, d1, alpha=0.3, out=out)
        out.add_(d2, alpha=0.7)

    def mv_stacked() -> None:
        torch.mv(stacked.t(), coeffs, out=out)

    kernels = [copy_add_add, add_out_add, mv_stacked]
    if compile:
        def fused(o: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  w: torch.Tensor) -> None:
            o.copy_(b + w[0] * x + w[1] * y)

        start = time.perf_counter()
        compiled = torch.compile(fused, dynamic=True)
        compiled(out, base, d1, d2, coeffs[1:])
        print(f"torch.compile: {time.perf_counter() - start:.1f} s to compile")

        def compiled_single_pass() -> None:
            compiled(out, base, d1, d2, coeffs[1:])

        kernels.append(compiled_single_pass)
    for kernel in kernels:
        kernel()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            kernel()
            times.append(time.perf_counter() - start)
        print(f"{n:>10,d} elements  {kernel.__name__:22s} "
              f"{1000 * statistics.median(times):7.2f} ms")


if __name__ == "__main__":
    main()
