#!/usr/bin/env python3
"""Time one open and close of every regular file under each DIR (best of REPS passes,
after one pass to warm caches): the per-file cost a warm read pays before its data,
which through a FUSE mount is one OPEN round trip to the daemon (and a RELEASE).

    bench/open-close.py [--reps N] DIR...

Pin it (`taskset -c 0 bench/open-close.py M`) to see the cost with the reader on one
CPU; bench/README.md ("Where the warm time goes") has figures.
"""
import argparse
import os
import time


def files_under(root):
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def best_pass(files, reps):
    best = None
    for _ in range(reps):
        t = time.perf_counter()
        for p in files:
            os.close(os.open(p, os.O_RDONLY))
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    for root in a.dirs:
        files = files_under(root)
        if not files:
            raise SystemExit(f"{root}: no regular files")
        best_pass(files, 1)
        dt = best_pass(files, a.reps)
        print(f"{root}: {len(files)} files, {dt * 1e6 / len(files):.1f} µs per open and close (best of {a.reps})")


if __name__ == "__main__":
    main()
