"""Check a published weights file against our network, and print its SHA-256 to pin.

    /tmp/published/bin/python tools/check_published_weights.py Step_2_final.trch

(the side environment of tools/make_published_reference.py). The file is read without
running pickled code and loaded into our uniGradICON-architecture network strictly (every name
and shape); the published network and ours then register tests/published_fixture.py's image
pair with it, and the largest difference of their maps is printed: under 1e-5 (of the unit
cube) is parity. All five published models (uniGradICON, multiGradICON, GradICON lung, knee
and brain) have this architecture; pin the printed digest in itkdeepreg/zoo/weights.py.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from make_published_reference import network_maps  # puts tests/ on the path
from published_fixture import SHAPE, analytic_pair

from itkdeepreg.models import register_pair
from itkdeepreg.sampling import identity_grid
from itkdeepreg.zoo import load_weights, read_state_dict, unigradicon_network
from itkdeepreg.zoo.weights import sha256_of


def main(path):
    print(f"sha256 {sha256_of(path)}  {path}")
    state = read_state_dict(path)
    model = load_weights(unigradicon_network(), state)
    print("loads strictly into our network: every name and shape")
    published = network_maps(state)
    moving, fixed = (torch.from_numpy(image)[None, None] for image in analytic_pair())
    forward, backward = register_pair(model, moving, fixed, inverse=True)
    grid = identity_grid(SHAPE)
    index = (slice(None), *torch.from_numpy(published["voxels"]).T)
    for name, transform in (("forward", forward), ("backward", backward)):
        ours = transform(grid)[0][index].T.numpy()
        difference = np.abs(ours - published[name]).max()
        moved = np.abs(published[name] - grid[0][index].T.numpy()).max() * (max(SHAPE) - 1)
        verdict = "parity" if difference < 1e-5 else "NOT parity"
        print(f"{name}: largest difference {difference:.2e} ({verdict}); the map moves up to "
              f"{moved:.2f} voxels")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a published .trch weights file")
    main(parser.parse_args().weights)
