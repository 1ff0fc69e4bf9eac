"""Time and added peak memory of calls: what the benchmarks here measure, one way.

On a GPU, allocated memory above what was allocated before the call; on a CPU, resident
memory sampled every 5 ms above what was resident before it.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch


def in_fresh_process(script, *arguments) -> dict:
    """The JSON object that ``python script *arguments`` prints last: one measurement in a
    process of its own, whose memory starts clean. A failure raises with its stderr."""
    command = [sys.executable, str(script), *map(str, arguments)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def forward_backward_medians(ways: dict, repeats: int, *arguments) -> dict:
    """Median seconds of ``way(*arguments).sum().backward()`` for each of ``ways`` (name ->
    way), the ways taking turns ``repeats`` times, so that a shared machine's slow minutes
    fall on all of them."""
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            way(*arguments).sum().backward()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timed_peak(function, device) -> tuple[float, float]:
    """``(seconds, added peak GB)`` of ``function()`` on ``device`` ("cpu" or "cuda")."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return seconds, (torch.cuda.max_memory_allocated() - baseline) / 1e9
    start = time.perf_counter()
    added = added_resident_peak(function)
    return time.perf_counter() - start, added / 1e9


def added_resident_peak(function) -> int:
    """Bytes of resident memory ``function`` adds at its peak, sampled every 5 ms."""
    page = os.sysconf("SC_PAGE_SIZE")

    def resident():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    baseline = resident()
    peak, done = [baseline], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            done.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        function()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], resident()) - baseline
