"""Interleaved, adaptive median timing.

Engines run in rounds; in each round every still-active engine runs one block
of back-to-back calls (after a short sleep, and the first call of a block is
discarded: it pays for the switch from the previous engine, e.g. that engine's
thread pool still spinning on the 2 cores). Interleaving blocks rather than single calls keeps machine noise
(a shared VM, a neighbour's compile, clock changes) hitting all engines alike
without letting one engine's idle-spinning workers slow the next one's calls.

An engine leaves the rotation once it has at least ``min_runs`` samples and
``target_seconds`` of timed calls (or ``max_runs`` samples). The result per
engine is the median sample.
"""
from __future__ import annotations

import statistics
import time


def time_interleaved(fns, *, min_runs=5, target_seconds=0.3, max_runs=2000, warmup=2,
                     block_seconds=0.03, rounds=3, settle_seconds=0.05):
    """Time ``fns`` (a dict name -> zero-argument callable), interleaved in blocks.

    A block lasts about ``max(block_seconds, target_seconds / rounds)``, so a fast
    engine's samples come from ``rounds`` or more blocks. A switch-over call that itself
    takes ``block_seconds`` or more is recorded (its interference is negligible and
    discarding it would double the cost of slow engines). Before each block the caller
    sleeps ``settle_seconds`` so the previous engine's idle workers stop spinning (measured:
    an ORT intra-op worker burns ~40 ms of CPU after a 2-thread run; left running, it halved
    the next engine's speed on this 2-core VM).
    Returns a dict name -> {"median": s, "min": s, "runs": n}.
    """
    clock = time.perf_counter
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    block = max(block_seconds, target_seconds / max(rounds, 1))
    active = list(fns)
    while active:
        for name in active:
            fn, s = fns[name], samples[name]
            want = min(block, max(target_seconds - sum(s), 0.0))
            n0 = len(s)
            if settle_seconds:
                time.sleep(settle_seconds)
            t0 = clock()
            fn()  # the switch-over call: recorded only if slow
            spent = clock() - t0
            if spent >= block_seconds:
                s.append(spent)
            while len(s) == n0 or (spent < want and len(s) < max_runs):
                t0 = clock()
                fn()
                dt = clock() - t0
                s.append(dt)
                spent += dt
        active = [n for n in active
                  if len(samples[n]) < max_runs
                  and (len(samples[n]) < min_runs or sum(samples[n]) < target_seconds)]
    return {name: {"median": statistics.median(s), "min": min(s), "runs": len(s)}
            for name, s in samples.items()}
