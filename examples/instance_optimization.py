"""Instance optimization of a network's answer, both kinds, on a 2D pair (a small GradICON).

python examples/instance_optimization.py
"""

import torch

import itkdeepreg as idr
from itkdeepreg import losses
from itkdeepreg.models import DisplacementStep, Downsample, TwoStep, register_pair
from itkdeepreg.nets import GradICONUNet
from itkdeepreg.optimize import optimize_fields, optimize_weights


def disc(centre, radius, shape=(64, 64)):
    grid = idr.identity_grid(shape)
    return (
        ((grid - torch.tensor(centre).reshape(1, 2, 1, 1)) ** 2)
        .sum(1, keepdim=True)
        .lt(radius**2)
        .float()
    )


def main():
    torch.manual_seed(0)
    # an untrained two-step GradICON stands in for a trained one: IO starts from its answer
    model = TwoStep(
        Downsample(DisplacementStep(GradICONUNet(2))), DisplacementStep(GradICONUNet(2))
    )
    moving, fixed = disc((0.56, 0.44), 0.2), disc((0.5, 0.5), 0.25)
    forward, backward = register_pair(model, moving, fixed, inverse=True)

    fields = optimize_fields(forward, backward, moving, fixed, iterations=80, similarity=losses.mse)
    weights = optimize_weights(
        model, moving, fixed, iterations=20, learning_rate=1e-3, similarity=losses.mse
    )

    print(f"{'':<28}{'MSE':>8}")
    for name, transform in [
        ("network", forward),
        ("field-level IO (80 steps)", fields.forward),
        ("weight-level IO (20 steps)", weights.forward),
    ]:
        print(f"{name:<28}{losses.mse(transform.warp(moving), fixed).item():>8.4f}")
    consistency = losses.icon(fields.forward, fields.backward, (32, 32)) ** 0.5 * 63
    print(
        f"field-level forward o backward: {consistency.item():.2f} voxels from the identity (RMS)"
    )
    return fields, weights


if __name__ == "__main__":
    main()
