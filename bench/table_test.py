#!/usr/bin/python3
"""bench/table.py on a made-up two-round run: the pooled table, and the per-round table whose
MFU divides by each round's own GEMM peak (a round is the lines after its peak measurements).

    python3 bench/table_test.py
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def gemm(library, gflops):
    return {"mode": "gemm", "config": "gemm-2048", "batch": 2048, "dtype": "fp32", "threads": 2,
            "gemm": library, "impl": "cpp", "gflops": gflops, "times_s": [0.1], "flops": 1.7e10}


def step(impl, library, seconds):
    row = {"mode": "train", "config": "vision-tiny", "batch": 16, "dtype": "fp32", "threads": 2,
           "impl": impl, "times_s": seconds, "median_s": sorted(seconds)[len(seconds) // 2],
           "flops": 160e9, "peak_rss_mb": 1000.0, "params": 5491284}
    if library:
        row["gemm"] = library
    return row


def table(lines):
    """bench/table.py's output for these JSON lines."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
        return subprocess.run([sys.executable, os.path.join(HERE, "table.py"), path],
                              capture_output=True, text=True, check=True).stdout


def main():
    lines = [
        # round 1: oneDNN peak 400, C++ 0.5 s, C++ on LibTorch's BLAS 1.0 s, Python 2.0 s
        gemm("torch", 200.0), gemm("onednn", 400.0),
        step("cpp", "onednn", [0.5, 0.5, 0.5]), step("cpp", "torch", [1.0, 1.0, 1.0]),
        step("python", None, [2.0, 2.0, 2.0]),
        # round 2: a slower host: peak 320, C++ 0.8 s, Python 2.4 s (order swapped)
        gemm("torch", 160.0), gemm("onednn", 320.0),
        step("python", None, [2.4, 2.4, 2.4]),
        step("cpp", "onednn", [0.8, 0.8, 0.8]), step("cpp", "torch", [1.2, 1.2, 1.2]),
    ]
    out = table(lines)
    rows = [line for line in out.splitlines() if line.startswith("| vision-tiny train b16")]
    assert len(rows) == 2, out
    pooled = [cell.strip() for cell in rows[0].split("|")]
    # pooled medians over both rounds' six steps: C++ (0.5 + 0.8) / 2, Python (2.0 + 2.4) / 2
    assert pooled[5] == f"{2.2 / 0.65:.2f}x", pooled
    # MFU against the median peak, (400 + 320) / 2 = 360 GFLOP/s
    assert pooled[7] == f"{160 / 0.65 / 360:.2f}", pooled
    per_round = [cell.strip() for cell in rows[1].split("|")]
    assert per_round[2] == "4.00x / 3.00x", per_round           # 2.0 / 0.5, 2.4 / 0.8
    assert per_round[3] == "2.00x / 2.00x", per_round           # 2.0 / 1.0, 2.4 / 1.2
    assert per_round[4] == f"{160 / 0.5 / 400:.2f} / {160 / 0.8 / 320:.2f}", per_round
    # A build without oneDNN: its C++ runs are on LibTorch's BLAS and fill the C++ columns of
    # both tables.
    out = table([gemm("torch", 200.0), step("cpp", "torch", [1.0]), step("python", None, [2.0]),
                 gemm("torch", 100.0), step("python", None, [2.0]), step("cpp", "torch", [0.5])])
    rows = [line for line in out.splitlines() if line.startswith("| vision-tiny train b16")]
    per_round = [cell.strip() for cell in rows[1].split("|")]
    assert per_round[2] == "2.00x / 4.00x", per_round
    assert per_round[4] == f"{160 / 1.0 / 200:.2f} / {160 / 0.5 / 100:.2f}", per_round
    print("table.py: pooled and per-round rows as expected")


if __name__ == "__main__":
    main()
