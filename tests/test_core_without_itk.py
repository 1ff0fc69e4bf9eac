"""The torch core imports and runs where ``import itk`` fails."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["itk"] = None  # any "import itk" now raises ImportError

    import torch
    import itkdeepreg as idr

    fixed = idr.ImageGeometry((20, 16, 12), spacing=(1.0, 1.5, 2.0))
    moving = fixed.resized((10, 10, 10))
    affine = idr.Affine(torch.eye(4, dtype=torch.float64))
    velocity = idr.Velocity(0.01 * torch.randn(1, 3, 8, 8, 8, dtype=torch.float64))
    transform = affine @ velocity @ idr.Displacement(torch.zeros(1, 3, 5, 5, 5, dtype=torch.float64))
    warped = transform.warp(torch.rand(1, 1, *moving.shape, dtype=torch.float64), fixed.shape)
    physical = idr.to_physical(transform, fixed, moving)
    assert warped.shape == (1, 1, 12, 16, 20)
    assert physical(torch.zeros(1, 3, 1, dtype=torch.float64)).shape == (1, 3, 1)
    from itkdeepreg.methods import Pair, run_method  # methods by name, networks included

    image = torch.rand(1, 1, 12, 16, 20)
    result = run_method("affine", Pair(image, image, fixed, fixed), iterations=(1,), levels=(1,), progress=False)
    assert result.forward.dimension == 3
    try:
        idr.to_itk_transform
    except ImportError:
        print("core ran; interop needs itk")
    """
)


def test_torch_core_runs_without_itk():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "core ran; interop needs itk" in result.stdout
    assert "itk" not in result.stderr
