"""Run the published code on tests/published_fixture.py's weights, images and grids and store
what it gives, the reference that tests/test_published_parity.py holds ours to: the
uniGradICON network's maps, the preprocessing recipes, three similarities, and the export of a
network map to an ITK transform.

With ``--end-to-end`` it runs the published ``unigradicon-register`` command instead, on a
brain pair (``end_to_end_pair``: the bundled MNI T1 template, and the template moved rigidly
onto an oblique, flipped, anisotropic grid) with ``seeded_weights`` given by its
``--network_weights`` flag and no instance optimization (``--io_iterations None``), and stores
``brain_points()``, the written transform's image of them, and the warped image at a few
thousand voxels: tests/test_published_end_to_end.py holds ``itkdeepreg register`` to it.

The published packages need a Python of their own (they want torchvision, which has no CPU
build on PyPI); with the project installed, a side environment that sees it is enough:

    python -m venv --system-site-packages /tmp/published
    /tmp/published/bin/pip install --no-deps icon_registration==1.1.9 unigradicon==1.0.6 \
        footsteps girder_client blosc tensorboard
    /tmp/published/bin/python tools/make_published_reference.py
    /tmp/published/bin/python tools/make_published_reference.py --end-to-end
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
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
    END_TO_END,
    FIXED_GRID,
    MOVING_GRID,
    NETWORK_GRID,
    REFERENCE,
    SEED,
    SHAPE,
    analytic_intensities,
    analytic_pair,
    brain_points,
    end_to_end_pair,
    fixed_points,
    sample_voxels,
    seeded_weights,
    smooth_displacement,
    write_end_to_end_weights,
)

# voxels of the fixed grid where the end-to-end reference keeps the published warped image
WARPED_SAMPLES = 4000


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


def end_to_end() -> dict:
    """``unigradicon-register`` on ``end_to_end_pair()`` with seeded weights: where its
    transform file sends ``brain_points()``, and its warped image at ``WARPED_SAMPLES`` voxels."""
    command = Path(sys.executable).parent / "unigradicon-register"
    with tempfile.TemporaryDirectory(prefix="ugi_end_to_end_") as folder:
        folder = Path(folder)
        fixed, moving = end_to_end_pair(folder)
        weights = folder / "weights.trch"
        write_end_to_end_weights(weights)
        transform, warped = folder / "transform.h5", folder / "warped.nii.gz"
        start = time.perf_counter()
        arguments = [
            str(command), "--fixed", str(fixed), "--moving", str(moving),
            "--fixed_modality", "mri", "--moving_modality", "mri",
            "--network_weights", str(weights), "--io_iterations", "None",
            "--transform_out", str(transform), "--warped_moving_out", str(warped),
        ]  # fmt: skip
        # without instance optimization it writes nothing else into the folder
        subprocess.run(arguments, check=True, cwd=folder)
        print(f"unigradicon-register took {time.perf_counter() - start:.0f} s")
        published = itk.transformread(str(transform))[0]
        points = brain_points()
        mapped = np.array([published.TransformPoint([float(v) for v in p]) for p in points])
        warped_array = itk.array_from_image(itk.imread(str(warped), itk.F))
    moved = np.linalg.norm(mapped - points, axis=1)
    print(f"points moved by {moved.mean():.2f} mm on average, {moved.max():.2f} at most")
    rng = np.random.default_rng(SEED)
    voxels = np.stack([rng.integers(0, n, WARPED_SAMPLES) for n in warped_array.shape], axis=1)
    return {
        "points": points,
        "mapped": mapped,
        "warped_voxels": voxels,  # (z, y, x) array indices of the fixed image
        "warped": warped_array[tuple(voxels.T)],
        "warped_range": np.float32(warped_array.max() - warped_array.min()),
    }


def main():
    torch.set_num_threads(2)
    packages = ("icon_registration", "unigradicon", "torch", "itk")
    versions = {"versions": np.array([f"{p} {version(p)}" for p in packages])}
    if sys.argv[1:] == ["--end-to-end"]:
        path, reference = END_TO_END, end_to_end()
    elif not sys.argv[1:]:
        path = REFERENCE
        reference = {**network_maps(), **preprocessed(), **similarities(), **exported_map()}
    else:
        raise SystemExit(f"usage: {sys.argv[0]} [--end-to-end]")
    partial = path.with_suffix(".partial.npz")  # the old reference stays until this is whole
    np.savez_compressed(partial, **reference, **versions)
    os.replace(partial, path)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
