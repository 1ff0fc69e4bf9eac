"""Text and MATLAB transform files read without ITK's transform reader give what ITK's reader
gives, and reading one loads none of ITK's displacement-field modules."""

from __future__ import annotations

import struct
import subprocess
import sys

import itk
import numpy as np
import pytest

from itkdeepreg.interop.transforms import read_itk_transform


def _set(transform, parameters=None, fixed=None):
    if fixed is not None:
        array = transform.GetFixedParameters()
        for index, value in enumerate(fixed):
            array[index] = value
        transform.SetFixedParameters(array)
    array = transform.GetParameters()
    values = parameters if parameters is not None else np.linspace(0.9, 1.3, len(array))
    for index, value in enumerate(values):
        array[index] = value
    transform.SetParametersByValue(array)
    return transform


def _bspline(dimension, precision=itk.D):
    transform = itk.BSplineTransform[precision, dimension, 3].New()
    grid = itk.BSplineTransformInitializer[
        transform, itk.Image[itk.F, dimension]
    ].New()  # a 5-node grid over a small image, through the initializer ITK users call
    image = itk.Image[itk.F, dimension].New()
    image.SetRegions([8] * dimension)
    image.SetSpacing([1.5] * dimension)
    image.Allocate()
    grid.SetTransform(transform)
    grid.SetImage(image)
    grid.SetTransformDomainMeshSize([2] * dimension)
    grid.InitializeTransform()
    count = transform.GetNumberOfParameters()
    return _set(transform, np.random.default_rng(dimension).normal(0, 0.5, count))


def _transforms(dimension):
    """ITK transforms of many classes in ``dimension``, with parameters that are not defaults."""
    d = itk.D
    made = [
        _set(itk.TranslationTransform[d, dimension].New()),
        _set(itk.AffineTransform[d, dimension].New(), fixed=[1.0, -2.0, 3.0][:dimension]),
        _set(itk.ScaleTransform[d, dimension].New(), fixed=[0.5] * dimension),
        _set(itk.AffineTransform[itk.F, dimension].New(), fixed=[1.0] * dimension),
        _bspline(dimension),
    ]
    if dimension == 2:
        made += [
            _set(itk.Euler2DTransform[d].New(), [0.2, 3.0, -1.0], [5.0, 6.0]),
            _set(itk.Similarity2DTransform[d].New(), [1.1, 0.2, 3.0, -1.0], [5.0, 6.0]),
        ]
    else:
        made += [
            _set(itk.Euler3DTransform[d].New(), [0.1, -0.2, 0.3, 4.0, 5.0, 6.0], [1, 2, 3]),
            _set(itk.VersorRigid3DTransform[d].New(), [0.1, 0.2, 0.05, 1, 2, 3], [4, 5, 6]),
            _set(itk.Similarity3DTransform[d].New(), [0.1, 0.2, 0.05, 1, 2, 3, 1.2], [4, 5, 6]),
            _set(itk.ScaleSkewVersor3DTransform[d].New(), fixed=[4, 5, 6]),
        ]
    composite = itk.CompositeTransform[d, dimension].New()
    composite.AddTransform(made[1])
    composite.AddTransform(made[-1])
    return made + [composite]


def _points(dimension):
    return np.random.default_rng(7).uniform(-5, 15, (20, dimension))


def _same(ours, theirs, dimension):
    assert ours.GetTransformTypeAsString() == theirs.GetTransformTypeAsString()
    np.testing.assert_array_equal(
        np.asarray(ours.GetFixedParameters()), np.asarray(theirs.GetFixedParameters())
    )
    np.testing.assert_array_equal(
        itk.array_from_vnl_vector(ours.GetParameters()),
        itk.array_from_vnl_vector(theirs.GetParameters()),
    )
    for point in _points(dimension):
        np.testing.assert_allclose(
            ours.TransformPoint(point.tolist()), theirs.TransformPoint(point.tolist()), atol=1e-12
        )


