#!/usr/bin/python3
"""Where the time goes: sums a chrome trace by op name (self time: minus time in child ops).

    build/data2vec_bench --config vision-tiny --batch 16 --reps 2 --profile /tmp/t.trace
    python3 bench/profile.py /tmp/t.trace [--top 25]

Works for traces of data2vec_bench --profile (LibTorch's legacy profiler) and of
torch.autograd.profiler (reference.py --profile). Times are totals over the profiled steps.
"""
import argparse
import json
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    with open(a.trace) as f:
        text = f.read().rstrip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    data = json.loads(text)
    events = data["traceEvents"] if isinstance(data, dict) else data
    spans = defaultdict(list)  # thread -> (start, end, name)
    for e in events:
        if e.get("ph") == "X":
            spans[e.get("tid", 0)].append((float(e["ts"]), float(e["ts"]) + float(e["dur"]),
                                           e["name"]))
    self_time = defaultdict(float)
    calls = defaultdict(int)
    total = 0.0
    for tid, items in spans.items():
        items.sort(key=lambda s: (s[0], -s[1]))
        stack = []  # [end, name, child time]
        def close(until):
            while stack and stack[-1][0] <= until:
                end, name, start, child = stack.pop()
                self_time[name] += (end - start) - child
                if stack:
                    stack[-1][3] += end - start
        for start, end, name in items:
            close(start)
            if not stack:
                total += end - start
            stack.append([end, name, start, 0.0])
            calls[name] += 1
        close(float("inf"))
    print(f"total top-level time {total / 1e3:.1f} ms")
    print(f"{'op':<48} {'self ms':>10} {'share':>7} {'calls':>7}")
    for name, t in sorted(self_time.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"{name[:48]:<48} {t / 1e3:>10.1f} {100 * t / max(total, 1e-9):>6.1f}% {calls[name]:>7}")


if __name__ == "__main__":
    main()
