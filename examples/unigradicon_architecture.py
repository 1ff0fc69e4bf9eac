"""uniGradICON's network, from an ITK image to an ITK transform (untrained weights).

Preprocess the bundled MNI152 brain as published, resample it onto a model grid, run the
four-U-Net uniGradICON tree on a pair, and export the resulting transform to ITK. Without the
published weights (a later step loads them) the network is the identity map, so this shows
the plumbing and the published parameter layout, not a registration.

    python examples/unigradicon_architecture.py
"""

import itk
import numpy as np
import torch

import itkdeepreg as idr
from itkdeepreg.data import mni152_t1_2mm
from itkdeepreg.interop import image_to_tensor, to_itk_transform
from itkdeepreg.zoo import UNIGRADICON_SHAPE, load_weights, preprocess, unigradicon_network

GRID = (72, 72, 72)  # the published grid is 175^3; 72^3 keeps this example quick on a CPU


def main():
    network = unigradicon_network().eval()
    weights = network.state_dict()
    count = sum(p.numel() for p in network.parameters())
    print(
        f"{len(weights)} tensors, {count / 1e6:.1f} M parameters; published grid {UNIGRADICON_SHAPE}"
    )
    # weights load strictly: with the published file, load_weights(network, fetch(UNIGRADICON))
    load_weights(unigradicon_network(), weights)
    renamed = {("net." + k if k.startswith("netPsi") else k): v for k, v in weights.items()}
    try:
        load_weights(unigradicon_network(), renamed)
    except ValueError as error:
        print(f"refused: {str(error)[:90]}...")

    image, geometry = image_to_tensor(itk.imread(mni152_t1_2mm()))
    fixed = idr.resample(preprocess(image, "mri"), GRID)
    moving = fixed.flip(-1)  # a mirrored brain as the moving image
    with torch.inference_mode():
        transform = network(moving, fixed)
    identity = idr.identity_grid(GRID)
    moved = (transform(identity) - identity).abs().max().item()
    print(f"untrained: the map moves points by at most {moved:.1e} (the identity)")

    exported = to_itk_transform(transform, geometry, geometry)
    centre = geometry.to_physical(np.full(3, 0.5))
    print(
        f"ITK: {exported.GetNumberOfTransforms()} transforms; centre {centre} -> {np.asarray(exported.TransformPoint(centre.tolist()))}"
    )
    return moved


if __name__ == "__main__":
    main()
