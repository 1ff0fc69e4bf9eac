"""The ITK face: register the bundled brain pair the ITK way, and the same in one line.

python examples/itk_face.py [output folder]
"""

import sys

import itk
import numpy as np

import itkdeepreg  # noqa: F401  (adds itk.DeepRegistrationMethod and its kin)
from itkdeepreg.data.brain_pairs import brain_pair


def main(output="."):
    pair = brain_pair(seed=0, dimension=2)  # the bundled default pair, one axial slice
    fixed, moving = pair.itk_images()

    # the object style, as ITK and ITKElastix: New, Set..., Update, Get...
    registration = itk.DeepRegistrationMethod.New(
        fixed_image=fixed, moving_image=moving, method="deformable", show_progress=False
    )
    registration.SetMetric("lncc")
    registration.Update()
    warped = registration.GetOutput()  # the moving image on the fixed grid
    transform = registration.GetTransform()  # fixed -> moving points, with its inverse

    # the function style: the same registration in one line, the same result
    warped_too, _ = itk.deep_registration_method(
        fixed, moving, method="deformable", metric="lncc", show_progress=False
    )
    same = np.array_equal(itk.array_from_image(warped), itk.array_from_image(warped_too))

    # files that ITK and antsApplyTransforms read; ITK's resampling through the file
    transform.Write(f"{output}/transform.h5", f"{output}/inverse.h5")
    from_file = itk.transformread(f"{output}/transform.h5")[0]
    by_itk = itk.resample_image_filter(
        moving, transform=from_file, use_reference_image=True, reference_image=fixed
    )
    brain = itk.array_from_image(fixed) > 0.1
    difference = np.abs(itk.array_from_image(by_itk) - itk.array_from_image(warped))[brain].max()

    point = [0.0, -20.0]  # LPS mm
    there = transform.TransformPoint(point)
    back = transform.GetInverseTransform().TransformPoint(there)
    before = pair.score(itkdeepreg.Affine.identity(2))
    after = pair.score(transform.forward)
    print(
        f"Dice {before['dice']:.4f} -> {after['dice']:.4f}, "
        f"error {before['error']:.3f} -> {after['error']:.3f} mm"
    )
    print(f"object and function styles agree: {same}")
    print(
        f"ITK's resampling through transform.h5 against GetOutput(), in the brain: {difference:.1e}"
    )
    print(f"{point} -> ({there[0]:.2f}, {there[1]:.2f}) -> ({back[0]:.2f}, {back[1]:.2f})")
    return before, after, same, difference


if __name__ == "__main__":
    main(*sys.argv[1:])
