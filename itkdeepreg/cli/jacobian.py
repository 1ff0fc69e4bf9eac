"""``itkdeepreg jacobian``: the Jacobian determinant of a transform file on a grid."""

from __future__ import annotations

from ._base import CommandError, text
from .warp import transform_file_arguments


def add_parser(commands) -> None:
    p = commands.add_parser(
        "jacobian",
        help="the Jacobian determinant of a transform file",
        description=text(
            "Write the physical Jacobian determinant of a transform file (fixed -> moving "
            "points) at the fixed image's voxels: the moving volume per fixed volume, 1 where "
            "the map keeps volume, <= 0 where it folds."
        ),
    )
    transform_file_arguments(
        p, "the fixed image (its grid)", "the moving image (its grid)", "the Jacobian image"
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from ..files import write_all
    from ..interop import InverseConsistentTransform
    from ._files import (
        IMAGE_SUFFIXES,
        check_outputs,
        native_stderr_silenced,
        read_image,
        require_file,
        write_image,
    )

    check_outputs([("--out", args.out, IMAGE_SUFFIXES)], args)
    fixed = read_image(args.fixed, "--fixed", scalar=False)
    moving = read_image(args.moving, "--moving", scalar=False)
    require_file(args.transform, "--transform")
    try:
        with native_stderr_silenced():  # HDF5 prints its own diagnostics on a bad file
            transform = InverseConsistentTransform.Read(args.transform, fixed, moving)
    except (ValueError, TypeError) as error:
        raise CommandError(f"--transform: {error}") from None
    determinant = transform.GetJacobianDeterminant()
    write_all([(args.out, lambda t: write_image(determinant, t), IMAGE_SUFFIXES)])
    return 0
