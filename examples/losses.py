"""Similarity losses and regularizers on a brain and a deformation of it.

python examples/losses.py
"""

import itk
import torch

import itkdeepreg as idr
from itkdeepreg import losses
from itkdeepreg.data import mni152_t1_2mm
from itkdeepreg.interop import image_to_tensor


def main():
    image, _ = image_to_tensor(itk.imread(mni152_t1_2mm()), dtype=torch.float64)
    image = idr.resample(image / image.max(), (64, 64, 64))  # a small model grid
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 3, 4, 4, 4, generator=generator, dtype=torch.float64)
    velocity = 0.03 * torch.nn.functional.interpolate(
        coarse, size=(32, 32, 32), mode="trilinear", align_corners=True
    )
    forward = idr.Velocity(velocity)
    warped = forward.warp(image, padding="border")
    brain = (image > 0.1).to(image.dtype)  # a mask: losses average over it

    print(f"{'loss':<28}{'same image':>12}{'deformed':>12}")
    for name, loss in [
        ("MSE", losses.mse),
        ("NCC", losses.ncc),
        ("LNCC (sigma 5)", losses.lncc),
        ("squared LNCC", losses.squared_lncc),
        ("MIND-SSC", losses.mind_ssc_loss),
        ("LNCC in the brain mask", lambda a, b: losses.lncc(a, b, mask=brain)),
    ]:
        print(f"{name:<28}{loss(image, image).item():>12.4f}{loss(image, warped).item():>12.4f}")

    backward = forward.inverse()
    print(
        f"GradICON, exp(v) and exp(-v) {losses.gradicon(forward, backward, (16,) * 3).item():.2e}"
    )
    print(f"GradICON, exp(v) and exp(v)  {losses.gradicon(forward, forward, (16,) * 3).item():.2e}")
    print(f"diffusion of the velocity    {losses.diffusion(velocity).item():.4f}")
    print(f"bending energy               {losses.bending_energy(velocity).item():.4f}")


if __name__ == "__main__":
    main()
