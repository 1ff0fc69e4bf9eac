"""``warp`` applies a chain of transforms as antsApplyTransforms; ``apply`` writes transformix's
-def/-jac outputs and keeps labels (issue 23). Before: ``warp`` kept the last --transform only
and read "[T,1]" as a file name, ``apply`` knew neither -def, -jac nor --labels and needed -in."""

import ants
import itk
import numpy as np
import pytest
from conftest import oblique_direction, random_affine

from itkdeepreg.cli import main
from itkdeepreg.geometry import ImageGeometry
from itkdeepreg.interop.transformix import write_transformix_parameters
from itkdeepreg.parameter_files import write_parameter_file

LABELS = (0, 7, 200)


def _image(array, spacing, origin, direction, pixel=None):
    image = itk.image_from_array(np.ascontiguousarray(array, dtype=pixel or array.dtype))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(itk.matrix_from_array(direction))
    return image


def _points(image):
    """Physical points of the voxels, ``[z, y, x, 3]`` (x, y, z components)."""
    size = list(itk.size(image))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij"), -1)
    index = index[..., ::-1].astype(np.float64)  # (z, y, x) axes, (x, y, z) components
    direction = itk.array_from_matrix(image.GetDirection())
    scaled = index * np.asarray(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + scaled @ direction.T


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An oblique fixed and moving image, a label map, an affine and a warp on the fixed grid."""
    folder = tmp_path_factory.mktemp("chain")
    fixed = _image(
        np.zeros((11, 13, 15)),
        [1.0, 1.1, 1.3],
        [-3.0, 2.0, 4.0],
        oblique_direction(3, 0.3),
        np.float32,
    )
    shape = (12, 14, 16)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    moving_geometry = ([1.1, 0.9, 1.2], [-2.0, 1.0, 3.0], oblique_direction(3, 0.35))
    smooth = np.sin(3 * x + 1) + np.cos(4 * y) + np.sin(5 * z + 2)
    moving = _image(smooth, *moving_geometry, np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[2:9, 3:11, 2:12] = 7
    labels[5:11, 6:13, 8:15] = 200
    label_image = _image(labels, *moving_geometry)

    affine = itk.AffineTransform[itk.D, 3].New()
    affine.SetMatrix(
        itk.matrix_from_array(np.array([[1.05, 0.04, -0.02], [-0.03, 0.97, 0.05], [0.02, 0, 1]]))
    )
    affine.SetTranslation([0.6, -0.8, 0.4])
    affine.SetCenter([2.0, 6.0, 9.0])
    points = _points(fixed)  # a smooth warp of about 1.5 mm on the fixed grid
    vectors = np.stack([1.5 * np.sin(0.2 * points[..., (i + 1) % 3] + i) for i in range(3)], -1)
    fields = {}
    for pixel in (itk.F, itk.D):  # a float warp file; a double one for the ITK transform
        fields[pixel] = itk.Image[itk.Vector[pixel, 3], 3].New()
        fields[pixel].SetRegions(fixed.GetLargestPossibleRegion())
        fields[pixel].Allocate()
        itk.array_view_from_image(fields[pixel])[:] = vectors
        fields[pixel].CopyInformation(fixed)
    warp = fields[itk.F]
    with_field = itk.CompositeTransform[itk.D, 3].New()  # ours: an affine and a field in one .h5
    field_transform = itk.DisplacementFieldTransform[itk.D, 3].New()
    field_transform.SetDisplacementField(fields[itk.D])
    with_field.AddTransform(affine)
    with_field.AddTransform(field_transform)

    paths = {n: str(folder / n) for n in ("fixed.nii.gz", "moving.nii.gz", "labels.nii.gz")}
    paths |= {n: str(folder / n) for n in ("a.mat", "a.tfm", "warp.nii.gz", "with_field.h5")}
    itk.imwrite(fixed, paths["fixed.nii.gz"])
    itk.imwrite(moving, paths["moving.nii.gz"])
    itk.imwrite(label_image, paths["labels.nii.gz"])
    itk.imwrite(warp, paths["warp.nii.gz"])
    itk.transformwrite([affine], paths["a.mat"])
    itk.transformwrite([affine], paths["a.tfm"])
    itk.transformwrite([with_field], paths["with_field.h5"])
    return paths


def _read(path):
    return itk.array_from_image(itk.imread(str(path)))


def _by_ants(files, moving, transforms, inverted, **options):
    result = ants.apply_transforms(
        fixed=ants.image_read(files["fixed.nii.gz"]),
        moving=ants.image_read(files[moving]),
        transformlist=transforms,
        whichtoinvert=inverted,
        **options,
    )
    return result if isinstance(result, str) else result.numpy().T  # ANTsPy: (x, y, z)


def _warp(files, tmp_path, transforms, moving="moving.nii.gz", *options):
    out = tmp_path / "warped.nii.gz"
    arguments = ["warp", "--fixed", files["fixed.nii.gz"], "--moving", files[moving]]
    for transform in transforms:
        arguments += ["--transform", transform]
    assert main([*arguments, "--out", str(out), *options]) == 0
    return itk.imread(str(out))


# today: two --transform flags keep only the last one, and "[a.mat,1]" is no such file
@pytest.mark.parametrize(
    "affine, notation, inverted",
    [("a.mat", "{}", False), ("a.mat", "[{},1]", True), ("a.tfm", "[{}, 1]", True)],
)
def test_a_chain_warps_as_ants_apply_transforms(files, tmp_path, affine, notation, inverted):
    chain = [files["warp.nii.gz"], notation.format(files[affine])]
    warped = itk.array_from_image(_warp(files, tmp_path, chain))
    # ANTsPy inverts only files named .mat: the same affine as a.tfm
    by_ants = _by_ants(
        files, "moving.nii.gz", [files["warp.nii.gz"], files["a.mat"]], [False, inverted]
    )
    assert np.abs(by_ants).max() > 1
    assert np.abs(warped - by_ants).max() < 1e-5


def test_a_chain_warps_as_its_one_composed_transform(files, tmp_path):
    chain = [files["warp.nii.gz"], files["a.mat"]]
    composed = _by_ants(
        files, "moving.nii.gz", chain, [False, True], compose=str(tmp_path / "composed_")
    )
    whole = itk.array_from_image(_warp(files, tmp_path, [composed]))
    by_chain = _warp(files, tmp_path, [chain[0], f"[{chain[1]},1]"])
    # the composed field is sampled at the fixed voxels, where the chain is evaluated
    assert np.abs(itk.array_from_image(by_chain) - whole).max() < 1e-5


def test_labels_on_a_chain_keep_their_values(files, tmp_path):
    chain = [files["warp.nii.gz"], f"[{files['a.mat']},1]"]
    warped = _warp(files, tmp_path, chain, "labels.nii.gz", "--interpolation", "label")
    assert itk.template(warped)[1][0] is itk.UC
    values = itk.array_from_image(warped)
    assert set(np.unique(values)) == set(LABELS)
    by_ants = _by_ants(
        files,
        "labels.nii.gz",
        [files["warp.nii.gz"], files["a.mat"]],
        [False, True],
        interpolator="genericLabel",
    )
    assert (values == by_ants).mean() > 0.98  # the same rule; ties may fall either way


@pytest.mark.parametrize("transform", ["warp.nii.gz", "with_field.h5"])
def test_inverting_a_warp_is_refused_as_by_ants(files, tmp_path, capsys, transform):
    out = tmp_path / "warped.nii.gz"
    arguments = ["warp", "--fixed", files["fixed.nii.gz"], "--moving", files["moving.nii.gz"]]
    arguments += ["--transform", f"[{files[transform]},1]", "--out", str(out)]
    assert main(arguments) == 1
    error = capsys.readouterr().err.strip()
    assert "cannot invert" in error and "--inverse-out" in error, error
    assert not out.exists()


def test_a_wrong_bracket_is_a_usage_error(files, tmp_path, capsys):
    arguments = ["warp", "--fixed", files["fixed.nii.gz"], "--moving", files["moving.nii.gz"]]
    arguments += ["--transform", f"[{files['a.mat']},2]", "--out", str(tmp_path / "w.nii.gz")]
    assert main(arguments) == 2
    assert "[FILE,1]" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# apply


def _affine_parameters(files, path):
    """An elastix AffineTransform map on the fixed grid, as elastix writes it (cubic B-spline
    resampling); its matrix, translation and centre."""
    fixed = itk.imread(files["fixed.nii.gz"])
    matrix = np.array([[1.1, 0.05, 0.0], [-0.04, 0.9, 0.02], [0.0, 0.03, 1.05]])
    translation, center = np.array([1.5, -2.0, 0.5]), np.array([2.0, 5.0, 8.0])
    direction = itk.array_from_matrix(fixed.GetDirection())
    values = {
        "Transform": "AffineTransform",
        "NumberOfParameters": 12,
        "TransformParameters": [*matrix.ravel(), *translation],
        "CenterOfRotationPoint": list(center),
        "InitialTransformParameterFileName": "NoInitialTransform",
        "HowToCombineTransforms": "Compose",
        "FixedImageDimension": 3,
        "MovingImageDimension": 3,
        "FixedInternalImagePixelType": "float",
        "MovingInternalImagePixelType": "float",
        "Size": [int(n) for n in itk.size(fixed)],
        "Index": [0, 0, 0],
        "Spacing": [float(s) for s in fixed.GetSpacing()],
        "Origin": [float(o) for o in fixed.GetOrigin()],
        "Direction": list(direction.T.ravel()),  # column by column
        "UseDirectionCosines": True,
        "ResampleInterpolator": "FinalBSplineInterpolator",
        "FinalBSplineInterpolationOrder": 3,
        "Resampler": "DefaultResampler",
        "DefaultPixelValue": 0,
        "ResultImageFormat": "nii",
        "ResultImagePixelType": "float",
    }
    write_parameter_file(values, path)
    return matrix, translation, center


def _apply(out, *arguments):
    assert main(["apply", *arguments, "-out", str(out)]) == 0
    return out


# today: -def and -jac are unknown flags, and -in is required
def test_apply_writes_the_deformation_field_and_the_jacobian(files, tmp_path):
    parameters = str(tmp_path / "affine.txt")
    matrix, translation, center = _affine_parameters(files, parameters)
    out = _apply(tmp_path / "out", "-tp", parameters, "-def", "all", "-jac", "all")
    assert {p.name for p in out.iterdir()} == {"deformationField.nii.gz", "spatialJacobian.nii.gz"}
    points = _points(itk.imread(files["fixed.nii.gz"]))
    expected = (points - center) @ matrix.T + center + translation - points
    field = _read(out / "deformationField.nii.gz")
    assert field.shape == expected.shape
    assert np.abs(field - expected).max() < 1e-4
    jacobian = _read(out / "spatialJacobian.nii.gz")
    assert jacobian.shape == expected.shape[:-1]
    assert np.allclose(jacobian, np.linalg.det(matrix), atol=1e-5)

    image = ["-in", files["moving.nii.gz"]]
    with_image = _apply(tmp_path / "with_image", *image, "-tp", parameters, "-def", "all")
    assert {p.name for p in with_image.iterdir()} == {"result.nii.gz", "deformationField.nii.gz"}


def test_apply_needs_an_image_or_an_output_of_the_transform(files, tmp_path, capsys):
    parameters = str(tmp_path / "affine.txt")
    _affine_parameters(files, parameters)
    assert main(["apply", "-tp", parameters, "-out", str(tmp_path / "none")]) == 2
    assert "give -in IMAGE, -def all or -jac all" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


# today: --labels is an unknown flag; without it the B-spline mixes the labels
def test_apply_keeps_the_labels_of_a_label_map(files, tmp_path):
    parameters = str(tmp_path / "affine.txt")
    _affine_parameters(files, parameters)
    out = _apply(tmp_path / "labels", "-in", files["labels.nii.gz"], "-tp", parameters, "--labels")
    result = itk.imread(str(out / "result.nii.gz"))
    assert itk.template(result)[1][0] is itk.UC  # the input's pixel type
    assert set(np.unique(itk.array_from_image(result))) == set(LABELS)
    mixed = _apply(tmp_path / "mixed", "-in", files["labels.nii.gz"], "-tp", parameters)
    mixed = _read(mixed / "result.nii.gz")
    assert len(np.unique(mixed)) > 10


def test_apply_def_and_jac_of_our_parameter_file(files, tmp_path):
    """-def gives back our field; -jac, which elastix does not compute for a
    DeformationFieldTransform, is the determinant of the map."""
    fixed = ImageGeometry.from_image(itk.imread(files["fixed.nii.gz"]))
    moving = ImageGeometry.from_image(itk.imread(files["moving.nii.gz"]))
    parameters, field = str(tmp_path / "ours.txt"), str(tmp_path / "ours_field.nii.gz")
    affine = random_affine(3, seed=4)
    write_transformix_parameters(affine, parameters, fixed, moving, field)
    out = _apply(tmp_path / "out", "-tp", parameters, "-def", "all", "-jac", "all")
    written = itk.ImageFileReader[itk.VectorImage[itk.D, 3]].New(FileName=field)
    written.Update()
    expected = itk.array_from_image(written.GetOutput())
    assert np.abs(expected).max() > 1
    assert np.abs(_read(out / "deformationField.nii.gz") - expected).max() < 1e-4
    linear = [g.unit_to_physical[:-1, :-1] for g in (moving, fixed)]
    volume = np.linalg.det(affine.matrix[0, :-1, :-1].numpy()) * np.linalg.det(linear[0])
    assert np.allclose(_read(out / "spatialJacobian.nii.gz"), volume / np.linalg.det(linear[1]))
