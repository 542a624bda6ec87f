#!/usr/bin/python3
"""GFLOP/s of the two GEMM libraries the C++ side can use (nn/gemm.h), at the shapes a ViT-tiny
step multiplies: torch.mm (LibTorch's BLAS: OpenBLAS in Debian) against oneDNN's dnnl_sgemm
(libdnnl.so.2, the library LibTorch already links), same process, same threads.

    python3 bench/gemm_shapes.py [--threads 2] [--reps 20]
    DNNL_MAX_CPU_ISA=AVX2 python3 bench/gemm_shapes.py     # oneDNN held to AVX2 kernels
"""
import argparse
import ctypes
import time

import torch

# (m, k, n) row-major [m,k] x [k,n]; 3152 = 16 images x 197 tokens.
SHAPES = [
    ((2048, 2048, 2048), "square (the MFU peak)"),
    ((3152, 192, 576), "q/k/v projection"),
    ((3152, 192, 192), "output projection"),
    ((3152, 192, 768), "fc1"),
    ((3152, 768, 192), "fc2"),
    ((192, 3152, 768), "a weight gradient"),
    ((197, 64, 197), "attention logits, one head"),
    ((197, 197, 64), "attention context, one head"),
]


def rate(fn, flops, reps):
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return flops / ((time.perf_counter() - t0) / reps) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dnnl = ctypes.CDLL("libdnnl.so.2")
    dnnl.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char] + [ctypes.c_int64] * 3 + [
        ctypes.c_float, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_float, ctypes.c_void_p, ctypes.c_int64]
    print(f"threads {a.threads}, torch {torch.__version__}, fp32; GFLOP/s (max |difference|)")
    print("| m x k x n | what | torch.mm | dnnl_sgemm | ratio |")
    print("|---|---|---:|---:|---:|")
    for (m, k, n), what in SHAPES:
        x, y, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        flops = 2.0 * m * k * n

        def onednn():
            dnnl.dnnl_sgemm(b"N", b"N", m, n, k, 1.0, x.data_ptr(), k, y.data_ptr(), n, 0.0,
                            out.data_ptr(), n)

        torch_rate = rate(lambda: torch.mm(x, y), flops, a.reps)
        onednn_rate = rate(onednn, flops, a.reps)
        onednn()
        diff = (out - torch.mm(x, y)).abs().max().item()
        print(f"| {m} x {k} x {n} | {what} | {torch_rate:.0f} | {onednn_rate:.0f} "
              f"| {onednn_rate / torch_rate:.2f}x ({diff:.1e}) |")


if __name__ == "__main__":
    main()
