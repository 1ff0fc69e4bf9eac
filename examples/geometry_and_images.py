"""An ITK image as a tensor plus geometry, onto a 175^3 model grid and back.

python examples/geometry_and_images.py
"""

import itk
import numpy as np

import itkdeepreg as idr
from itkdeepreg.data import mni152_t1_2mm
from itkdeepreg.interop import image_to_tensor, tensor_to_image


def main():
    image = itk.imread(mni152_t1_2mm())  # uint8, 99x117x95 voxels of 2 mm
    tensor, geometry = image_to_tensor(image)  # [1, 1, 95, 117, 99] float32, (z, y, x)
    print(geometry)

    # unit-cube coordinates (tensor order) <-> physical LPS points (x, y, z order)
    centre = geometry.to_physical(np.array([0.5, 0.5, 0.5]))
    corner = geometry.to_physical(np.array([0.0, 0.0, 0.0]))
    assert np.allclose(corner, image.TransformIndexToPhysicalPoint([0, 0, 0]))
    print(f"centre of the unit cube at {centre.round(2)} mm, first voxel at {corner} mm")

    # a model grid spans the same unit cube: first and last voxel centres stay in place
    model = geometry.resized((175, 175, 175))
    on_model_grid = idr.resample(tensor, model.shape)
    model_image = tensor_to_image(on_model_grid, model, itk.F)
    print(f"model grid: spacing {model.spacing.round(3)} mm, the direction of the image")

    back = idr.resample(on_model_grid, geometry.shape)
    print(f"back on the image grid: mean |difference| {float((back - tensor).abs().mean()):.3f}")
    return model_image


if __name__ == "__main__":
    main()
