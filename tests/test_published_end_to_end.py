"""``itkdeepreg register`` against the published ``unigradicon-register`` (unigradicon 1.0.6),
end to end: the same weights file and image files, the written transform and the warped
image compared with what the published command wrote
(tools/make_published_reference.py --end-to-end).

uniGradICON runs on its 175^3 grid whatever the images, so each registration here takes
about a minute of two CPU cores."""

import itk
import numpy as np
import pytest
from published_fixture import END_TO_END, end_to_end_pair, write_end_to_end_weights

from itkdeepreg.cli import main

POINT_TOLERANCE = 1e-3  # mm
INTENSITY_TOLERANCE = 1e-4  # of the warped image's range


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The brain pair and the seeded weights as files, as the published command was given."""
    folder = tmp_path_factory.mktemp("end_to_end")
    fixed, moving = end_to_end_pair(folder)
    weights = folder / "weights.trch"
    write_end_to_end_weights(weights)
    return folder, fixed, moving, weights


def register(inputs, name, *options):
    """Run ``itkdeepreg register``; the distances (mm) from the published mapped points to
    where the written .h5 maps the reference points, and the warped image's differences
    from the published one at the stored voxels, in parts of its range."""
    folder, fixed, moving, weights = inputs
    transform, warped = folder / f"{name}.h5", folder / f"{name}.nii.gz"
    arguments = [
        "register", "--fixed", str(fixed), "--moving", str(moving),
        "--fixed-modality", "mri", "--moving-modality", "mri", "--weights", str(weights),
        "--transform-out", str(transform), "--warped-out", str(warped), "--quiet", *options,
    ]  # fmt: skip
    assert main(arguments) == 0
    reference = np.load(END_TO_END)
    written = itk.transformread(str(transform))[0]
    mapped = np.array([written.TransformPoint([float(v) for v in p]) for p in reference["points"]])
    ours = itk.array_from_image(itk.imread(str(warped), itk.F))[tuple(reference["warped_voxels"].T)]
    return (
        np.linalg.norm(mapped - reference["mapped"], axis=1),
        np.abs(ours - reference["warped"]) / reference["warped_range"],
    )


def test_register_writes_the_published_transform_and_warped_image(inputs):
    reference = np.load(END_TO_END)
    moved = np.linalg.norm(reference["mapped"] - reference["points"], axis=1)
    assert moved.mean() > 5  # mm: the published map is far from the identity

    distances, intensities = register(inputs, "published")

    assert distances.max() < POINT_TOLERANCE, (distances.mean(), distances.max())
    assert intensities.max() < INTENSITY_TOLERANCE


def test_with_the_grid_placed_corner_to_corner_the_answer_is_another(inputs):
    """The comparison above sees the placement: corner to corner, points land elsewhere."""
    distances, _ = register(inputs, "corners", "--option", "placement=corners")
    assert distances.mean() > 100 * POINT_TOLERANCE
