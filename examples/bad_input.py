"""What itkdeepreg refuses, and what it never leaves behind (docs/reliability.md).

Four attempts a careless user makes, through the command as a user types it: a NIfTI file cut
short (ITK alone reads the missing half as zeros), a displacement field with one NaN vector,
an output that names an input, and a method option out of range. Each is one line on stderr
and a non-zero exit code, before any work, and the folder holds only what it held before.
"""

import gzip
import os
import subprocess
import sys

import itk
import numpy as np


def main(folder):
    image = itk.image_from_array(np.random.default_rng(0).random((12, 14, 16), np.float32))
    itk.imwrite(image, os.path.join(folder, "fixed.nii.gz"))
    itk.imwrite(image, os.path.join(folder, "moving.nii.gz"))
    with gzip.open(os.path.join(folder, "moving.nii.gz")) as file:
        whole = file.read()
    with gzip.open(os.path.join(folder, "short.nii.gz"), "wb") as file:
        file.write(whole[: len(whole) // 2])
    field = itk.Image[itk.Vector[itk.D, 3], 3].New()
    field.SetRegions([16, 14, 12])
    field.Allocate()
    vectors = itk.array_view_from_image(field)
    vectors[:] = 0
    vectors[3, 4, 5] = np.nan
    nan_field = itk.DisplacementFieldTransform[itk.D, 3].New()
    nan_field.SetDisplacementField(field)
    itk.transformwrite([nan_field], os.path.join(folder, "nan_field.h5"))

    images = ["--fixed", "fixed.nii.gz", "--moving"]
    attempts = {
        "truncated NIfTI": ["register", *images, "short.nii.gz", "--transform-out", "t.h5"],
        "NaN in a field": [
            "warp", *images, "moving.nii.gz", "--transform", "nan_field.h5", "--out", "w.nii.gz"
        ],
        "output = input": [
            "register", *images, "moving.nii.gz", "--warped-out", "moving.nii.gz"
        ],
        "levels=(0,)": [
            "register", *images, "moving.nii.gz", "--method", "affine",
            "--option", "levels=(0,)", "--option", "iterations=(5,)", "--transform-out", "t.h5",
        ],
    }  # fmt: skip
    before = sorted(os.listdir(folder))
    outcomes = {}
    for name, arguments in attempts.items():
        done = subprocess.run(
            [sys.executable, "-m", "itkdeepreg.cli", *arguments],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        outcomes[name] = done.returncode, done.stderr.strip()
        print(f"{name:16} exit {done.returncode}: {done.stderr.strip()}")
    assert sorted(os.listdir(folder)) == before, "an attempt left a file behind"
    print("the folder holds what it held before:", ", ".join(before))
    return outcomes


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        main(folder)
