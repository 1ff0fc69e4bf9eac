"""Run the published code on tests/published_fixture.py's weights, images and grids and store
what it gives, the reference that tests/test_published_parity.py holds ours to: the
uniGradICON network's maps, the preprocessing recipes, three similarities, and the export of a
network map to an ITK transform.

The published packages need a Python of their own (they want torchvision, which has no CPU
build on PyPI); with the project installed, a side environment that sees it is enough:

    python -m venv --system-site-packages /tmp/published
    /tmp/published/bin/pip install --no-deps icon_registration==1.1.9 unigradicon==1.0.6 \
        footsteps girder_client blosc tensorboard
    /tmp/published/bin/python tools/make_published_reference.py
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import icon_registration.losses as published_losses
import itk
import numpy as np
import torch
import unigradicon
from icon_registration import itk_wrapper
from icon_registration.pretrained_models.HCP_brain import brain_network_preprocess
from icon_registration.pretrained_models.lung_ct import lung_network_preprocess

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from itkdeepreg.geometry import ImageGeometry  # noqa: E402
from itkdeepreg.interop import tensor_to_image  # noqa: E402
from itkdeepreg.sampling import identity_grid  # noqa: E402
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


def network_maps(weights: dict | None = None) -> dict:
    """The forward and backward maps of uniGradICON's network at ``sample_voxels()``, with
    ``weights`` (a state dict; by default ``seeded_weights``)."""
    net = unigradicon.make_network([1, 1, *SHAPE], include_last_step=True)
    network = net.regis_net
    names = json.loads((ROOT / "tests" / "data" / "unigradicon_state_dict_shapes.json").read_text())
    if {name: list(t.shape) for name, t in network.state_dict().items()} != names:
        raise SystemExit("the published network's state dict differs from the reference JSON")
    # as the published code loads its files (the GradICON models' non-strictly)
    network.load_state_dict(weights or seeded_weights(network.state_dict()), strict=False)
    net.eval()
    moving, fixed = (torch.from_numpy(image)[None, None] for image in analytic_pair())
    identity = net.identity_map
    with torch.no_grad():  # image_A is the moving image: phi_AB sends fixed points to moving
        forward = network(moving, fixed)(identity)[0]
        backward = network(fixed, moving)(identity)[0]
    largest = (forward - identity[0]).abs().amax().item() * (max(SHAPE) - 1)
    print(f"largest displacement of the forward map: {largest:.2f} voxels")
    voxels = sample_voxels()
    index = (slice(None), *torch.from_numpy(voxels).T)
    return {
        "voxels": voxels,
        "forward": forward[index].T.numpy(),
        "backward": backward[index].T.numpy(),
    }


def preprocessed() -> dict:
    """Each published recipe on ``analytic_intensities()``."""
    raw = {name: itk.image_from_array(a) for name, a in analytic_intensities().items()}
    # GradICON's lung recipe multiplies by the segmentation as it is: give it a binary one
    lungs = itk.image_from_array((analytic_intensities()["labels"] > 0).astype(np.float32))
    results = {
        "ct": unigradicon.preprocess(raw["ct"], "ct"),
        "mri": unigradicon.preprocess(raw["mri"], "mri"),
        "ct_labels": unigradicon.preprocess(raw["ct"], "ct", mask=raw["labels"]),
        "lung": lung_network_preprocess(raw["ct"], lungs),
        "brain": brain_network_preprocess(raw["mri"]),
    }
    return {f"preprocessed_{name}": itk.array_from_image(i) for name, i in results.items()}


def similarities() -> dict:
    """NCC, MSE (SSD) and MIND-SSC of ``analytic_pair()``."""
    moving, fixed = (torch.from_numpy(image)[None, None] for image in analytic_pair())
    measures = {
        "ncc": published_losses.NCC(),
        "mse": published_losses.SSD(),
        "mind_ssc": published_losses.MINDSSC(radius=2, dilation=2),
    }
    return {f"loss_{name}": np.float32(m(moving, fixed).item()) for name, m in measures.items()}


def exported_map() -> dict:
    """The published export (``create_itk_transform``) of a smooth map on the 175^3 network
    grid between two images of ``FIXED_GRID`` and ``MOVING_GRID``, at ``fixed_points()``."""

    def image(grid):  # only its geometry counts
        geometry = ImageGeometry(**grid)
        return tensor_to_image(torch.zeros(1, 1, *geometry.shape), geometry)

    identity = identity_grid(NETWORK_GRID)
    transform = itk_wrapper.create_itk_transform(
        identity + smooth_displacement(), identity, image(MOVING_GRID), image(FIXED_GRID)
    )
    points = [transform.TransformPoint([float(v) for v in p]) for p in fixed_points()]
    return {"exported": np.array(points)}


def main():
    torch.set_num_threads(2)
    versions = [f"{p} {version(p)}" for p in ("icon_registration", "unigradicon", "torch")]
    reference = {
        **network_maps(), **preprocessed(), **similarities(), **exported_map(),
        "versions": np.array(versions),
    }
    partial = REFERENCE.with_suffix(".partial.npz")  # the old reference stays until this is whole
    np.savez_compressed(partial, **reference)
    os.replace(partial, REFERENCE)
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
