"""Transform values as transformix parameter files (elastix's tool that applies a transform)."""

from __future__ import annotations

import os

from ..files import write_all
from ..parameter_files import PARAMETER_FILE_SUFFIXES, parameter_text, write_parameter_file
from ..transforms import Transform
from .transforms import IMAGE_SUFFIXES, _geometries, write_displacement_field


def write_transformix_parameters(transform: Transform, path, fixed, moving, field_path=None):
    """Write ``transform`` as a transformix parameter file and its displacement field.

    ``transform`` maps the fixed image's unit cube to the moving image's; ``fixed`` and
    ``moving`` are ``itk.Image`` or :class:`~itkdeepreg.geometry.ImageGeometry`. The native
    export (:func:`~itkdeepreg.interop.write_displacement_field`, physical displacements at
    the fixed voxels, double precision) is written to ``field_path``, by default beside
    ``path`` with the same stem and ``_field.nii.gz``. The parameter file ``path`` (``.txt``)
    holds a ``DeformationFieldTransform`` of that field, interpolated linearly, and the fixed
    image's grid, so transformix resamples a moving image onto the fixed grid as
    ``itk.resample_image_filter`` does with the exported transform (linear interpolation,
    0 outside the moving image)::

        parameters = itk.ParameterObject.New()
        parameters.ReadParameterFile("transform.txt")
        warped = itk.transformix_filter(moving_image, parameters)

    ``DeformationFieldFileName`` is written as an absolute path: transformix opens it as
    written, relative to the current directory and not to the parameter file's folder, so an
    absolute path works from any directory. Moving the two files therefore needs the new field
    path in the parameter file (or writing them again).

    Both files are written whole or not at all: the targets are checked before the field is
    evaluated, and if either cannot be written, neither is left behind.
    """
    write_all(transformix_outputs(transform, path, fixed, moving, field_path))


def transformix_outputs(transform: Transform, path, fixed, moving, field_path=None) -> list:
    """The two outputs of :func:`write_transformix_parameters` as ``(path, write, suffixes)``
    for :func:`~itkdeepreg.files.write_all`, to be written with other files, all or none."""
    fixed, moving = _geometries(transform, fixed, moving)
    path = os.fspath(path)
    if field_path is None:
        stem = os.path.basename(path)
        for suffix in PARAMETER_FILE_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
        field_path = os.path.join(os.path.dirname(path), f"{stem}_field.nii.gz")
    field_path = os.path.abspath(os.fspath(field_path))
    if field_path == os.path.abspath(path):
        raise ValueError(f"the parameter file and the field cannot both be {path}")
    values = _transformix_values(field_path, fixed)
    parameter_text(values)  # refuses unwritable values (a quote in the path) before the work
    return [
        (
            field_path,
            lambda t: write_displacement_field(transform, t, fixed, moving),
            IMAGE_SUFFIXES,
        ),
        (path, lambda t: write_parameter_file(values, t), PARAMETER_FILE_SUFFIXES),
    ]


def _transformix_values(field_path: str, fixed) -> dict:
    """The entries of a transformix file for a displacement field on ``fixed``'s grid."""
    dimension = fixed.dimension
    return {
        "Transform": "DeformationFieldTransform",
        "DeformationFieldFileName": field_path,
        "DeformationFieldInterpolationOrder": 1,
        "InitialTransformParameterFileName": "NoInitialTransform",
        "HowToCombineTransforms": "Compose",
        "NumberOfParameters": 0,
        "FixedImageDimension": dimension,
        "MovingImageDimension": dimension,
        "FixedInternalImagePixelType": "float",
        "MovingInternalImagePixelType": "float",
        "Size": [int(n) for n in fixed.size],
        "Index": [0] * dimension,
        "Spacing": [float(s) for s in fixed.spacing],
        "Origin": [float(o) for o in fixed.origin],
        # elastix writes the direction cosines column by column
        "Direction": [float(v) for v in fixed.direction.T.ravel()],
        "UseDirectionCosines": True,
        "ResampleInterpolator": "FinalLinearInterpolator",
        "Resampler": "DefaultResampler",
        "DefaultPixelValue": 0,
        "ResultImageFormat": "nii",
        "ResultImagePixelType": "float",
    }
