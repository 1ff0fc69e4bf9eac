"""ANTs applies the written transform and warp as ITK does."""

import ants
import itk
import numpy as np
import pytest
import torch
from conftest import (
    example_transforms,
    geometry_pair,
    preimage_inside,
    resample_by_itk,
    smooth_image,
)

from itkdeepreg.interop import (
    tensor_to_image,
    to_itk_transform,
    write_displacement_field,
    write_transform,
)


@pytest.mark.parametrize("written", ["transform.h5", "warp.nii.gz", "warp.mha"])
def test_ants_apply_transforms_gives_itks_image(tmp_path, dimension, written):
    fixed, moving = geometry_pair(dimension)
    transform = example_transforms(dimension)["composite"]
    moving_image = tensor_to_image(smooth_image(moving.shape), moving, itk.F)
    fixed_image = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed, itk.F)
    by_itk = resample_by_itk(moving_image, to_itk_transform(transform, fixed, moving), fixed_image)
    path = str(tmp_path / written)
    (write_transform if written.endswith(".h5") else write_displacement_field)(
        transform, path, fixed, moving
    )
    itk.imwrite(fixed_image, str(tmp_path / "fixed.nii.gz"))
    itk.imwrite(moving_image, str(tmp_path / "moving.nii.gz"))
    warped = ants.apply_transforms(
        fixed=ants.image_read(str(tmp_path / "fixed.nii.gz")),
        moving=ants.image_read(str(tmp_path / "moving.nii.gz")),
        transformlist=[path],
        interpolator="linear",
    )
    by_ants = warped.numpy().T  # ANTsPy arrays are (x, y, z); ITK's are (z, y, x)
    inside = preimage_inside(transform, fixed.shape)
    assert np.abs(by_ants - by_itk)[inside].max() < 1e-4
