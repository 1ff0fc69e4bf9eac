"""Run the published uniGradICON network on tests/published_fixture.py's weights and images and
store its maps, the reference that tests/test_published_parity.py holds ours to.

The published packages need a Python of their own (they want torchvision, which has no CPU
build on PyPI); with the project installed, a side environment that sees it is enough:

    python -m venv --system-site-packages /tmp/published
    /tmp/published/bin/pip install --no-deps icon_registration==1.1.9 unigradicon==1.0.6 \
        footsteps girder_client blosc tensorboard
    /tmp/published/bin/python tools/make_published_reference.py
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from published_fixture import (  # noqa: E402
    FIXED_GRID,
    MOVING_GRID,
    NETWORK_GRID,
    REFERENCE,
    SHAPE,
    analytic_intensities,
    analytic_pair,
    fixed_points,
    sample_voxels,
    seeded_weights,
    smooth_displacement,
)


def main():
    import icon_registration.losses
    import itk
    import unigradicon
    from icon_registration import itk_wrapper
    from icon_registration.pretrained_models.HCP_brain import brain_network_preprocess
    from icon_registration.pretrained_models.lung_ct import lung_network_preprocess

    torch.set_num_threads(2)
    net = unigradicon.make_network([1, 1, *SHAPE], include_last_step=True)
    published = net.regis_net
    names = json.loads((ROOT / "tests" / "data" / "unigradicon_state_dict_shapes.json").read_text())
    shapes = {name: list(t.shape) for name, t in published.state_dict().items()}
    if shapes != names:
        raise SystemExit("the published network's state dict differs from the reference JSON")
    published.load_state_dict(seeded_weights(published.state_dict()))
    net.eval()

    moving, fixed = (torch.from_numpy(image)[None, None] for image in analytic_pair())
    with torch.no_grad():
        # moving = image_A, fixed = image_B: phi_AB sends fixed coordinates to moving ones
        forward = published(moving, fixed)(net.identity_map)[0]
        backward = published(fixed, moving)(net.identity_map)[0]
    voxels = sample_voxels()
    index = tuple(torch.from_numpy(voxels).T)
    displacement = (forward - net.identity_map[0]).abs().amax().item() * (max(SHAPE) - 1)
    print(f"largest displacement of the forward map: {displacement:.2f} voxels")
    similarities = {
        "loss_ncc": icon_registration.losses.NCC(),
        "loss_mse": icon_registration.losses.SSD(),
        "loss_mind_ssc": icon_registration.losses.MINDSSC(radius=2, dilation=2),
    }
    losses = {name: np.float32(loss(moving, fixed).item()) for name, loss in similarities.items()}
    exported = exported_map(itk, itk_wrapper)
    REFERENCE.parent.mkdir(exist_ok=True)
    raw = analytic_intensities()
    image, labels = (itk.image_from_array(raw[name]) for name in ("ct", "labels"))
    preprocessed = {
        f"preprocessed_{modality}": itk.array_from_image(
            unigradicon.preprocess(itk.image_from_array(raw[modality]), modality)
        )
        for modality in ("ct", "mri")
    }
    preprocessed["preprocessed_ct_labels"] = itk.array_from_image(
        unigradicon.preprocess(image, "ct", mask=labels)
    )
    # GradICON's lung recipe multiplies by the segmentation as it is: give it a binary one
    lungs = itk.image_from_array((raw["labels"] > 0).astype(np.float32))
    preprocessed["preprocessed_lung"] = itk.array_from_image(
        lung_network_preprocess(image, lungs)
    )
    preprocessed["preprocessed_brain"] = itk.array_from_image(
        brain_network_preprocess(itk.image_from_array(raw["mri"]))
    )
    np.savez_compressed(
        REFERENCE,
        voxels=voxels,
        forward=forward[(slice(None), *index)].T.numpy(),
        backward=backward[(slice(None), *index)].T.numpy(),
        **preprocessed,
        **losses,
        exported=exported,
        versions=np.array(
            [f"{p} {version(p)}" for p in ("icon_registration", "unigradicon", "torch")]
        ),
    )
    print(f"wrote {REFERENCE}")


def exported_map(itk, itk_wrapper):
    """The published export (``create_itk_transform``) of a smooth map on the 175^3 network
    grid between two images of ``FIXED_GRID`` and ``MOVING_GRID``, at ``fixed_points()``."""

    def image(grid):
        empty = itk.image_from_array(np.zeros(grid["size"][::-1], np.float32))
        empty.SetOrigin(grid["origin"])
        empty.SetSpacing(grid["spacing"])
        empty.SetDirection(itk.matrix_from_array(np.ascontiguousarray(grid["direction"])))
        return empty

    identity = torch.stack(
        torch.meshgrid(*(torch.linspace(0, 1, n) for n in NETWORK_GRID), indexing="ij")
    )[None]
    transform = itk_wrapper.create_itk_transform(
        identity + smooth_displacement(), identity, image(MOVING_GRID), image(FIXED_GRID)
    )
    return np.array([transform.TransformPoint([float(v) for v in p]) for p in fixed_points()])


if __name__ == "__main__":
    main()
