"""CARL's coordinate attention at the published abdomen size: time and memory of each backend.

    python benchmarks/attention_memory.py [--shape 44] [--padding 9] [--features 128]
        [--device cpu|cuda] [--backends keops sdpa] [--keops-queries N]

One attention call, ``sum_j softmax_j(<q_i, k_j>) y_j``: queries on a ``shape^3`` grid (44^3,
the quarter of a 175^3 image where the published CARL attends), keys on that grid padded by
``padding`` on every side (62^3), 128 features of norm 4, values the keys' 3D coordinates.
The dense queries-by-keys matrix would take ``Nq * Nk * 4`` bytes (81 GB at this size);
neither backend forms it.

Each backend runs in a fresh process. After a small call that compiles or warms it up, one
call is timed; "added GB" is the resident memory (CPU) or allocated memory (GPU) the call adds
at its peak above its inputs, sampled every 5 ms, and "process GB" the whole process's peak
(``ru_maxrss``: Python, torch, pykeops and the inputs included). KeOps on a CPU is slow (it
reaches about 0.2-0.4 GMAC/s here, against 10-17 for PyTorch's flash kernel), so
``--keops-queries`` can run it on the first N queries only: its time is then also given
scaled to all queries (the cost is linear in the queries; its memory is dominated by the keys,
which are all there).
"""

import argparse
import json
import resource
import sys

import torch
from memory import in_fresh_process, timed_peak


def measure(backend, shape, padding, features, device, queries_used):
    from itkdeepreg.models.attention import coordinate_attention, padded_grid

    torch.manual_seed(0)
    keys_shape = (shape + 2 * padding,) * 3
    nq, nk = shape**3, keys_shape[0] ** 3
    nq_used = min(queries_used or nq, nq)

    def unit(n):  # random features of norm 4, as the network gives them
        x = torch.randn(1, n, features, device=device)
        return 4 * x / x.norm(dim=2, keepdim=True)

    queries, keys = unit(nq_used), unit(nk)
    values = padded_grid((shape,) * 3, padding, device=device).flatten(2).transpose(1, 2)
    coordinate_attention(queries[:, :8], keys[:, :8], values[:, :8], backend)  # compile, warm up

    def run():
        return coordinate_attention(queries, keys, values, backend)

    seconds, added = timed_peak(run, device)
    if device == "cuda":
        process = torch.cuda.max_memory_allocated() / 1e9
    else:
        process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(
        json.dumps(
            {
                "queries": nq,
                "queries_used": nq_used,
                "keys": nk,
                "seconds": seconds,
                "seconds_all_queries": seconds * nq / nq_used,
                "added_gb": added,
                "process_gb": process,
            }
        )
    )


def main(shape, padding, features, device, backends, keops_queries):
    rows = {}
    for backend in backends:
        arguments = ["--only", backend, "--shape", shape, "--padding", padding]
        arguments += ["--features", features, "--device", device]
        if backend == "keops" and keops_queries:
            arguments += ["--keops-queries", keops_queries]
        try:
            rows[backend] = in_fresh_process(__file__, *arguments)
        except RuntimeError as error:
            print(error, file=sys.stderr)
    keys = (shape + 2 * padding) ** 3
    print(
        f"coordinate attention, {shape}^3 queries by {shape + 2 * padding}^3 keys, {features} "
        f"features, on {device}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"the dense queries-by-keys matrix alone: {shape**3 * keys * 4 / 1e9:.1f} GB (float32)")
    header = ("backend", "queries run", "seconds", "s / full call", "added GB", "process GB")
    print(
        f"{header[0]:<9}{header[1]:>13}{header[2]:>10}{header[3]:>15}{header[4]:>10}{header[5]:>12}"
    )
    for backend, row in rows.items():
        print(
            f"{backend:<9}{row['queries_used']:>13}{row['seconds']:>10.1f}"
            f"{row['seconds_all_queries']:>15.1f}{row['added_gb']:>10.3f}{row['process_gb']:>12.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=44)
    parser.add_argument("--padding", type=int, default=9)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="+", default=["keops", "sdpa"])
    parser.add_argument("--keops-queries", type=int, default=0, help="0: all")
    parser.add_argument("--only", choices=["keops", "sdpa"])
    arguments = parser.parse_args()
    if arguments.only:
        measure(
            arguments.only,
            arguments.shape,
            arguments.padding,
            arguments.features,
            arguments.device,
            arguments.keops_queries if arguments.only == "keops" else 0,
        )
    else:
        main(
            arguments.shape,
            arguments.padding,
            arguments.features,
            arguments.device,
            arguments.backends,
            arguments.keops_queries,
        )
