import pytest
import torch

from itkdeepreg.methods import get_method
from itkdeepreg.zoo import preprocess, preprocess_gradicon_brain, preprocess_gradicon_lung


def test_ct_is_clipped_to_the_hounsfield_window_then_scaled():
    ct = torch.tensor([[-3000.0, -1000.0, 0.0, 1000.0, 2500.0]])
    assert preprocess(ct, "ct").tolist() == [[0.0, 0.0, 0.5, 1.0, 1.0]]


def test_mri_is_clipped_at_its_99th_percentile_then_scaled():
    mri = torch.arange(1000.0)
    mri[-1] = 1e6  # one bright outlier must not squash the rest
    out = preprocess(mri, "mri")
    assert out.min() == 0 and out.max() == 1
    assert out[989].item() == pytest.approx(1.0) and out[-1].item() == 1.0  # 990th smallest = 989
    assert out[494].item() == pytest.approx(494 / 989)


def test_mask_multiplies_and_bad_input_is_refused():
    image = torch.linspace(0, 1, 10)
    mask = (torch.arange(10) < 5).float()
    assert torch.count_nonzero(preprocess(image, "mri", mask=mask)[5:]) == 0
    with pytest.raises(ValueError, match="modality"):
        preprocess(image, "pet")
    with pytest.raises(ValueError, match="constant"):
        preprocess(torch.full((4, 4), 2000.0), "ct")


def test_gradicon_recipes_refuse_what_their_model_cannot_register():
    image = torch.linspace(-1000, 500, 10)
    with pytest.raises(ValueError, match="lung model registers CT"):
        preprocess_gradicon_lung(image, "mri")
    with pytest.raises(ValueError, match="brain model registers MRI"):
        preprocess_gradicon_brain(image, "ct")
    with pytest.raises(ValueError, match="no positive intensity"):
        preprocess_gradicon_brain(-image.abs() - 1, "mri")
    with pytest.raises(ValueError, match="constant after clipping"):
        preprocess_gradicon_lung(torch.full((4, 4), 300.0))


def test_the_gradicon_methods_preprocess_with_their_own_recipes():
    assert get_method("gradicon-lung").preprocessing is preprocess_gradicon_lung
    assert get_method("gradicon-brain").preprocessing is preprocess_gradicon_brain
    assert get_method("unigradicon").preprocessing is preprocess
