"""``itkdeepreg apply``: transformix-like, a transform parameter file applied to an image."""

from __future__ import annotations

import os

from ._base import CommandError, text


def add_parser(commands) -> None:
    p = commands.add_parser(
        "apply",
        help="transformix-like: apply a transform parameter file",
        description=text(
            "Apply a transformix parameter file (elastix's TransformParameters.0.txt, or ours) "
            "to an image with itk.transformix_filter; writes DIR/result.nii.gz."
        ),
    )
    p.add_argument("-in", dest="image", required=True, metavar="IMAGE", help="the image")
    p.add_argument(
        "-tp", dest="parameters", required=True, metavar="FILE", help="the parameter file"
    )
    p.add_argument("-out", dest="out", required=True, metavar="DIR", help="the output folder")
    p.set_defaults(run=run)


def run(args) -> int:
    import itk

    from ..files import write_all
    from ..interop.images import itk_error_message
    from ..parameter_files import read_parameter_file
    from ._files import (
        OUR_SUFFIXES,
        check_outputs,
        output_folder,
        read_image,
        require_file,
        write_image,
    )

    require_file(args.parameters, "-tp")
    entries = read_parameter_file(args.parameters).values  # a clear error for a bad file
    field = entries.get("DeformationFieldFileName")
    if field and not os.path.exists(field[0]):
        raise CommandError(
            f"-tp: {args.parameters} names the field {field[0]}, which does not exist"
        )
    image = read_image(args.image, "-in")
    image = itk.cast_image_filter(
        image, ttype=(type(image), itk.Image[itk.F, image.GetImageDimension()])
    )
    with output_folder(args.out, "-out"):
        result_path = os.path.join(args.out, "result.nii.gz")
        check_outputs([("-out", result_path, OUR_SUFFIXES)], args)
        parameters = itk.ParameterObject.New()
        try:
            parameters.ReadParameterFile(args.parameters)
            result = itk.transformix_filter(image, parameters)
        except RuntimeError as error:
            raise CommandError(f"transformix: {itk_error_message(error)}") from None
        write_all([(result_path, lambda t: write_image(result, t), OUR_SUFFIXES)])
    print(f"wrote {result_path}")
    return 0
