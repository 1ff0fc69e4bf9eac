"""The elastix-like command: ``itkdeepreg -f F -m M -p a.txt [-p b.txt ...] -out DIR``."""

from __future__ import annotations

import os

from ._base import PROGRAM, CommandError, Parser, text
from .register import thread_count

FLAGS = ("-f", "-m", "-p", "-out", "-fMask", "-mMask", "-t0")


def parser() -> Parser:
    p = Parser(
        prog=PROGRAM,
        description=text(
            "elastix-like: register with parameter files run one after the other (elastix "
            'maps and our (Registration "DeepRegistration") steps mixed). Writes '
            "DIR/result.nii.gz, DIR/TransformParameters.0.txt with its field (apply it with "
            "transformix or 'itkdeepreg apply'), DIR/transform.h5 and DIR/inverse.h5, and "
            "elastix's log of each elastix step, as elastix does: DIR/elastix.log "
            "(DIR/elastix.N.log for step N where several steps are elastix's)."
        ),
    )
    p.add_argument("-f", dest="fixed", required=True, metavar="IMAGE", help="the fixed image")
    p.add_argument("-m", dest="moving", required=True, metavar="IMAGE", help="the moving image")
    p.add_argument(
        "-p",
        dest="parameters",
        action="append",
        required=True,
        metavar="FILE",
        help="a parameter file; repeat for steps run one after the other",
    )
    p.add_argument("-out", dest="out", required=True, metavar="DIR", help="the output folder")
    p.add_argument("-fMask", dest="fixed_mask", metavar="IMAGE", help="the fixed mask")
    p.add_argument("-mMask", dest="moving_mask", metavar="IMAGE", help="the moving mask")
    p.add_argument(
        "-t0", dest="initial", metavar="TRANSFORM", help="an ITK transform file to start from"
    )
    p.add_argument(
        "-threads", dest="threads", type=thread_count, metavar="N", help="the number of threads"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from ..files import write_all
    from ..interop.images import itk_error_message
    from ..interop.transformix import transformix_outputs
    from ..outputs import write_image
    from ..pipeline import elastix_logs, read_pipeline, run_pipeline
    from ..registration import number_of_threads
    from ._files import (
        OUR_SUFFIXES,
        check_outputs,
        output_folder,
        read_image,
        read_itk_transform,
        require_file,
    )

    for path in args.parameters:
        require_file(path, "-p")
    steps = read_pipeline(args.parameters)  # every file read and checked before anything runs
    fixed = read_image(args.fixed, "-f")
    moving = read_image(args.moving, "-m")
    masks = {
        name: read_image(path, flag)
        for name, path, flag in (
            ("fixed_mask", args.fixed_mask, "-fMask"),
            ("moving_mask", args.moving_mask, "-mMask"),
        )
        if path is not None
    }
    initial = None if args.initial is None else read_itk_transform(args.initial, "-t0")
    with number_of_threads(args.threads), output_folder(args.out, "-out"):
        paths = {
            "result": os.path.join(args.out, "result.nii.gz"),
            "parameters": os.path.join(args.out, "TransformParameters.0.txt"),
            "field": os.path.join(args.out, "TransformParameters.0_field.nii.gz"),
            "transform": os.path.join(args.out, "transform.h5"),
            "inverse": os.path.join(args.out, "inverse.h5"),
        }
        logs = [log for log in elastix_logs(steps, args.out) if log]  # elastix writes them
        check_outputs(
            [("-out", path, OUR_SUFFIXES) for path in paths.values()]
            + [("-out", log, (".log",)) for log in logs],
            args,
        )
        try:
            warped, transform = run_pipeline(
                fixed,
                moving,
                steps,
                initial_transform=initial,
                show_progress=not args.quiet,
                log_directory=args.out,
                **masks,
            )
        except RuntimeError as error:
            if "elastix" not in str(error).lower():
                raise
            # a parameter map elastix refuses: the user's, not a bug of ours
            raise CommandError(f"elastix failed on a -p map: {itk_error_message(error)}") from None
        write_all(
            [
                (paths["result"], lambda t: write_image(warped, t), OUR_SUFFIXES),
                (paths["transform"], lambda t: transform.Write(t), OUR_SUFFIXES),
                (
                    paths["inverse"],
                    lambda t: transform.GetInverseTransform().Write(t),
                    OUR_SUFFIXES,
                ),
                *transformix_outputs(
                    transform.forward,
                    paths["parameters"],
                    transform.fixed_geometry,
                    transform.moving_geometry,
                    paths["field"],
                ),
            ]
        )
    print(f"wrote {', '.join(os.path.basename(p) for p in paths.values())} into {args.out}")
    return 0
