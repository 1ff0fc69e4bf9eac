"""``itkdeepreg warp``: an image resampled through a chain of transform files, by ITK."""

from __future__ import annotations

import argparse
import os

from ._base import CommandError, text


def add_parser(commands) -> None:
    p = commands.add_parser(
        "warp",
        help="resample an image through a chain of transform files (as antsApplyTransforms)",
        description=text(
            "Resample the moving image (or a segmentation) onto the fixed image's grid through "
            "transform files (fixed -> moving points): ours, any file ITK reads (ANTs and "
            "elastix-exported ITK transforms included), or a displacement-field image (an ANTs "
            "warp). ITK does the resampling, in double precision; outside the moving image the "
            "value is 0.",
            "Repeat --transform for a chain, in antsApplyTransforms' order and notation: "
            "'--transform warp.nii.gz --transform affine.mat' (the image is moved by the last "
            "one listed first: a fixed point goes through the warp, then the affine), and "
            "'[affine.mat,1]' for the inverse of a linear transform. As in ANTs, a warp is not "
            "inverted: give the file of its inverse (register's --inverse-out, ANTs' "
            "InverseWarp).",
        ),
    )
    p.add_argument("--fixed", required=True, metavar="IMAGE", help="the reference grid")
    p.add_argument("--moving", required=True, metavar="IMAGE", help="the image to resample")
    p.add_argument(
        "--transform",
        required=True,
        action="append",
        type=chain_entry,
        metavar="T",
        help="a transform file or a warp image, or [T,1] for its inverse; repeat for a chain",
    )
    p.add_argument("--out", required=True, metavar="IMAGE", help="the resampled image")
    p.add_argument(
        "--interpolation",
        choices=("linear", "nearest", "label"),
        default="linear",
        help="linear (default), nearest, or label: label-preserving for segmentations (each "
        "label's indicator interpolated linearly, the most probable label kept)",
    )
    p.set_defaults(run=run)


def chain_entry(value: str) -> tuple[str, bool]:
    """``(path, inverted)`` of ``T``, ``[T]``, ``[T,0]`` or ``[T,1]`` (antsApplyTransforms' -t)."""
    if not (value.startswith("[") and value.endswith("]")):
        return value, False
    path, comma, flag = value[1:-1].rpartition(",")
    if not comma:
        path, flag = flag, "0"
    if not path.strip() or flag.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(
            f"{value!r}: give a transform as FILE, [FILE,0] or [FILE,1] (its inverse)"
        )
    return path.strip(), flag.strip() == "1"


def run(args) -> int:
    import itk
    import torch

    from ..files import write_all
    from ..geometry import ImageGeometry
    from ..interop import tensor_to_image
    from ..interop.transforms import resample_array, warp_labels
    from ..outputs import write_image
    from ._files import IMAGE_SUFFIXES, check_outputs, read_image

    files = argparse.Namespace(**{**vars(args), "transform": [p for p, _ in args.transform]})
    check_outputs([("--out", args.out, IMAGE_SUFFIXES)], files)  # no output over a transform
    fixed = read_image(args.fixed, "--fixed", scalar=False)
    moving = read_image(args.moving, "--moving")
    dimension = moving.GetImageDimension()
    if fixed.GetImageDimension() != dimension:
        raise CommandError(
            f"a {fixed.GetImageDimension()}D fixed image and a {dimension}D moving image"
        )
    # ITK's queue applies the transform added last first; a fixed point goes through
    # antsApplyTransforms' list from its first entry, so they are added in reverse
    transform = itk.CompositeTransform[itk.D, dimension].New()
    for path, inverted in reversed(args.transform):
        transform.AddTransform(_transform(path, inverted, dimension))
    # ITK, not our torch warp: the command applies transform files exactly as ITK (and
    # antsApplyTransforms) read them, so it takes every transform ITK reads (B-splines, ANTs
    # composites, ...) with no conversion to our values and no inverse approximated (ITK
    # inverts linear ones exactly), and it checks our export independently of its writer.
    reference = ImageGeometry.from_image(fixed)
    if args.interpolation == "label":  # the library's one label rule
        image = warp_labels(moving, transform, reference)
    else:
        array = itk.array_view_from_image(moving)
        warped = resample_array(
            array, ImageGeometry.from_image(moving), transform, reference, args.interpolation
        )
        image = tensor_to_image(  # in the moving image's pixel type, on the fixed grid
            torch.from_numpy(warped), reference, itk.template(moving)[1][0]
        )
    write_all([(args.out, lambda t: write_image(image, t), IMAGE_SUFFIXES)])
    return 0


def _transform(path, inverted, dimension):
    """The double-precision ITK transform of one --transform entry: a transform file, or an
    image of displacements (an ANTs warp) as antsApplyTransforms reads one."""
    from ..files import IMAGE_SUFFIXES
    from ._files import read_itk_transform

    flag = f"--transform [{path},1]" if inverted else "--transform"
    if not os.path.exists(path) and path.replace(" ", "")[-2:] in (",0", ",1"):
        raise CommandError(f"{flag}: no such file: {path} (ANTs' notation: [{path}])")
    if inverted and path.lower().endswith(IMAGE_SUFFIXES):  # refused before it is read
        raise CommandError(_not_inverted(flag, path, "a displacement field"))
    transform = read_itk_transform(path, flag)
    if transform.GetInputSpaceDimension() != dimension:
        raise CommandError(
            f"{flag}: {path} is a {transform.GetInputSpaceDimension()}D transform, the images "
            f"are {dimension}D"
        )
    if not inverted:
        return transform
    if not transform.IsLinear():
        raise CommandError(
            _not_inverted(flag, path, f"a {transform.GetNameOfClass()} with a non-linear part")
        )
    inverse = transform.GetInverseTransform()
    if inverse is None:
        raise CommandError(f"{flag}: {path} is singular: it has no inverse")
    return inverse


def _not_inverted(flag, path, what) -> str:
    return (
        f"{flag}: cannot invert {path}, {what}: as antsApplyTransforms, [T,1] inverts linear "
        "transforms only; give the file of its inverse (itkdeepreg register --inverse-out, "
        "ANTs' InverseWarp)"
    )
