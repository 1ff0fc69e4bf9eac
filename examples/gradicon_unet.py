"""The GradICON U-Net: its output is a displacement field, that is, a transform value.

python examples/gradicon_unet.py
"""

import torch

import itkdeepreg as idr
from itkdeepreg import losses
from itkdeepreg.nets import GradICONUNet


def main():
    torch.manual_seed(0)
    net = GradICONUNet(dimension=2)
    count = sum(p.numel() for p in net.parameters())
    print(f"2D U-Net: {count / 1e6:.2f} M parameters (3D: 17.67 M, as published)")

    grid = idr.identity_grid((64, 64))
    fixed = ((grid - 0.5) ** 2).sum(1, keepdim=True).lt(0.1).float()  # a disc
    moving = ((grid - torch.tensor([0.55, 0.45]).reshape(1, 2, 1, 1)) ** 2).sum(1, keepdim=True)
    moving = moving.lt(0.08).float()  # a smaller disc, off centre

    # fit this one pair, as instance optimization does: in eval mode, so BatchNorm keeps its
    # running statistics (with a batch of one, training mode would normalise each call anew)
    net.eval()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(60):
        forward = idr.Displacement(net(moving, fixed))
        backward = idr.Displacement(net(fixed, moving))
        loss = losses.mse(forward.warp(moving, padding="border"), fixed)
        loss = loss + 0.5 * losses.gradicon(forward, backward, (32, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == 59:
            print(f"step {step:2d}: loss {loss.item():.4f}")

    with torch.no_grad():
        transform = idr.Displacement(net(moving, fixed))
    before = losses.mse(moving, fixed).item()
    after = losses.mse(transform.warp(moving, padding="border"), fixed).item()
    print(f"MSE before {before:.4f}, after {after:.4f}")
    return before, after


if __name__ == "__main__":
    main()
