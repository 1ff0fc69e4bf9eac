"""Network backbones (torch only)."""

from .affine import ConvolutionalMatrixNet
from .unet import GradICONUNet

__all__ = ["ConvolutionalMatrixNet", "GradICONUNet"]
