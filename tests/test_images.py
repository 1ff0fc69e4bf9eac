import itk
import numpy as np
import pytest
import torch
from conftest import geometry_pair, smooth_image

import itkdeepreg as idr
from itkdeepreg.interop import image_to_tensor, tensor_to_image

PIXEL_TYPES = [itk.UC, itk.SS, itk.US, itk.SI, itk.UI, itk.F, itk.D]


@pytest.mark.parametrize("pixel_type", PIXEL_TYPES, ids=lambda p: p.short_name)
def test_every_scalar_pixel_type_round_trips(pixel_type, dimension):
    geometry, _ = geometry_pair(dimension)
    values = torch.from_numpy(np.random.default_rng(0).integers(0, 100, geometry.shape)).double()
    image = tensor_to_image(values[None, None], geometry, pixel_type)
    assert itk.template(image)[1] == (pixel_type, dimension)
    tensor, read = image_to_tensor(image)
    assert tensor.shape == (1, 1, *geometry.shape) and tensor.dtype == torch.float32
    assert torch.equal(tensor[0, 0].double(), values)
    np.testing.assert_allclose(read.unit_to_physical, geometry.unit_to_physical, atol=1e-12)


def test_integer_pixel_types_round_and_clip():
    geometry = idr.ImageGeometry((3, 2))
    values = torch.tensor([[-5.0, 0.4, 0.6], [254.5, 255.4, 300.0]])
    image = tensor_to_image(values[None, None], geometry, itk.UC)
    assert itk.array_from_image(image).tolist() == [[0, 0, 1], [254, 255, 255]]
    wide = torch.tensor([[5e9, 4294967295.0, -1.0], [3e9, -3e9, 2147483647.0]])[None, None]
    assert itk.array_from_image(tensor_to_image(wide, geometry, itk.UI)).tolist()[0] == [
        4294967295,
        4294967295,
        0,
    ]
    assert itk.array_from_image(tensor_to_image(wide, geometry, itk.SI)).tolist()[1] == [
        2147483647,
        -2147483648,
        2147483647,
    ]


def test_tensor_lands_on_the_requested_device_and_dtype():
    image = tensor_to_image(torch.rand(1, 1, 4, 5), idr.ImageGeometry((5, 4)))
    tensor, _ = image_to_tensor(image, device="cpu", dtype=torch.float64)
    assert tensor.dtype == torch.float64 and tensor.device.type == "cpu"
    if torch.cuda.is_available():
        assert image_to_tensor(image, device="cuda")[0].device.type == "cuda"


def test_resampling_onto_a_model_grid_matches_itk(dimension):
    """torch resampling onto the model grid = ITK resampling onto the resized geometry."""
    geometry, _ = geometry_pair(dimension)
    image = tensor_to_image(smooth_image(geometry.shape), geometry, itk.D)
    tensor, _ = image_to_tensor(image, dtype=torch.float64)
    model = geometry.resized((24, 31, 20)[:dimension])
    on_model_grid = idr.resample(tensor, model.shape)
    reference = tensor_to_image(torch.zeros(1, 1, *model.shape), model)
    expected = itk.resample_image_filter(image, use_reference_image=True, reference_image=reference)
    np.testing.assert_allclose(
        on_model_grid[0, 0].numpy(), itk.array_from_image(expected), atol=1e-6
    )
    back = idr.resample(on_model_grid, geometry.shape)
    assert (back - tensor).abs().max() < 0.02  # two linear interpolations of a smooth image


def test_bad_images_are_refused_with_the_reason():
    with pytest.raises(TypeError, match="must be an itk.Image, got ndarray"):
        image_to_tensor(np.zeros((4, 4)))
    four_d = itk.Image[itk.F, 4].New()
    four_d.SetRegions([2, 2, 2, 2])
    four_d.Allocate()
    with pytest.raises(ValueError, match="2D or 3D, got a 4D"):
        image_to_tensor(four_d)
    vector = itk.image_from_array(np.zeros((4, 4, 3), np.float32), is_vector=True)
    with pytest.raises(TypeError, match="scalar"):
        image_to_tensor(vector)
    vector_pixels = itk.Image[itk.Vector[itk.F, 3], 3].New()
    vector_pixels.SetRegions([2, 2, 2])
    vector_pixels.Allocate()
    with pytest.raises(TypeError, match="vector pixels"):
        image_to_tensor(vector_pixels)
    nan = np.ones((4, 4), np.float32)
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        image_to_tensor(itk.image_from_array(nan))
    with pytest.raises(ValueError, match="not one image of shape"):
        tensor_to_image(torch.zeros(1, 1, 4, 4), idr.ImageGeometry((5, 4)))
    with pytest.raises(ValueError, match="not one image of shape"):
        tensor_to_image(torch.zeros(2, 1, 4, 5), idr.ImageGeometry((5, 4)))
    with pytest.raises(TypeError, match="must be an ImageGeometry"):
        tensor_to_image(torch.zeros(1, 1, 4, 5), itk.image_from_array(np.zeros((4, 5), np.float32)))
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_image(torch.full((1, 1, 4, 5), float("nan")), idr.ImageGeometry((5, 4)), itk.US)
