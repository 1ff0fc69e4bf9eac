"""``itkdeepreg apply``: transformix-like, a transform parameter file applied to an image."""

from __future__ import annotations

import os

from ._base import CommandError, UsageError, text

# transformix -def all / -jac all, written as single files (transformix: .<ResultImageFormat>)
_FIELD, _JACOBIAN, _RESULT = "deformationField.nii.gz", "spatialJacobian.nii.gz", "result.nii.gz"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "apply",
        help="transformix-like: apply a transform parameter file",
        description=text(
            "Apply a transformix parameter file (elastix's TransformParameters.0.txt, or ours) "
            f"with itk.transformix_filter: -in IMAGE writes DIR/{_RESULT}, -def all "
            f"DIR/{_FIELD} (the displacement, mm, at the fixed voxels), -jac all DIR/{_JACOBIAN} "
            "(the determinant of the spatial Jacobian)."
        ),
    )
    p.add_argument(
        "-in",
        dest="image",
        metavar="IMAGE",
        help="the image to resample (not needed for -def, -jac)",
    )
    p.add_argument(
        "-tp", dest="parameters", required=True, metavar="FILE", help="the parameter file"
    )
    p.add_argument("-out", dest="out", required=True, metavar="DIR", help="the output folder")
    p.add_argument("-def", dest="field", choices=("all",), help="all: write the deformation field")
    p.add_argument(
        "-jac", dest="jacobian", choices=("all",), help="all: write the Jacobian determinant"
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="-in is a label map: nearest neighbour (FinalNearestNeighborInterpolator), the "
        "result in the input's pixel type, so that it keeps exactly its labels",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    import tempfile

    import itk
    import numpy as np

    from ..files import write_all
    from ..interop.images import itk_error_message
    from ..outputs import write_image
    from ..parameter_files import read_parameter_file
    from ._files import (
        OUR_SUFFIXES,
        check_outputs,
        output_folder,
        read_image,
        require_file,
    )

    if args.image is None and not (args.field or args.jacobian):
        raise UsageError("apply: give -in IMAGE, -def all or -jac all")
    if args.labels and args.image is None:
        raise UsageError("apply: --labels is about the -in image; give one")
    require_file(args.parameters, "-tp")
    entries = read_parameter_file(args.parameters).values  # a clear error for a bad file
    field = entries.get("DeformationFieldFileName")
    if field and not os.path.exists(field[0]):
        raise CommandError(
            f"-tp: {args.parameters} names the field {field[0]}, which does not exist"
        )
    if args.image is not None:
        image = read_image(args.image, "-in")
        pixel = itk.template(image)[1][0]
        if args.labels and np.abs(itk.array_view_from_image(image)).max() > 2**24:
            raise CommandError("--labels: transformix's float pixels hold labels up to 2^24")
    else:  # transformix needs a moving image; its result is not written
        image = _stand_in(entries)
    nearest = args.labels or args.image is None  # the stand-in: the cheapest resampling
    dimension = image.GetImageDimension()
    image = itk.cast_image_filter(image, ttype=(type(image), itk.Image[itk.F, dimension]))
    with output_folder(args.out, "-out"):
        names = [_RESULT] * (args.image is not None) + [_FIELD] * bool(args.field)
        names += [_JACOBIAN] * bool(args.jacobian)
        paths = [os.path.join(args.out, name) for name in names]
        check_outputs([("-out", path, OUR_SUFFIXES) for path in paths], args)
        outputs = {}
        # transformix writes its own deformationField.<format> into its output folder: ours is
        # written whole by write_all, so its copy goes into a folder that is then removed
        with tempfile.TemporaryDirectory() as scratch:
            try:
                parameters = itk.ParameterObject.New()
                parameters.ReadParameterFile(args.parameters)
                if nearest:
                    parameters.SetParameter(
                        "ResampleInterpolator", "FinalNearestNeighborInterpolator"
                    )
                transformix = itk.TransformixFilter.New(
                    image,
                    transform_parameter_object=parameters,
                    output_directory=scratch,
                    log_to_console=False,
                )
                transformix.SetComputeDeformationField(bool(args.field or args.jacobian))
                transformix.Update()
                outputs[_RESULT] = transformix.GetOutput()
                if args.field or args.jacobian:
                    outputs[_FIELD] = transformix.GetOutputDeformationField()
                if args.jacobian:
                    outputs[_JACOBIAN] = _determinant(transformix, outputs[_FIELD])
                for output in outputs.values():
                    output.DisconnectPipeline()  # no update of transformix once scratch is gone
            except RuntimeError as error:
                raise CommandError(f"transformix: {itk_error_message(error)}") from None
        if args.labels and args.image is not None:  # nearest neighbour kept the values: exact
            outputs[_RESULT] = itk.cast_image_filter(
                outputs[_RESULT], ttype=(type(outputs[_RESULT]), itk.Image[pixel, dimension])
            )
        write_all(
            [
                (path, lambda t, image=outputs[name]: write_image(image, t), OUR_SUFFIXES)
                for name, path in zip(names, paths)
            ]
        )
    print(f"wrote {', '.join(names)} into {args.out}")
    return 0


def _determinant(transformix, field):
    """transformix's determinant of the spatial Jacobian; elastix has none for a
    DeformationFieldTransform (ours): then central differences of its field at the fixed
    voxels, as ``itkdeepreg jacobian`` of the same map."""
    import itk

    from ..geometry import ImageGeometry
    from ..interop.inverse_consistent import jacobian_determinant_image
    from ..interop.transforms import _field_transform

    try:
        return transformix.ComputeSpatialJacobianDeterminantImage()
    except RuntimeError as error:
        if "Not implemented" not in str(error):
            raise
    vectors = itk.array_from_image(field).astype("float64")
    return jacobian_determinant_image(
        _field_transform(vectors, ImageGeometry.from_image(field)), field
    )


def _stand_in(entries):
    """A small moving image of the parameter file's dimension, for -def / -jac without -in
    (transformix refuses to run without one; ITKElastix crashes computing the Jacobian)."""
    import itk
    import numpy as np

    try:
        dimension = int(entries["MovingImageDimension"][0])
    except (KeyError, ValueError):
        raise CommandError("-tp: the parameter file names no MovingImageDimension") from None
    if dimension not in (2, 3, 4):
        raise CommandError(f"-tp: MovingImageDimension {dimension}: 2, 3 or 4")
    return itk.image_from_array(np.zeros((2,) * dimension, np.float32))
