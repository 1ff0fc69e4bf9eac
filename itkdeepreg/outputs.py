"""The files of one registration by kind: what ``itkdeepreg register`` writes where its flags
say, and a batch into each pair's folder under these names. Light to import (the command
line's parsers read the kinds); ITK is imported when a file is written."""

from __future__ import annotations

import os

from .files import IMAGE_SUFFIXES, TRANSFORM_SUFFIXES

REPORT_SUFFIXES = (".json", ".csv")

# kind -> (the file's name in a batch's pair folder, the suffixes it may have)
OUTPUTS = {
    "transform": ("transform.h5", TRANSFORM_SUFFIXES),
    "inverse": ("inverse.h5", TRANSFORM_SUFFIXES),
    "warped": ("warped.nii.gz", IMAGE_SUFFIXES),
    "field": ("field.nii.gz", IMAGE_SUFFIXES),
    "jacobian": ("jacobian.nii.gz", IMAGE_SUFFIXES),
    "report": ("report.json", REPORT_SUFFIXES),
}
OUTPUT_KINDS = tuple(kind for kind in OUTPUTS if kind != "report")  # a batch always reports


def write_image(image, path) -> None:
    import itk

    itk.imwrite(image, os.fspath(path), compression=True)


def output_writers(transform, warped, report=None) -> dict:
    """``kind -> write(path)`` for a result ``transform`` (an ``InverseConsistentTransform``),
    the ``warped`` moving image and the ``report`` row of its figures."""
    from .quality import write_report

    return {
        "transform": transform.Write,
        "inverse": lambda path: transform.GetInverseTransform().Write(path),
        "warped": lambda path: write_image(warped, path),
        "field": transform.WriteDisplacementField,
        "jacobian": lambda path: write_image(transform.GetJacobianDeterminant(), path),
        "report": lambda path: write_report(report, path),
    }
