#!/usr/bin/env python3
"""Where a profiled replay's CPU went, thread by thread.

Reads `perf script -F comm,tid,ip,sym --no-inline` output (call graphs
recorded with `--call-graph dwarf`; scripts/profile-replay.sh makes one) and
prints either the threads by samples, or, for one thread, what runs directly
under a frame (the callees of every sample passing through it).

  perf-threads.py FILE                     threads by samples (name, tid, share)
  perf-threads.py FILE TID FRAME [DEPTH]   under FRAME on thread TID: the next
                                           DEPTH frames down (default 1), by share
                                           of the thread's samples
  --only FRAME2 (before FILE)              count only samples passing through
                                           FRAME2 (e.g. `iter_batched`: a criterion
                                           bench's measured routine, not its setup)

FRAME matches any part of a symbol (e.g. `Store::record_with`); the deepest
match of a sample counts. "SELF" is time in FRAME itself.
"""
import collections
import re
import signal
import sys


def samples(path):
    """(comm, tid, frames leaf first) per sample."""
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            if not line.startswith((" ", "\t")):
                if cur:
                    yield cur
                head = line.split()
                cur = (head[0] if head else "?", head[1] if len(head) > 1 else "", [])
            elif cur:
                parts = line.strip().split(None, 1)
                cur[2].append(parts[1] if len(parts) > 1 else "?")
    if cur:
        yield cur


def short(sym):
    return re.sub(r"<.*|\+0x[0-9a-f]+$", "", sym)[:70]


def main(argv):
    only = None
    if len(argv) > 2 and argv[1] == "--only":
        only, argv = argv[2], argv[:1] + argv[3:]
    if len(argv) not in (2, 4, 5):
        sys.exit(__doc__)
    path = argv[1]

    def kept():
        for c, t, frames in samples(path):
            if only is None or any(only in x for x in frames):
                yield c, t, frames

    if len(argv) == 2:
        by = collections.Counter((c, t) for c, t, _ in kept())
        total = sum(by.values())
        for (comm, tid), n in by.most_common(10):
            print(f"{comm:<18} {tid:>8} {n:>8} {100 * n / total:5.1f}%")
        return
    tid, frame = argv[2], argv[3]
    depth = int(argv[4]) if len(argv) == 5 else 1
    total, under, below = 0, 0, collections.Counter()
    for _, t, frames in kept():
        if t != tid:
            continue
        total += 1
        hits = [i for i, x in enumerate(frames) if frame in x]
        if not hits:
            continue
        under += 1
        i = hits[-1]
        key = " <- ".join(short(frames[j]) for j in range(max(0, i - depth), i)[::-1])
        below[key or "SELF"] += 1
    print(f"thread {tid}: {total} samples; under {frame}: {under} ({100 * under / max(total, 1):.1f}%)")
    for key, n in below.most_common(25):
        print(f"{100 * n / max(total, 1):5.1f}%  {key}")


if __name__ == "__main__":
    # Quietly stop when piped into `head`.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main(sys.argv)
