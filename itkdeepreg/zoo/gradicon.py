"""The published GradICON-family architectures."""

from __future__ import annotations

from ..models import DisplacementStep, Downsample, TwoStep
from ..nets import GradICONUNet

UNIGRADICON_SHAPE = (175, 175, 175)


def unigradicon_network() -> TwoStep:
    """uniGradICON's (and multiGradICON's) network on a 175^3 grid of ``[0, 1]`` images.

    Four GradICON U-Nets: the first at 44^3 and the second at 88^3 (each inside its own
    half-resolution step), then two at 175^3, each refining the map of those before it:
    ``TwoStep(TwoStep(Downsample(TwoStep(Downsample(U0), U1)), U2), U3)``.
    """

    def unet():
        return DisplacementStep(GradICONUNet(dimension=3))

    coarse = TwoStep(Downsample(unet()), unet())
    return TwoStep(TwoStep(Downsample(coarse), unet()), unet())
