"""A cohort on Dask: two brain pairs registered on a local cluster of two workers, each pair
with its outputs and its quality report, the whole batch in summary.csv.

python examples/batch.py [output folder]
"""

import csv
import os
import sys

import itk

from itkdeepreg.batch import format_table, run_batch
from itkdeepreg.data.brain_pairs import brain_pair


def main(output="batch-example", client=None):
    # two bundled pairs as files, and the CSV file that lists them (paths relative to it)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "pairs.csv"), "w", newline="") as file:
        table = csv.writer(file)
        table.writerow(["name", "fixed", "moving"])
        for seed in (1000, 1001):
            fixed, moving = brain_pair(seed, dimension=2, regime="two-sided").itk_images()
            itk.imwrite(fixed, os.path.join(output, f"fixed-{seed}.nii.gz"))
            itk.imwrite(moving, os.path.join(output, f"moving-{seed}.nii.gz"))
            table.writerow([f"subject-{seed}", f"fixed-{seed}.nii.gz", f"moving-{seed}.nii.gz"])

    # the batch: a local cluster of two workers (or the Dask client given), one folder per pair
    rows = run_batch(
        os.path.join(output, "pairs.csv"),
        os.path.join(output, "results"),
        method="deformable",
        options={"iterations": (40, 20, 20)},
        outputs=("transform", "inverse", "warped"),
        workers=2,
        client=client,
        progress=False,
    )
    print(format_table(rows, "ncc"))
    flagged = [row["name"] for row in rows if row["flags"]]
    print(f"flagged for a look: {', '.join(flagged) or 'none'}")
    # a second run finds every pair complete and registers nothing
    again = run_batch(
        os.path.join(output, "pairs.csv"),
        os.path.join(output, "results"),
        method="deformable",
        options={"iterations": (40, 20, 20)},
        client=client,
        progress=False,
    )
    print(f"run again: {', '.join(row['status'] for row in again)}")
    return rows, again


if __name__ == "__main__":  # Dask's worker processes import this file: run it only here
    main(*sys.argv[1:])
