#!/usr/bin/python3
"""Merges the JSON lines of data2vec_bench and reference.py into one Markdown table.

    python3 bench/table.py results.jsonl

Step times of every round are pooled per (configuration, implementation) and the median is
reported. MFU = model FLOPs per second / the median measured GEMM rate of the same dtype and
thread count (data2vec_bench --mode gemm, same run) of the GEMM library the row ran on: Python's
torch.mm; C++'s the library its blocks used (the "gemm" field: torch or onednn, nn/gemm.h).
With more than one round a second table gives each round apart (run.sh measures the GEMM peaks
at the start of every round, so a line's round is the count of peak measurements before it):
the ratios of that round's medians and MFU against that round's own peak, since on a shared
host a round can run ~10% faster or slower than the next.
"""
import json
import statistics
import sys
from collections import defaultdict


def main(paths):
    runs = [json.loads(line) for p in paths for line in open(p) if line.startswith("{")]
    gemm = defaultdict(list)  # (dtype, threads, library) -> GFLOP/s of each run
    times = defaultdict(list)  # (config, mode, batch, dtype, threads) -> impl -> step times
    info = {}
    layers = {}  # (config, batch, threads) -> impl -> runs
    by_round = defaultdict(dict)  # round -> {(key, impl): run, (dtype, threads, lib): GFLOP/s}
    round_no, in_gemm = 0, False
    # C++ on LibTorch's BLAS (run.sh's same-kernels run, --gemm torch) is its own column when the
    # default C++ run used oneDNN; without a oneDNN run it is the C++ column.
    blas_column = any(r["impl"] == "cpp" and r.get("gemm", "torch") != "torch" for r in runs
                      if r["mode"] not in ("gemm", "layers"))
    for r in runs:
        if r["mode"] == "gemm":
            round_no += not in_gemm
            in_gemm = True
            gemm[(r["dtype"], r["threads"], r.get("gemm", "torch"))].append(r["gflops"])
            by_round[round_no][(r["dtype"], r["threads"], r.get("gemm", "torch"))] = r["gflops"]
            continue
        in_gemm = False
        if r["mode"] == "layers":  # data2vec_bench --mode layers --kernel K
            layers.setdefault((r["config"], r["batch"], r["threads"]), defaultdict(list))[
                r["impl"]].append(r)
            continue
        key = (r["config"], r["mode"], r["batch"], r["dtype"], r["threads"])
        same_kernels = blas_column and r["impl"] == "cpp" and r.get("gemm") == "torch"
        impl = "cpp-torch" if same_kernels else r["impl"]
        times.setdefault(key, defaultdict(list))[impl].extend(r["times_s"])
        info.setdefault(key, {})[impl] = r
        by_round[round_no][(key, impl)] = r
    peaks = {k: statistics.median(v) for k, v in gemm.items()}
    for (dtype, threads, lib), peak in sorted(peaks.items()):
        how = "torch.mm" if lib == "torch" else f"{lib} sgemm"
        print(f"GEMM peak ({dtype}, {threads} threads, {how} square): {peak:.1f} GFLOP/s "
              f"(median of {len(gemm[(dtype, threads, lib)])} runs)")
    print()
    print("| configuration | C++ samples/s | C++ on LibTorch's BLAS | Python samples/s "
          "| C++ / Python | C++ on LibTorch's BLAS / Python | MFU C++ | MFU C++ LibTorch BLAS "
          "| MFU Python | GFLOP/step | peak RSS C++ / Python (MB) | steps C++ / Py | params |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    problems, extra_rows = [], []
    for key in sorted(times, key=lambda k: (k[3], k[0], k[1], k[2])):
        config, mode, batch, dtype, threads = key
        per = times[key]
        row = info[key]
        rate, mfu, rss, steps = {}, {}, {}, {}
        for impl in ("cpp", "cpp-torch", "python"):
            if impl not in per:
                continue
            med = statistics.median(per[impl])
            rate[impl] = batch / med
            steps[impl] = len(per[impl])
            mfu[impl] = mfu_of(row[impl], med, peaks.get(peak_key(row[impl], key)))
            rss[impl] = row[impl]["peak_rss_mb"]
        fmt = lambda d, k, f: (f % d[k]) if d.get(k) is not None else "-"
        ratio_of = lambda impl: (f"{rate[impl] / rate['python']:.2f}x"
                                 if impl in rate and "python" in rate else "-")
        params = "-"
        if "cpp" in row and "python" in row:
            same = row["cpp"]["params"] == row["python"]["params"]
            params = f"{row['cpp']['params']:,} {'equal' if same else 'DIFFER'}"
            if not same:
                problems.append(f"{config}: parameter counts differ: {row['cpp']['params']} vs "
                                f"{row['python']['params']}")
        flops = next(iter(row.values()))["flops"] / 1e9
        name = f"{config} {mode} b{batch} {dtype}"
        print(f"| {name} | {fmt(rate, 'cpp', '%.2f')} | {fmt(rate, 'cpp-torch', '%.2f')} "
              f"| {fmt(rate, 'python', '%.2f')} | {ratio_of('cpp')} | {ratio_of('cpp-torch')} "
              f"| {fmt(mfu, 'cpp', '%.2f')} | {fmt(mfu, 'cpp-torch', '%.2f')} "
              f"| {fmt(mfu, 'python', '%.2f')} "
              f"| {flops:.1f} | {fmt(rss, 'cpp', '%.0f')} / {fmt(rss, 'python', '%.0f')} "
              f"| {steps.get('cpp', 0)} / {steps.get('python', 0)} | {params} |")
    for row in extra_rows:
        print(row)
    if len(by_round) > 1:
        print_rounds(times, by_round)
    if layers:
        print()
        print("Transformer blocks alone, forward + backward (data2vec_bench --mode layers): "
              "seconds per step (median), peak RSS (MB)")
        print()
        print("| blocks | plain | fused | blocked | plain / fused | plain / blocked "
              "| RSS plain / fused / blocked | MFU blocked |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for (config, batch, threads), per in sorted(layers.items()):
            med = {k: statistics.median([t for r in v for t in r["times_s"]])
                   for k, v in per.items()}
            rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in per.items()}
            g = lambda d, k, f: (f % d[k]) if k in d else "-"
            ratio = lambda k: f"{med['cpp-plain'] / med[k]:.2f}x" if (
                k in med and "cpp-plain" in med) else "-"
            blocked = per.get("cpp-blocked", [{}])[0]
            peak = peaks.get(("fp32", threads, blocked.get("gemm", "torch")))
            mfu = (f"{per['cpp-blocked'][0]['flops'] / med['cpp-blocked'] / 1e9 / peak:.2f}"
                   if peak and "cpp-blocked" in med else "-")
            print(f"| {config} b{batch} | {g(med, 'cpp-plain', '%.3f')} "
                  f"| {g(med, 'cpp-fused', '%.3f')} | {g(med, 'cpp-blocked', '%.3f')} "
                  f"| {ratio('cpp-fused')} | {ratio('cpp-blocked')} "
                  f"| {g(rss, 'cpp-plain', '%.0f')} / {g(rss, 'cpp-fused', '%.0f')} / "
                  f"{g(rss, 'cpp-blocked', '%.0f')} | {mfu} |")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


def peak_key(run, key):
    """The GEMM peak a run's MFU divides by: its dtype and threads, and for fp32 the library
    its products ran on (bf16 rows always on LibTorch's)."""
    dtype, threads = key[3], key[4]
    return (dtype, threads, run.get("gemm", "torch") if dtype == "fp32" else "torch")


def mfu_of(run, seconds, peak):
    return run["flops"] / seconds / 1e9 / peak if peak else None


def print_rounds(times, by_round):
    rounds = sorted(by_round)
    print()
    print(f"Per round ({', '.join(str(n) for n in rounds)}): ratios of the round's medians; "
          "MFU against the round's own GEMM peak")
    print()
    print("| configuration | C++ / Python | C++ on LibTorch's BLAS / Python | MFU C++ |")
    print("|---|---:|---:|---:|")
    for key in sorted(times, key=lambda k: (k[3], k[0], k[1], k[2])):
        config, mode, batch, dtype, threads = key
        ratio, same, mfu = [], [], []
        for n in rounds:
            got = by_round[n]
            py, cpp, cpp_torch = (got.get((key, impl)) for impl in ("python", "cpp", "cpp-torch"))
            ratio.append(f"{py['median_s'] / cpp['median_s']:.2f}x" if py and cpp else "-")
            same.append(f"{py['median_s'] / cpp_torch['median_s']:.2f}x"
                        if py and cpp_torch else "-")
            value = mfu_of(cpp, cpp["median_s"], got.get(peak_key(cpp, key))) if cpp else None
            mfu.append(f"{value:.2f}" if value is not None else "-")
        print(f"| {config} {mode} b{batch} {dtype} | {' / '.join(ratio)} | {' / '.join(same)} "
              f"| {' / '.join(mfu)} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
