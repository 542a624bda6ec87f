#!/usr/bin/python3
"""ctest bench_smoke: the benchmark cannot rot.

For vision-tiny, text-tiny and audio-tiny: `data2vec_bench --dump` writes the model, a batch of
2 and its mask, runs two training steps and prints one JSON line; `reference.py --check` loads
the same file into the Python mirror and runs the same two steps. Checks: well-formed JSON with
the fields bench/table.py reads, equal parameter counts, and equal losses before and after one
optimizer + EMA step (relative tolerance 1e-4). Also smoke-runs the gemm and extract modes.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = ("impl", "config", "mode", "batch", "dtype", "threads", "flops", "times_s", "median_s",
          "peak_rss_mb")
TOLERANCE = 1e-4


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [l for l in out.splitlines() if l.startswith("{")]
    assert len(lines) == 1, f"{cmd}: expected one JSON line, got:\n{out}"
    record = json.loads(lines[0])
    missing = [f for f in FIELDS if f not in record]
    assert not missing, f"{cmd}: missing fields {missing} in {record}"
    return record


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    a = ap.parse_args()
    failures = []
    run_json([a.bench, "--mode", "gemm", "--gemm-size", "128", "--reps", "1", "--threads", "1"])
    run_json([a.bench, "--mode", "extract", "--batch", "1", "--reps", "1", "--warmup", "0",
              "--threads", "1"])
    with tempfile.TemporaryDirectory() as tmp:
        for config in ("vision-tiny", "text-tiny", "audio-tiny"):
            path = os.path.join(tmp, config + ".safetensors")
            cpp = run_json([a.bench, "--config", config, "--batch", "2", "--warmup", "0", "--reps",
                            "2", "--threads", "1", "--dump", path])
            py = run_json([sys.executable, os.path.join(HERE, "reference.py"), "--check", path,
                           "--threads", "1"])
            print(f"{config}: params C++ {cpp['params']} Python {py['params']}; "
                  f"losses C++ {cpp['losses']} Python {py['losses']}")
            if cpp["params"] != py["params"] or cpp["params_total"] != py["params_total"]:
                failures.append(f"{config}: parameter counts differ")
            for step, (x, y) in enumerate(zip(cpp["losses"], py["losses"])):
                if abs(x - y) > TOLERANCE * max(abs(x), abs(y), 1e-6):
                    failures.append(f"{config}: loss of step {step} differs: C++ {x} Python {y} "
                                    f"(max relative difference {TOLERANCE})")
    for f in failures:
        print("FAIL:", f)
    print("bench smoke test:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
