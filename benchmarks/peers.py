"""Peer methods for the brain-registration benchmark: ANTs SyN, elastix B-spline, FireANTs greedy.

Every peer has the signature ``peer(fixed, moving, workdir) -> itk.Transform``: ``fixed`` and
``moving`` are ``itk.Image[itk.F, D]`` (D = 2 or 3) with their physical geometry, ``workdir``
an existing folder the tool may write to. The returned transform is double precision and maps
a fixed physical point (LPS mm) to the moving physical point, so
``itk.resample_image_filter(moving, transform=t, use_reference_image=True,
reference_image=fixed)`` is the moving image registered onto the fixed one.

The pairs are the MNI152 T1 template at 2 mm (99x117x95, or one axial slice in 2D) and the
template warped by a smooth diffeomorphism of a few millimetres with intensity changes; the
affine part is the identity, so each peer runs its deformable stage only, from the identity.
Each peer runs on the CPU with 2 threads in single precision, with the metric the benchmark
prescribes (local cross-correlation for ANTs and FireANTs, normalised correlation for
elastix) and otherwise its tool's published recipe for brains, coarsest level at 8-16 mm:

ANTs SyN (antspyx 0.6, ``ants.registration(type_of_transform="antsRegistrationSyN[so]")``)
    The SyN stage of ``antsRegistrationSyN.sh`` without its rigid and affine stages ("so"),
    as ANTsPy recreates the script: ``SyN[0.2,3,0]`` (gradient step 0.2, update-field
    smoothing 3 voxels, no total-field smoothing), metric ``CC[fixed,moving,1,2]`` (radius 2:
    a 5-voxel window, 10 mm at 2 mm), shrink factors 8x4x2x1, smoothing sigmas 3x2x1x0
    voxels, iterations 100x70x50x20, convergence 1e-6 over a 10-iteration window, initial
    transform ``Identity``, single precision (ANTsPy's default). 2 threads:
    ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2``, set in the environment when this module is
    imported (before ANTsPy loads). ANTs writes ``<prefix>1Warp.nii.gz`` (and its inverse) in
    ``workdir``; the forward list (``1Warp.nii.gz`` and the identity ``0GenericAffine.mat``) is
    read back and composed: ANTs list ``[Warp, Affine]`` = ITK queue ``[Affine, Warp]``.

elastix B-spline (itk-elastix 0.25, ``itk.elastix_registration_method``)
    itk-elastix's default ``bspline`` parameter map for 3 resolutions and a final
    control-point spacing of 10 mm (``GetDefaultParameterMap("bspline", 3, 10.0)``: smoothing
    pyramids 4x2x1 voxels, grid-spacing schedule 2, 1.41, 1, i.e. 20, 14, 10 mm) with the
    metric replaced by ``AdvancedNormalizedCorrelation`` alone (the default Mattes mutual
    information and bending-energy penalty dropped; ``MultiResolutionRegistration``),
    ``AdaptiveStochasticGradientDescent`` with automatic parameter estimation, 500 iterations
    per resolution (the map's default is 256), 2048 random coordinate samples drawn anew
    every iteration, linear interpolation while registering, no result image
    (``WriteResultImage "false"``), ``number_of_threads=2``. The B-spline transform is
    sampled on the fixed grid by ``itk.transformix_deformation_field`` and returned as a
    ``DisplacementFieldTransform`` (exact at the fixed voxels, linear between them).

FireANTs greedy (fireants 1.5.0, ``fireants.registration.greedy.GreedyRegistration``)
    The greedy (compositive-warp) registration of FireANTs' LPBA40 brain script: scales 4, 2,
    1 (FireANTs keeps a downsampled axis at 32 voxels or more), iterations 200, 100, 50, Adam
    with learning rate 0.5, local cross-correlation (``loss_type="cc"``; its ``fusedcc``
    needs CUDA) with a rectangular 5-voxel window (10 mm at 2 mm, as ANTs; the 1 mm script
    uses 7), gradient smoothing sigma 1 voxel and warp smoothing sigma 0.5 voxels (its
    defaults), its default early stop (relative loss change below 1e-6 over 10 iterations),
    float32 on the CPU, ``torch.set_num_threads(2)`` for the call. The map is read from
    ``get_warped_coordinates`` (moving points in torch's normalised [-1, 1] coordinates of
    the moving image, (x, y, z) order, at the fixed voxels) and taken to physical LPS
    millimetres with the moving image's ``torch2phy`` matrix: the field that FireANTs'
    ``save_as_ants_transforms`` writes, without the file round trip (that method builds a
    2D field as a 3D SimpleITK image and fails in 2D).

Images are handed over with their geometry (origin, spacing, direction) as is: ANTsPy arrays
are indexed (x, y, z), the transpose of ITK's (z, y, x) arrays; SimpleITK (which FireANTs
reads) has ITK's order. ``workdir`` is written by ANTs and transformix.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import itk
import numpy as np

THREADS = 2
# ANTs reads its thread count from the environment: set it before ANTsPy's ITK starts
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(THREADS)

import ants
import SimpleITK as sitk
import torch
from fireants.io.image import BatchedImages, Image
from fireants.registration.greedy import GreedyRegistration

import itkdeepreg as idr


def ants_syn(fixed, moving, workdir: pathlib.Path):
    """ANTs SyN (cross-correlation, no affine stage); see the module docstring."""
    output = pathlib.Path(workdir) / "ants"
    output.mkdir(parents=True, exist_ok=True)
    result = ants.registration(
        fixed=_ants_image(fixed),
        moving=_ants_image(moving),
        type_of_transform="antsRegistrationSyN[so]",
        outprefix=str(output / "syn_"),
    )
    # ANTs order [Warp, Affine]: a fixed point goes through the warp first, then the affine
    files = result["fwdtransforms"]
    dimension = fixed.GetImageDimension()
    composite = itk.CompositeTransform[itk.D, dimension].New()
    for path in reversed(files):  # ITK applies the transform added last first: [Affine, Warp]
        composite.AddTransform(_read_ants_transform(path, dimension))
    return composite


def elastix_bspline(fixed, moving, workdir: pathlib.Path):
    """elastix B-spline (normalised correlation); see the module docstring."""
    parameters = itk.ParameterObject.New()
    bspline = parameters.GetDefaultParameterMap("bspline", 3, 10.0)
    bspline["Metric"] = ["AdvancedNormalizedCorrelation"]
    for key in ("Metric0Weight", "Metric1Weight"):
        bspline.erase(key)
    # one metric: the single-metric registration (itk-elastix 0.25 crashes in the
    # multi-metric one when number_of_threads is set, ITKElastix issue #160)
    bspline["Registration"] = ["MultiResolutionRegistration"]
    bspline["MaximumNumberOfIterations"] = ["500"]
    bspline["NumberOfSpatialSamples"] = ["2048"]
    bspline["WriteResultImage"] = ["false"]
    bspline["ResultImagePixelType"] = ["float"]
    parameters.AddParameterMap(bspline)
    _, result = itk.elastix_registration_method(
        fixed,
        moving,
        parameter_object=parameters,
        number_of_threads=THREADS,
        log_to_console=False,
    )
    with contextlib.chdir(workdir):  # transformix writes deformationField.nii where it runs
        field = itk.transformix_deformation_field(moving, result)
    return field_transform(field)


def fireants_greedy(fixed, moving, workdir: pathlib.Path):
    """FireANTs greedy registration (cross-correlation); see the module docstring."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        fixed_images = BatchedImages([Image(_sitk_image(fixed), device="cpu")])
        moving_images = BatchedImages([Image(_sitk_image(moving), device="cpu")])
        registration = GreedyRegistration(
            scales=[4, 2, 1],
            iterations=[200, 100, 50],
            fixed_images=fixed_images,
            moving_images=moving_images,
            loss_type="cc",
            cc_kernel_type="rectangular",
            cc_kernel_size=5,
            deformation_type="compositive",
            optimizer="Adam",
            optimizer_lr=0.5,
            smooth_grad_sigma=1.0,
            smooth_warp_sigma=0.5,
            dtype=torch.float32,
            progress_bar=False,
        )
        registration.optimize()
        with torch.no_grad():
            # [1, *fixed array shape, D]: moving points in torch's [-1, 1] coordinates, (x, y, z)
            coordinates = registration.get_warped_coordinates(fixed_images, moving_images)[0]
            torch_to_physical = moving_images.get_torch2phy()[0]
        coordinates = coordinates.to(torch.float64).numpy()
        torch_to_physical = torch_to_physical.to(torch.float64).numpy()
    finally:
        torch.set_num_threads(threads)
    dimension = fixed.GetImageDimension()
    moving_points = coordinates @ torch_to_physical[:dimension, :dimension].T
    moving_points += torch_to_physical[:dimension, dimension]
    return field_transform(moving_points - physical_points(fixed), like=fixed)


