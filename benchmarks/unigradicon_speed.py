"""uniGradICON's costs side by side: inference, the published-style forward, one IO step of each kind.

    python benchmarks/unigradicon_speed.py [--size 175] [--device cpu|cuda] [--repeats 3]

Random weights (the costs do not depend on them). An IO step is timed as a run of two steps
(weights) or five (fields) less a run of one, after a first run of one that warms up, so the
set-up (copying the network, sampling its maps, the final answer) cancels. Each operation runs
in a fresh process; "peak GB" is the memory it adds at its peak above what its set-up left:
resident memory sampled every 5 ms on a CPU, allocated memory on a GPU. On shared CPUs read
the ratios.
"""

import argparse
import json
import statistics

import torch
from memory import in_fresh_process, timed_peak

OPERATIONS = {
    "inference, one direction": "one",
    "inference, both directions": "both",
    "published-style forward with its loss": "published",
    "weight-level IO step": "weights",
    "field-level IO step": "fields",
}


# the extra steps of the longer run: a field-level step is short, and several of them time
# it better on a shared machine
MORE_STEPS = {"weights": 1, "fields": 4}


def measure(operation, size, device):
    from itkdeepreg import losses
    from itkdeepreg.models import register_pair
    from itkdeepreg.optimize import instance
    from itkdeepreg.zoo import unigradicon_network

    torch.manual_seed(0)
    network = unigradicon_network().to(device).eval()
    for parameter in network.parameters():
        if parameter.dim() > 1:
            torch.nn.init.normal_(parameter, std=1e-3)
    shape = (1, 1, size, size, size)
    moving, fixed = torch.rand(shape, device=device), torch.rand(shape, device=device)
    forward, backward = register_pair(network, moving, fixed, inverse=True)

    def run():
        if operation == "one":
            register_pair(network, moving, fixed).as_displacement((size,) * 3)
        elif operation == "both":
            register_pair(network, moving, fixed, inverse=True)
        elif operation == "published":  # both directions and the training loss, no gradients
            with torch.no_grad():
                both = network(torch.cat([moving, fixed]), torch.cat([fixed, moving]))
                losses.pair_objective(both.select(0), both.select(1), moving, fixed)
        elif operation == "weights":
            instance.optimize_weights(network, moving, fixed, iterations=steps, progress=False)
        else:
            instance.optimize_fields(
                forward, backward, moving, fixed, iterations=steps, progress=False
            )

    def timed():
        return timed_peak(run, device)

    steps = 1
    seconds, peak = timed()
    if operation in MORE_STEPS:  # one step alone: a longer run less a run of one step, so
        seconds = timed()[0]  # the set-up cancels; the first run also paid for warming up
        steps += MORE_STEPS[operation]
        seconds = (timed()[0] - seconds) / MORE_STEPS[operation]
    print(json.dumps({"seconds": seconds, "peak_gb": peak}))


def main(size, device, repeats):
    # the operations take turns, so that a shared machine's slow minutes fall on all of them
    runs = {name: [] for name in OPERATIONS}
    for _ in range(repeats):
        for name, operation in OPERATIONS.items():
            arguments = ["--size", size, "--device", device, "--only", operation]
            runs[name].append(in_fresh_process(__file__, *arguments))
    rows = {
        name: {key: statistics.median(run[key] for run in measured) for key in measured[0]}
        for name, measured in runs.items()
    }
    one = rows["inference, one direction"]["seconds"]
    print(
        f"uniGradICON at {size}^3 on {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {repeats} round(s)"
    )
    print(f"{'operation':<40}{'seconds':>10}{'added peak GB':>15}{'time / one direction':>22}")
    for name, row in rows.items():
        print(
            f"{name:<40}{row['seconds']:>10.2f}{row['peak_gb']:>15.2f}{row['seconds'] / one:>22.2f}"
        )
    weights, fields = rows["weight-level IO step"], rows["field-level IO step"]
    print(
        f"field-level IO step against weight-level: {weights['seconds'] / fields['seconds']:.1f}x less "
        f"time, {weights['peak_gb'] / fields['peak_gb']:.1f}x less peak memory"
    )
    if repeats > 1:
        rounds = zip(runs["weight-level IO step"], runs["field-level IO step"])
        ratios = ", ".join(f"{w['seconds'] / f['seconds']:.1f}x" for w, f in rounds)
        print(f"time ratio in each round: {ratios}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=175)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; the table gives medians")
    parser.add_argument("--only", choices=sorted(OPERATIONS.values()))
    arguments = parser.parse_args()
    if arguments.only:
        measure(arguments.only, arguments.size, arguments.device)
    else:
        main(arguments.size, arguments.device, arguments.repeats)
