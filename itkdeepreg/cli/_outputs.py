"""The files of one registration by kind: what ``register`` writes where its flags say, and
``batch`` into each pair's folder under these names (imported when a command runs: ITK)."""

from __future__ import annotations

from ..files import IMAGE_SUFFIXES, TRANSFORM_SUFFIXES
from ..quality import REPORT_SUFFIXES, write_report
from ._files import write_image

# kind -> (the file's name in a batch's pair folder, the suffixes it may have)
OUTPUTS = {
    "transform": ("transform.h5", TRANSFORM_SUFFIXES),
    "inverse": ("inverse.h5", TRANSFORM_SUFFIXES),
    "warped": ("warped.nii.gz", IMAGE_SUFFIXES),
    "field": ("field.nii.gz", IMAGE_SUFFIXES),
    "jacobian": ("jacobian.nii.gz", IMAGE_SUFFIXES),
    "report": ("report.json", REPORT_SUFFIXES),
}


def output_writers(transform, warped, report=None) -> dict:
    """``kind -> write(path)`` for a result ``transform`` (an ``InverseConsistentTransform``),
    the ``warped`` moving image and the ``report`` row of its figures."""
    return {
        "transform": transform.Write,
        "inverse": lambda path: transform.GetInverseTransform().Write(path),
        "warped": lambda path: write_image(warped, path),
        "field": transform.WriteDisplacementField,
        "jacobian": lambda path: write_image(transform.GetJacobianDeterminant(), path),
        "report": lambda path: write_report(report, path),
    }
