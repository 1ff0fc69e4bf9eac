"""Peer methods for the brain-registration benchmark: ANTs SyN, elastix B-spline, FireANTs greedy.

Every peer has the signature ``peer(fixed, moving, workdir, multimodal=False) -> itk.Transform``:
``fixed`` and ``moving`` are ``itk.Image[itk.F, D]`` (D = 2 or 3) with their physical geometry,
possibly on different grids (spacing, field of view, oblique direction cosines), ``workdir`` an
existing folder the tool may write to. The returned transform is double precision and maps a
fixed physical point (LPS mm) to the moving physical point, so
``itk.resample_image_filter(moving, transform=t, use_reference_image=True,
reference_image=fixed)`` is the moving image registered onto the fixed one.

Each peer runs its tool's own full recipe for two arbitrary images: a centre-of-mass
initialisation, an affine stage (ANTs: rigid then affine) and then the deformable stage, all in
one transform fixed -> moving. ``multimodal=True`` swaps every stage's metric for the tool's
mutual information (the deformable stage too); otherwise the metrics are those listed below.
Each peer runs on the CPU with 2 threads in single precision; the deformable stages keep the
settings of the tools' published brain recipes (coarsest level at 8-16 mm at 2 mm voxels):

ANTs (antspyx 0.6, ``ants.registration``): the three stages of ``antsRegistrationSyN.sh -t s``
    as ANTsPy recreates the script (``type_of_transform="antsRegistrationSyN[s]"``; ANTsPy
    ignores its ``aff_metric`` and ``syn_metric`` arguments for this type, and writes no
    ``--winsorize-image-intensities`` or ``--use-histogram-matching`` options):
    initial moving transform ``[fixed,moving,1]`` (the translation between the intensity
    centres of mass), then

    * ``Rigid[0.1]`` and then ``Affine[0.1]`` (gradient step 0.1), each with metric
      ``MI[fixed,moving,1,32,Regular,0.25]`` (Mattes mutual information, 32 bins, a regular
      25 % sample of the voxels), convergence ``[1000x500x250x100,1e-6,10]``, shrink factors
      8x4x2x1, smoothing sigmas 3x2x1x0 voxels;
    * ``SyN[0.2,3,0]`` (gradient step 0.2, update-field smoothing 3 voxels, no total-field
      smoothing), metric ``CC[fixed,moving,1,2]`` (radius 2: a 5-voxel window, 10 mm at 2 mm),
      convergence ``[100x70x50x20,1e-6,10]``, shrink factors 8x4x2x1, smoothing sigmas
      3x2x1x0 voxels;

    single precision (``--float 1``), linear interpolation, collapsed output transforms.
    ``multimodal=True``: ``antsRegistrationSyN[s]`` always uses ``CC`` in its SyN stage (only
    the "Quick" variant uses MI there), so the same stage list is handed to ANTsPy's raw
    ``antsRegistration`` interface (``ants.registration(fixed=[arguments], moving=None)``),
    identical but for the SyN metric ``MI[fixed,moving,1,32]`` (Mattes, 32 bins, every voxel:
    the SyN metric of ``antsRegistrationSyNQuick.sh``); the images go to it as MetaImage
    files in ``workdir`` (exact double geometry). 2 threads:
    ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2``, set in the environment when this module is
    imported (before ANTsPy loads). ANTs writes ``<prefix>0GenericAffine.mat`` (initial
    translation, rigid and affine collapsed) and ``<prefix>1Warp.nii.gz`` (and its inverse)
    in ``workdir``; the forward list ``[1Warp, 0GenericAffine]`` is read back and composed:
    ANTs list ``[Warp, Affine]`` = ITK queue ``[Affine, Warp]``.

elastix (itk-elastix 0.25, ``itk.elastix_registration_method``): two parameter maps,
    metric ``AdvancedNormalizedCorrelation`` in both (``AdvancedMattesMutualInformation``, 32
    histogram bins, its default, in both when ``multimodal``), ``number_of_threads=2``:

    * itk-elastix's default ``affine`` map (``GetDefaultParameterMap("affine")``): 4
      resolutions, smoothing pyramids with schedule 8x4x2x1 voxels (no downsampling),
      ``AffineTransform`` with automatic scales estimation, plus
      ``AutomaticTransformInitialization "true"`` with
      ``AutomaticTransformInitializationMethod "CenterOfGravity"`` (the translation between
      the intensity centres of gravity, the centre of rotation at the fixed one),
      ``AdaptiveStochasticGradientDescent`` with automatic parameter estimation, 256
      iterations per resolution, 2048 random coordinate samples drawn anew every iteration,
      linear interpolation while registering;
    * itk-elastix's default ``bspline`` map for 3 resolutions and a final control-point
      spacing of 10 mm (``GetDefaultParameterMap("bspline", 3, 10.0)``: smoothing pyramids
      4x2x1 voxels, grid-spacing schedule 2, 1.41, 1, i.e. 20, 14, 10 mm) with the metric
      above alone (the default Mattes mutual information plus bending-energy penalty dropped;
      ``MultiResolutionRegistration``: itk-elastix 0.25 crashes in the multi-metric
      registration when ``number_of_threads`` is set, ITKElastix issue #160), 500 iterations
      per resolution (the map's default is 256), 2048 random coordinate samples drawn anew
      every iteration, linear interpolation while registering;

    no result image (``WriteResultImage "false"``). The B-spline stage starts from the
    affine one (elastix chains the maps), and ``itk.transformix_deformation_field`` samples
    the whole chain (affine and B-spline) on the fixed grid; it is returned as a
    ``DisplacementFieldTransform`` (exact at the fixed voxels, linear between them).

FireANTs (fireants 1.5.0, ``fireants.registration``): the quick-start recipe for brain MRI,
    moments, then affine, then greedy, each stage initialised by the one before; loss
    ``"cc"`` (local cross-correlation, rectangular 5-voxel window: 10 mm at 2 mm, as ANTs;
    its ``fusedcc`` needs CUDA) in every stage, or ``"mi"`` (its global mutual information,
    Gaussian Parzen windows, 32 bins) in every stage when ``multimodal``, for which both
    images are first rescaled linearly to [0, 1] (the range its Gaussian Parzen windows
    expect; they clip outside it; cross-correlation sees the raw intensities):

    * ``MomentsRegistration``, first-order moments at scale 4 (its brain-template
      configuration): the translation between the intensity centres of mass;
    * ``AffineRegistration`` at scales 4, 2, 1 (FireANTs keeps a downsampled axis at 32
      voxels or more), iterations 200, 100, 50, Adam with learning rate 3e-3 (the
      quick-start values), parametrised about the fixed image's centre, its default early
      stop (relative loss change below 1e-6 over 10 iterations);
    * ``GreedyRegistration`` (compositive warp) of its LPBA40 brain script, from the affine
      matrix (``init_affine``): scales 4, 2, 1, iterations 200, 100, 50, Adam with learning
      rate 0.5, gradient smoothing sigma 1 voxel and warp smoothing sigma 0.5 voxels (its
      defaults), the same early stop;

    float32 on the CPU, ``torch.set_num_threads(2)`` for the call. The map is read from
    ``get_warped_coordinates`` of the greedy stage (the affine composed with the warp: moving
    points in torch's normalised [-1, 1] coordinates of the moving image, (x, y, z) order, at
    the fixed voxels) and taken to physical LPS millimetres with the moving image's
    ``torch2phy`` matrix: the field that FireANTs' ``save_as_ants_transforms`` writes,
    without the file round trip (that method builds a 2D field as a 3D SimpleITK image and
    fails in 2D).

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
from fireants.registration.affine import AffineRegistration
from fireants.registration.greedy import GreedyRegistration
from fireants.registration.moments import MomentsRegistration

import itkdeepreg as idr

# the stages of antsRegistrationSyN.sh -t s as ANTsPy 0.6 writes them (ants/registration/
# registration.py); {fixed} and {moving} are the images, {syn_metric} the SyN stage's metric
ANTS_SYN_STAGES = (
    ("--transform", "Rigid[0.1]"),
    ("--metric", "MI[{fixed},{moving},1,32,Regular,0.25]"),
    ("--convergence", "[1000x500x250x100,1e-6,10]"),
    ("--shrink-factors", "8x4x2x1"),
    ("--smoothing-sigmas", "3x2x1x0vox"),
    ("--transform", "Affine[0.1]"),
    ("--metric", "MI[{fixed},{moving},1,32,Regular,0.25]"),
    ("--convergence", "[1000x500x250x100,1e-6,10]"),
    ("--shrink-factors", "8x4x2x1"),
    ("--smoothing-sigmas", "3x2x1x0vox"),
    ("--transform", "SyN[0.2,3,0]"),
    ("--metric", "{syn_metric}"),
    ("--convergence", "[100x70x50x20,1e-6,10]"),
    ("--shrink-factors", "8x4x2x1"),
    ("--smoothing-sigmas", "3x2x1x0vox"),
)
ANTS_SYN_MI = "MI[{fixed},{moving},1,32]"  # the SyN metric of antsRegistrationSyNQuick.sh


def ants_syn(fixed, moving, workdir: pathlib.Path, multimodal: bool = False):
    """ANTs rigid + affine + SyN (antsRegistrationSyN.sh -t s); see the module docstring."""
    output = pathlib.Path(workdir) / "ants"
    output.mkdir(parents=True, exist_ok=True)
    prefix = str(output / "syn_")
    dimension = fixed.GetImageDimension()
    if not multimodal:
        result = ants.registration(
            fixed=_ants_image(fixed),
            moving=_ants_image(moving),
            type_of_transform="antsRegistrationSyN[s]",
            outprefix=prefix,
        )
        files = result["fwdtransforms"]
    else:
        # antsRegistrationSyN[s] has CC in its SyN stage whatever syn_metric says: the same
        # stages through ANTsPy's raw antsRegistration interface, with MI in the SyN stage
        images = {"fixed": str(output / "fixed.mha"), "moving": str(output / "moving.mha")}
        ants.image_write(_ants_image(fixed), images["fixed"])
        ants.image_write(_ants_image(moving), images["moving"])
        stages = [
            value.format(syn_metric=ANTS_SYN_MI.format(**images), **images)
            for stage in ANTS_SYN_STAGES
            for value in stage
        ]
        arguments = [
            "--dimensionality", str(dimension),
            "-r", "[{fixed},{moving},1]".format(**images),
            "--output", prefix,
            *stages,
            "-x", "[NA,NA]",
            "--float", "1",
            "--write-composite-transform", "0",
        ]  # fmt: skip
        ants.registration(fixed=arguments, moving=None)
        files = [prefix + "1Warp.nii.gz", prefix + "0GenericAffine.mat"]
    # ANTs order [Warp, Affine]: a fixed point goes through the warp first, then the affine
    names = [pathlib.Path(path).name for path in files]
    if names != ["syn_1Warp.nii.gz", "syn_0GenericAffine.mat"]:
        raise RuntimeError(f"unexpected ANTs transforms {files}")
    composite = itk.CompositeTransform[itk.D, dimension].New()
    for path in reversed(files):  # ITK applies the transform added last first: [Affine, Warp]
        composite.AddTransform(_read_ants_transform(path, dimension))
    return composite


def elastix_bspline(fixed, moving, workdir: pathlib.Path, multimodal: bool = False):
    """elastix affine + B-spline; see the module docstring."""
    metric = "AdvancedMattesMutualInformation" if multimodal else "AdvancedNormalizedCorrelation"
    parameters = itk.ParameterObject.New()
    affine = parameters.GetDefaultParameterMap("affine")
    affine["Metric"] = [metric]
    affine["AutomaticTransformInitialization"] = ["true"]
    affine["AutomaticTransformInitializationMethod"] = ["CenterOfGravity"]
    affine["WriteResultImage"] = ["false"]
    affine["ResultImagePixelType"] = ["float"]
    parameters.AddParameterMap(affine)
    bspline = parameters.GetDefaultParameterMap("bspline", 3, 10.0)
    bspline["Metric"] = [metric]
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
    if result.GetNumberOfParameterMaps() != 2:
        raise RuntimeError(f"elastix returned {result.GetNumberOfParameterMaps()} maps, not 2")
    with contextlib.chdir(workdir):  # transformix writes deformationField.nii where it runs
        field = itk.transformix_deformation_field(moving, result)  # both maps, chained
    return field_transform(field)


def fireants_greedy(fixed, moving, workdir: pathlib.Path, multimodal: bool = False):
    """FireANTs moments + affine + greedy; see the module docstring."""
    loss = {
        "loss_type": "mi" if multimodal else "cc",
        "cc_kernel_type": "rectangular",
        "cc_kernel_size": 5,
        "dtype": torch.float32,
        "progress_bar": False,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        fixed_images = BatchedImages([Image(_sitk_image(fixed, multimodal), device="cpu")])
        moving_images = BatchedImages([Image(_sitk_image(moving, multimodal), device="cpu")])
        moments = MomentsRegistration(4, fixed_images, moving_images, moments=1, **loss)
        moments.optimize()
        # both stages: scales 4, 2, 1 with 200, 100, 50 Adam steps on the same images
        stage = dict(
            scales=[4, 2, 1],
            iterations=[200, 100, 50],
            fixed_images=fixed_images,
            moving_images=moving_images,
            optimizer="Adam",
            **loss,
        )
        affine = AffineRegistration(
            optimizer_lr=3e-3, init_rigid=moments.get_affine_init(), **stage
        )
        affine.optimize()
        registration = GreedyRegistration(
            deformation_type="compositive",
            optimizer_lr=0.5,
            smooth_grad_sigma=1.0,
            smooth_warp_sigma=0.5,
            init_affine=affine.get_affine_matrix().detach(),
            **stage,
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


def _sitk_image(image, unit_range: bool = False):
    """The SimpleITK image of an ``itk.Image`` (same array order, z, y, x).

    ``unit_range`` rescales the intensities linearly to [0, 1] (for FireANTs' mutual information).
    """
    array = itk.array_from_image(image).astype(np.float32)
    if unit_range:
        low, high = float(array.min()), float(array.max())
        array = (array - low) / max(high - low, np.finfo(np.float32).tiny)
    result = sitk.GetImageFromArray(array)
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