PEERS = {"ants": ants_syn, "elastix": elastix_bspline, "fireants": fireants_greedy}


def _ants_image(image):
    """The ANTsPy image of an ``itk.Image`` (ANTsPy arrays are indexed x, y, z)."""
    array = itk.array_from_image(image).astype(np.float32)
    return ants.from_numpy(
        np.ascontiguousarray(array.T),
        origin=[float(v) for v in image.GetOrigin()],
        spacing=[float(v) for v in image.GetSpacing()],
        direction=np.asarray(image.GetDirection(), dtype=np.float64),
    )


def _sitk_image(image):
    """The SimpleITK image of an ``itk.Image`` (same array order, z, y, x)."""
    result = sitk.GetImageFromArray(itk.array_from_image(image).astype(np.float32))
    result.SetOrigin([float(v) for v in image.GetOrigin()])
    result.SetSpacing([float(v) for v in image.GetSpacing()])
    result.SetDirection(np.asarray(image.GetDirection(), dtype=np.float64).ravel().tolist())
    return result


def _read_ants_transform(path, dimension):
    """One file of an ANTs transform list: a displacement field image or a linear transform."""
    if str(path).endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
        return field_transform(itk.imread(str(path)))
    transforms = itk.transformread(str(path))
    if len(transforms) != 1:
        raise ValueError(f"{path} holds {len(transforms)} transforms, expected one")
    return transforms[0]


