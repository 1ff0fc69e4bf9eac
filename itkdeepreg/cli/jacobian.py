"""``itkdeepreg jacobian``: the Jacobian determinant of a transform file on a grid."""

from __future__ import annotations

from ._base import CommandError, text


def add_parser(commands) -> None:
    p = commands.add_parser(
        "jacobian",
        help="the Jacobian determinant of a transform file",
        description=text(
            "Write the physical Jacobian determinant of a transform file (fixed -> moving "
            "points: ours, any file ITK reads, or a displacement-field image, an ANTs warp) at "
            "the voxels of a reference grid, the fixed image's: the moving volume per fixed "
            "volume, 1 where the map keeps volume, <= 0 where it folds. The moving image is "
            "not needed."
        ),
    )
    # dest "fixed": the check that no output overwrites an input knows it by that name
    p.add_argument(
        "--reference",
        "--fixed",
        dest="fixed",
        required=True,
        metavar="IMAGE",
        help="the grid to evaluate on (the fixed image); --fixed is the same flag",
    )
    p.add_argument("--moving", metavar="IMAGE", help="not needed; accepted for older command lines")
    p.add_argument("--transform", required=True, metavar="TRANSFORM", help="the transform file")
    p.add_argument("--out", required=True, metavar="IMAGE", help="the Jacobian image")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..files import write_all
    from ..interop.inverse_consistent import jacobian_determinant_image
    from ..outputs import write_image
    from ._files import IMAGE_SUFFIXES, check_outputs, read_image, read_itk_transform

    check_outputs([("--out", args.out, IMAGE_SUFFIXES)], args)
    reference = read_image(args.fixed, "--reference", scalar=False)
    transform = read_itk_transform(args.transform, "--transform")
    dimension = reference.GetImageDimension()
    if transform.GetInputSpaceDimension() != dimension:
        raise CommandError(
            f"--transform: a {transform.GetInputSpaceDimension()}D transform, a {dimension}D "
            "reference image"
        )
    try:
        determinant = jacobian_determinant_image(transform, reference)
    except (ValueError, TypeError) as error:
        raise CommandError(f"--transform: {error}") from None
    write_all([(args.out, lambda t: write_image(determinant, t), IMAGE_SUFFIXES)])
    return 0
