"""Network backbones (torch only)."""

from .unet import GradICONUNet

__all__ = ["GradICONUNet"]
