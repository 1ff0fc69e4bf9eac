"""``itkdeepreg demo``: the bundled brain pair registered, every output written."""

from __future__ import annotations

import os

from ..options import BY_KEY
from ._base import text
from .register import value_reader


def add_parser(commands) -> None:
    p = commands.add_parser(
        "demo",
        help="register the bundled brain pair and write every output",
        description=text(
            "Register the bundled default pair, the MNI152 template and the template moved by "
            "a known diffeomorphism with its own intensity changes, by optimization "
            '(method "deformable": no weights to download). Writes fixed.nii.gz, '
            "moving.nii.gz, transform.h5, inverse.h5, warped.nii.gz, displacement.nii.gz, "
            "jacobian.nii.gz and figure.png, and prints Dice, end-point error and folds "
            "before and after."
        ),
    )
    p.add_argument(
        "--out",
        default="itkdeepreg-demo",
        metavar="DIR",
        help="the output folder, created if missing (default: itkdeepreg-demo)",
    )
    p.add_argument("--dimension", type=int, choices=(2, 3), default=3, help="3D or one slice")
    p.add_argument("--device", type=value_reader(BY_KEY["Device"]), help="cpu, cuda, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    import time

    from ..data.brain_pairs import brain_pair
    from ..figure import write_registration_figure
    from ..files import write_all
    from ..outputs import write_image
    from ..registration import deep_registration_method
    from ..transforms import Affine
    from ._files import OUR_SUFFIXES, check_outputs, output_folder
    from .register import check_device

    if args.device is not None:
        check_device(args.device)
    names = {
        "fixed": "fixed.nii.gz",
        "moving": "moving.nii.gz",
        "transform": "transform.h5",
        "inverse": "inverse.h5",
        "warped": "warped.nii.gz",
        "displacement": "displacement.nii.gz",
        "jacobian": "jacobian.nii.gz",
        "figure": "figure.png",
    }
    with output_folder(args.out, "--out"):
        paths = {key: os.path.join(args.out, name) for key, name in names.items()}
        check_outputs([("--out", path, OUR_SUFFIXES) for path in paths.values()], args)
        pair = brain_pair(seed=0, dimension=args.dimension)
        fixed, moving = pair.itk_images()
        size = "x".join(str(n) for n in pair.fixed_geometry.size)
        print(
            f"the MNI152 template ({args.dimension}D, {size} at 2 mm) and the template moved by "
            "a known diffeomorphism, with its own intensity changes",
            flush=True,
        )
        options = {"device": args.device} if args.device else {}
        start = time.perf_counter()
        warped, transform = deep_registration_method(
            fixed, moving, method="deformable", show_progress=not args.quiet, **options
        )
        seconds = time.perf_counter() - start
        before = pair.score(Affine.identity(args.dimension))
        after = pair.score(transform.forward)
        spacing = tuple(reversed(pair.fixed_geometry.spacing.tolist()))  # tensor axes: z, y, x
        writers = {
            "fixed": lambda t: write_image(fixed, t),
            "moving": lambda t: write_image(moving, t),
            "transform": lambda t: transform.Write(t),
            "inverse": lambda t: transform.GetInverseTransform().Write(t),
            "warped": lambda t: write_image(warped, t),
            "displacement": transform.WriteDisplacementField,
            "jacobian": lambda t: write_image(transform.GetJacobianDeterminant(), t),
            "figure": lambda t: write_registration_figure(
                t,
                pair.fixed,
                pair.moving,
                transform.forward,
                title=f'itkdeepreg demo: method "deformable", {args.dimension}D brain pair',
                spacing=spacing,
            ),
        }
        write_all([(paths[key], writers[key], OUR_SUFFIXES) for key in names])
    print()
    print(f"{'':<12}{'Dice':>8}{'error (mm)':>14}{'folds (%)':>12}")
    for name, score in (("identity", before), ("registered", after)):
        print(f"{name:<12}{score['dice']:>8.3f}{score['error']:>14.2f}{score['folds']:>12.2f}")
    print(f'\nregistered in {seconds:.1f} s (method "deformable"); wrote into {args.out}:')
    print("  " + ", ".join(names.values()))
    print(
        "again from the files: itkdeepreg register --fixed "
        f"{paths['fixed']} --moving {paths['moving']} --method deformable "
        "--transform-out transform.h5"
    )
    return 0