@pytest.mark.parametrize("dimension", [2, 3])
@pytest.mark.parametrize("suffix", [".tfm", ".txt", ".mat"])
def test_every_class_reads_as_itk_reads_it(tmp_path, dimension, suffix):
    for index, transform in enumerate(_transforms(dimension)):
        if suffix == ".mat" and transform.GetNameOfClass() == "CompositeTransform":
            continue  # ITK's MATLAB format holds no composite
        path = str(tmp_path / f"t{index}{suffix}")
        itk.transformwrite([transform], path)
        (theirs,) = itk.transformread(path)
        _same(read_itk_transform(path), theirs, dimension)


def test_reading_a_linear_file_loads_no_displacement_field_module(tmp_path):
    transform = _set(itk.AffineTransform[itk.D, 3].New(), fixed=[1.0, 2.0, 3.0])
    for suffix in (".tfm", ".mat"):
        itk.transformwrite([transform], str(tmp_path / f"a{suffix}"))
    script = (
        "import sys\n"
        "from itkdeepreg.interop.transforms import read_itk_transform\n"
        f"for name in ('a.tfm', 'a.mat'):\n"
        f"    read_itk_transform({str(tmp_path)!r} + '/' + name)\n"
        "print(sorted(m for m in sys.modules if m.endswith('Python')\n"
        "             and ('DisplacementField' in m or 'TransformIO' in m)))\n"
    )  # the compiled modules: ITK's configuration modules are read at import
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _matlab_matrix(name, values, order="<", kind=0):
    name_bytes = name.encode() + b"\0"
    header = struct.pack(f"{order}5i", kind, len(values), 1, 0, len(name_bytes))
    return header + name_bytes + struct.pack(f"{order}{len(values)}d", *values)


def test_a_big_endian_matlab_file_is_read(tmp_path):
    parameters = [1.0, 0.1, 0.0, 1.0, 3.0, -2.0]
    path = tmp_path / "big.mat"
    path.write_bytes(
        _matlab_matrix("AffineTransform_double_2_2", parameters, ">", 1000)
        + _matlab_matrix("fixed", [4.0, 5.0], ">", 1000)
    )
    read = read_itk_transform(path)
    np.testing.assert_array_equal(itk.array_from_vnl_vector(read.GetParameters()), parameters)
    np.testing.assert_array_equal(np.asarray(read.GetFixedParameters()), [4.0, 5.0])


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda m: m[:-3], "cut short"),
        (lambda m: m[: m.index(b"fixed") - 20], "cut short|not pairs"),
        (lambda m: b"\x07" + m[1:], "matrix type"),
        (lambda m: m.replace(b"fixed", b"fixes"), "'fixes', not 'fixed'"),
        (lambda m: m[:-8] + struct.pack("<d", float("nan")), "NaN or infinite"),
        (lambda m: m[: m.index(b"fixed") - 20] + m[-30:], "cut short|malformed"),
    ],
)
def test_a_broken_matlab_file_is_refused_with_what_is_wrong(tmp_path, content, message):
    good = _matlab_matrix("AffineTransform_double_2_2", [1, 0, 0, 1, 0, 0]) + _matlab_matrix(
        "fixed", [0.0, 0.0]
    )
    path = tmp_path / "broken.mat"
    path.write_bytes(content(good))
    with pytest.raises(ValueError, match=message):
        read_itk_transform(path)


def test_a_short_parameter_list_names_the_transform_and_its_line(tmp_path):
    path = tmp_path / "short.tfm"
    path.write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: CompositeTransform_double_2_2\n"
        "#Transform 1\nTransform: Euler2DTransform_double_2_2\nParameters: 0.1 2\n"
        "FixedParameters: 0 0\n"
    )
    with pytest.raises(ValueError, match=r"Euler2DTransform \(line 5\) needs 3 Parameters, the"):
        read_itk_transform(path)
