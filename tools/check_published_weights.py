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
from make_published_reference import network_maps  # puts tests/ on the path
from published_fixture import displacement_in_voxels, our_maps

from itkdeepreg.zoo import load_weights, read_state_dict, unigradicon_network
from itkdeepreg.zoo.weights import sha256_of


def main(path):
    print(f"sha256 {sha256_of(path)}  {path}")
    state = read_state_dict(path)
    model = load_weights(unigradicon_network(), state)
    print("loads strictly into our network: every name and shape")
    published, ours = network_maps(state), our_maps(model)
    for name in ("forward", "backward"):
        difference = np.abs(ours[name] - published[name]).max()
        verdict = "parity" if difference < 1e-5 else "NOT parity"
        print(
            f"{name}: largest difference {difference:.2e} ({verdict}); the map moves up to "
            f"{displacement_in_voxels(published[name]):.2f} voxels"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a published .trch weights file")
    main(parser.parse_args().weights)