def physical_points(image) -> np.ndarray:
    """The physical points (x, y, z) of an image's voxels, an array ``[*array shape, D]``."""
    geometry = idr.ImageGeometry.from_image(image)
    unit = idr.identity_grid(geometry.shape, dtype=torch.float64)[0]
    return geometry.to_physical(unit.movedim(0, -1).numpy())


def field_transform(field, like=None):
    """A double ``DisplacementFieldTransform`` of a displacement field (physical mm, x-y-z order).

    ``field`` is a vector image, or an array ``[*array shape, D]`` on the grid of the image
    ``like``. The vectors are copied into a new ``itk.Image[itk.Vector[itk.D, D], D]``: ITK
    resampling needs double precision, and the transform must own its field's buffer.
    """
    if like is None:
        like, vectors = field, np.asarray(itk.array_from_image(field), dtype=np.float64)
    else:
        vectors = np.asarray(field, dtype=np.float64)
    dimension = like.GetImageDimension()
    if vectors.shape[-1] != dimension:
        raise ValueError(f"a {dimension}D field with {vectors.shape[-1]} components per voxel")
    image = itk.Image[itk.Vector[itk.D, dimension], dimension].New()
    image.SetRegions(like.GetLargestPossibleRegion())
    image.SetOrigin(like.GetOrigin())
    image.SetSpacing(like.GetSpacing())
    image.SetDirection(like.GetDirection())
    image.Allocate()
    itk.array_view_from_image(image)[:] = vectors
    transform = itk.DisplacementFieldTransform[itk.D, dimension].New()
    transform.SetDisplacementField(image)
    return transform
