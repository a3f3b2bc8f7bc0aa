#!/usr/bin/env python3
"""Quantiles of Prometheus histograms between two scrapes of /metrics.

usage: histogram-quantiles.py BEFORE AFTER PREFIX...

For every histogram series whose name{labels starts with one of the
PREFIXes, prints the observations made between the two scrapes and the
bucket bound at or above p50, p90, p99 and p99.9 (a histogram only knows
its buckets: "<= 20 ms" means somewhere in the bucket ending at 20 ms).
Series named *_seconds are shown in ms, others (batch sizes) as they are.
"""
import re
import sys
from collections import defaultdict

BUCKET = re.compile(r'^(\w+)_bucket\{(.*?),?le="([^"]+)"\} (\S+)$')


def load(path):
    series = defaultdict(dict)
    with open(path) as f:
        for line in f:
            m = BUCKET.match(line.strip())
            if m:
                name, labels, le, value = m.groups()
                series[(name, labels)][float(le)] = float(value)
    return series


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    before, after = load(sys.argv[1]), load(sys.argv[2])
    prefixes = sys.argv[3:]
    print(f"{'series':<58} {'count':>7} {'p50 ≤':>8} {'p90 ≤':>8} {'p99 ≤':>8} {'p99.9 ≤':>8}")
    for (name, labels), buckets in sorted(after.items()):
        shown = f"{name}{{{labels}}}" if labels else name
        if not any(shown.startswith(p) for p in prefixes):
            continue
        old = before.get((name, labels), {})
        bounds = sorted(buckets)
        counts = [buckets[b] - old.get(b, 0.0) for b in bounds]
        total = counts[-1]
        if total <= 0:
            continue
        cells = []
        for q in (0.5, 0.9, 0.99, 0.999):
            bound = next(b for b, c in zip(bounds, counts) if c >= q * total)
            if bound == float("inf"):
                cells.append("+Inf")
            elif name.endswith("_seconds"):
                cells.append(f"{bound * 1000:g} ms")
            else:
                cells.append(f"{bound:g}")
        print(f"{shown:<58} {int(total):>7} " + " ".join(f"{c:>8}" for c in cells))


if __name__ == "__main__":
    main()
