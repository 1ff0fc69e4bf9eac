"""A pipeline of parameter files: an elastix affine map, then our deformable step.

python examples/pipeline.py [output folder]
"""

import sys

import itk
import numpy as np
import torch

import itkdeepreg as idr
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.parameter_files import step_parameters, write_parameter_file
from itkdeepreg.pipeline import run_pipeline


def misalignment():
    """A turn of 6 degrees about the brain's centre and a shift of 5 mm."""
    affine = itk.Euler2DTransform[itk.D].New()
    affine.SetCenter([90.0, -126.0])
    affine.SetAngle(np.radians(6.0))
    affine.SetTranslation([4.0, -3.0])
    return affine


def misaligned(image, labels):
    """The moving image and its labels moved by :func:`misalignment`, for elastix to undo."""

    def moved(image, interpolator):
        return itk.resample_image_filter(
            image,
            transform=misalignment(),
            interpolator=interpolator.New(image),
            use_reference_image=True,
            reference_image=image,
        )

    return (
        moved(image, itk.LinearInterpolateImageFunction),
        moved(labels, itk.NearestNeighborInterpolateImageFunction),
    )


def main(output="."):
    pair = brain_pair(seed=0, dimension=2)
    fixed, moving = pair.itk_images()
    labels = idr.tensor_to_image(pair.moving_labels.float(), pair.fixed_geometry, itk.UC)
    moving, labels = misaligned(moving, labels)

    # elastix's own affine map, as an elastix user keeps it ...
    elastix = itk.ParameterObject.New()
    elastix.AddParameterMap(elastix.GetDefaultParameterMap("affine", 3))
    elastix.WriteParameterFile(f"{output}/affine.txt")
    # ... and our step in the same format: (Registration "DeepRegistration") (Model ...)
    write_parameter_file(step_parameters("deformable", similarity="lncc"), f"{output}/deep.txt")

    warped, transform = run_pipeline(
        fixed, moving, [f"{output}/affine.txt", f"{output}/deep.txt"], show_progress=False
    )
    transform.Write(f"{output}/transform.h5")  # one composite: ITK and ANTs apply it
    transform.WriteTransformixParameters(f"{output}/transform.txt")  # and transformix

    fixed_labels = pair.fixed_labels[0, 0]
    before = itk.array_from_image(labels).astype(np.int64)
    after = itk.array_from_image(transform.Warp(labels, "label")).astype(np.int64)
    dice_before, dice_after = (
        idr.losses.dice(torch.from_numpy(a), fixed_labels, [1, 2]).mean().item()
        for a in (before, after)
    )
    print(open(f"{output}/deep.txt").read())
    print(f"Dice of grey and white matter: {dice_before:.4f} -> {dice_after:.4f}")
    return dice_before, dice_after


if __name__ == "__main__":
    main(*sys.argv[1:])
