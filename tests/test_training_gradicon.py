"""A tiny GradICON trained from scratch on synthetic 2D shapes learns to register them."""

import torch

import itkdeepreg as idr
from itkdeepreg import losses
from itkdeepreg.models import DisplacementStep
from itkdeepreg.nets import GradICONUNet

SIZE = 32


def ellipses(batch, generator):
    """Random filled ellipses: centre and radii vary, so pairs differ by smooth maps."""
    grid = idr.identity_grid((SIZE, SIZE))
    centre = 0.35 + 0.3 * torch.rand(batch, 2, 1, 1, generator=generator)
    radii = 0.12 + 0.1 * torch.rand(batch, 2, 1, 1, generator=generator)
    return (((grid - centre) / radii) ** 2).sum(1, keepdim=True).lt(1).float()


def halves(transform, batch):
    return transform.map_tensors(lambda t: t[:batch]), transform.map_tensors(lambda t: t[batch:])


def test_gradicon_training_lowers_similarity_and_keeps_maps_fold_free():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = DisplacementStep(GradICONUNet(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):  # both directions as one batch, the GradICON objective
        a, b = ellipses(8, generator), ellipses(8, generator)
        forward, backward = halves(model(torch.cat([a, b]), torch.cat([b, a])), 8)
        similarity = losses.mse(forward.warp(a, padding="border"), b) + losses.mse(
            backward.warp(b, padding="border"), a
        )
        loss = similarity + 1.5 * losses.gradicon(forward, backward, (16, 16), noise=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    held_out = torch.Generator().manual_seed(1)
    a, b = ellipses(16, held_out), ellipses(16, held_out)
    with torch.no_grad():
        forward = model(a, b)
        before = losses.mse(a, b).item()
        after = losses.mse(forward.warp(a, padding="border"), b).item()
        folds = losses.folding_fraction(forward, (SIZE, SIZE))
    assert after < 0.6 * before, (before, after)
    assert folds < 0.01
