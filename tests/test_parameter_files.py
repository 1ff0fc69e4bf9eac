"""Elastix-style parameter files: the format, its errors, and the options of our steps."""

import os
import subprocess
import sys
import textwrap

import pytest

from itkdeepreg.parameter_files import (
    ParameterFileError,
    ParameterMap,
    StepOptions,
    parameter_text,
    parse_parameter_text,
    read_parameter_file,
    step_options,
    step_parameters,
    write_parameter_file,
)

METHODS = ("unigradicon", "deformable", "affine")

# the first lines of itk-elastix 0.25.4's default bspline map, as ParameterObject writes it
ELASTIX_BSPLINE = """\
(AutomaticParameterEstimation "true")
(CheckNumberOfSamples "true")
(DefaultPixelValue 0)
(FinalBSplineInterpolationOrder 3)
(FinalGridSpacingInPhysicalUnits 10.000000)
(GridSpacingSchedule 2.8284271247461903 2 1.4142135623730951 1)
(Metric "AdvancedMattesMutualInformation" "TransformBendingEnergyPenalty")
(Metric0Weight 1.0)
(NumberOfResolutions 4)
(Registration "MultiMetricMultiResolutionRegistration")
(ResampleInterpolator "FinalBSplineInterpolator")
(ResultImagePixelType "unsigned char")
(Transform "BSplineTransform")
"""

STEP = """\
// a deformable step, as a user writes it
(Registration "DeepRegistration")
(Model "deformable")   // the method
(Metric "LNCC")

(MaximumNumberOfIterations 100 50 20)
(ImagePyramidSchedule 4 2 1)
(Transform "Velocity")
(Symmetric "true")
(Regularization "GradICON" "Diffusion")
(RegularizationWeight 1.5 0.05)
(LearningRate 0.25)
(Device "cpu")
"""


def raises_at(path, line, *fragments):
    """A context that expects a ParameterFileError at ``path:line:`` holding ``fragments``."""

    class Check:
        def __enter__(self):
            self.context = pytest.raises(ParameterFileError)
            self.info = self.context.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.context.__exit__(*exc)
            message = str(self.info.value)
            assert message.startswith(f"{path}:{line}: "), message
            for fragment in fragments:
                assert fragment in message, message
            return handled

    return Check()


# ------------------------------------------------------------------------------------ format


def test_parse_keeps_values_in_order_with_their_lines():
    text = (
        "// a comment\r\n"
        "\n"
        '   (Metric "AdvancedMattesMutualInformation" "TransformBendingEnergyPenalty")\n'
        "(Spacing 1.5 -2 3e-4) // trailing comment\n"
        '(WriteResultImage "true")\n'
        "(UseDirectionCosines true)\n"
        '(ResultImagePixelType "unsigned char")\n'
        '(Url "http://example.org/a")\n'
        '(Empty "")\n'
    )
    parameters = parse_parameter_text(text, "map.txt")
    assert parameters.path == "map.txt"
    assert parameters.values == {
        "Metric": ("AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"),
        "Spacing": ("1.5", "-2", "3e-4"),
        "WriteResultImage": ("true",),
        "UseDirectionCosines": ("true",),
        "ResultImagePixelType": ("unsigned char",),
        "Url": ("http://example.org/a",),
        "Empty": ("",),
    }
    assert parameters.lines == {
        "Metric": 3,
        "Spacing": 4,
        "WriteResultImage": 5,
        "UseDirectionCosines": 6,
        "ResultImagePixelType": 7,
        "Url": 8,
        "Empty": 9,
    }
    assert parameters.as_elastix()["Spacing"] == ["1.5", "-2", "3e-4"]
    assert not parameters.is_ours
    assert parse_parameter_text("").values == {}


def test_an_elastix_map_parses_and_is_not_ours():
    parameters = parse_parameter_text(ELASTIX_BSPLINE)
    assert not parameters.is_ours
    assert parameters.values["GridSpacingSchedule"] == (
        "2.8284271247461903",
        "2",
        "1.4142135623730951",
        "1",
    )
    assert parameters.values["ResultImagePixelType"] == ("unsigned char",)
    assert parameters.lines["Transform"] == 13
    assert parse_parameter_text(STEP).is_ours


def test_write_and_read_round_trip(tmp_path):
    values = {
        "Registration": "DeepRegistration",
        "Iterations": (100, 50),
        "Scale": [0.1 + 0.2, 1e-20, -3.0],
        "Flag": True,
        "Other": False,
        "Name": "with spaces",
        "Path": tmp_path / "weights.trch",
    }
    path = tmp_path / "step.txt"
    write_parameter_file(values, path)
    text = path.read_text()
    assert "(Iterations 100 50)\n" in text
    assert "(Scale 0.30000000000000004 1e-20 -3.0)\n" in text
    assert '(Flag "true")\n(Other "false")\n' in text
    assert '(Name "with spaces")\n' in text
    parameters = read_parameter_file(path)
    assert parameters.path == str(path)
    assert parameters.is_ours
    assert parameters.values["Scale"] == ("0.30000000000000004", "1e-20", "-3.0")
    assert float(parameters.values["Scale"][0]) == 0.1 + 0.2
    assert parameters.values["Path"] == (str(tmp_path / "weights.trch"),)
    assert list(parameters.values) == list(values)
    assert parameters.lines["Flag"] == 4
    assert os.listdir(tmp_path) == ["step.txt"]


@pytest.mark.parametrize(
    "line, fragments",
    [
        ('Metric "NCC"', ["expected one (Key value ...) entry"]),
        ("(Metric NCC", ["unbalanced parentheses", "')'"]),
        ("Metric NCC)", ["expected one (Key value ...) entry"]),
        (")", ["unbalanced parentheses", "')' without '('"]),
        ('(Metric "NCC)', ["unbalanced quotes"]),
        ("(Metric (NCC))", ["'(' inside an entry"]),
        ("(Metric NCC) (Device cpu)", ["two entries on one line"]),
        ("(Metric NCC) x", ["unexpected text after the entry"]),
        ("()", ["empty key"]),
        ('("Metric" NCC)', ["empty key"]),
        ("(  )  // nothing", ["empty key"]),
        ("(Metric)", ["(Metric) has no value"]),
        ("(Metric // NCC)", ["unbalanced parentheses"]),
        ("(Me-tric NCC)", ["'Me-tric' is not a key"]),
    ],
)
def test_syntax_errors_name_their_line(line, fragments):
    text = f"// header\n(Registration DeepRegistration)\n\n{line}\n(Device cpu)\n"
    with raises_at("steps/a.txt", 4, *fragments):
        parse_parameter_text(text, "steps/a.txt")


def test_a_key_given_twice_names_both_lines():
    text = '(Metric "NCC")\n// x\n(Device "cpu")\n(Metric "MSE")\n'
    with raises_at("<text>", 4, "Metric is given twice", "lines 1 and 4"):
        parse_parameter_text(text)


def test_read_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_parameter_file(missing)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b'(Metric "NCC")\n(Device "cpu")\n(Name "\xff\xfe")\n')
    with raises_at(binary, 3, "not UTF-8"):
        read_parameter_file(binary)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b'\xef\xbb\xbf(Metric "NCC")\n')
    assert read_parameter_file(bom).values == {"Metric": ("NCC",)}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"Iterations": ()}, "Iterations with no value"),
        ({"Iterations": []}, "Iterations with no value"),
        ({"Name": 'a "quoted" word'}, "double quote"),
        ({"Name": "two\nlines"}, "newline"),
        ({"Scale": float("nan")}, "finite"),
        ({"bad key": 1}, "bad key"),
        ({"Object": object()}, "Object"),
    ],
)
def test_write_refuses_values_elastix_cannot_read_back(tmp_path, values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        write_parameter_file({"Registration": "DeepRegistration", **values}, tmp_path / "p.txt")
    assert os.listdir(tmp_path) == []


def test_an_unwritable_path_leaves_nothing(tmp_path):
    values = {"Metric": "NCC"}
    with pytest.raises(OSError, match="not a writable directory"):
        write_parameter_file(values, tmp_path / "missing" / "p.txt")
    with pytest.raises(ValueError, match=r"\.txt"):
        write_parameter_file(values, tmp_path / "p.nii")
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(IsADirectoryError):
        write_parameter_file(values, tmp_path / "folder.txt")
    assert os.listdir(tmp_path) == ["folder.txt"]
    assert os.listdir(tmp_path / "folder.txt") == []


def test_the_module_needs_neither_torch_nor_itk():
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/itkdeepreg"
    script = textwrap.dedent(
        f"""
        import sys, types
        sys.modules["itk"] = None
        sys.modules["torch"] = None
        sys.modules["numpy"] = None
        stub = types.ModuleType("itkdeepreg")  # skips the package's __init__ (torch)
        stub.__path__ = [{package!r}]
        sys.modules["itkdeepreg"] = stub
        from itkdeepreg.parameter_files import parse_parameter_text, step_options
        print(step_options(parse_parameter_text('(Registration "DeepRegistration")\\n'
                                                '(Model "affine")'), ["affine"]).method)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "affine"


# ------------------------------------------------------------------------------- our steps


def test_step_options_of_a_step_file():
    step = step_options(parse_parameter_text(STEP, "step.txt"), METHODS)
    assert isinstance(step, StepOptions)
    assert step.method == "deformable"
    assert step.path == "step.txt"
    assert step.options == {
        "similarity": "lncc",
        "iterations": (100, 50, 20),
        "levels": (4, 2, 1),
        "parameterization": "velocity",
        "symmetric": True,
        "regularization": {"gradicon": 1.5, "diffusion": 0.05},
        "learning_rate": 0.25,
        "device": "cpu",
    }
    assert step.lines["method"] == 3
    assert step.lines["iterations"] == 6
    assert step.lines["regularization"] == 10
    error = step.error("iterations", "the method X takes no option iterations")
    assert isinstance(error, ParameterFileError)
    assert str(error) == "step.txt:6: the method X takes no option iterations"


def test_step_values_take_any_case_and_bare_or_quoted_forms():
    text = (
        "(Registration DeepRegistration)\n(Model unigradicon)\n(FixedModality ct)\n"
        '(MovingModality "MRI")\n(InstanceOptimization "weights")\n'
        "(InstanceOptimizationIterations 0)\n(Metric squared_lncc)\n(Symmetric FALSE)\n"
        '(Device "cuda:1")\n(Weights "models/brain.trch")\n(ImagePyramidSchedule 2.5 1)\n'
    )
    step = step_options(parse_parameter_text(text), METHODS)
    assert step.options == {
        "fixed_modality": "ct",
        "moving_modality": "mri",
        "io_kind": "weights",
        "io_iterations": 0,
        "similarity": "squared_lncc",
        "symmetric": False,
        "device": "cuda:1",
        "weights": "models/brain.trch",
        "levels": (2.5, 1),
    }


def step_text(*lines):
    return '(Registration "DeepRegistration")\n(Model "deformable")\n' + "".join(
        line + "\n" for line in lines
    )


@pytest.mark.parametrize(
    "lines, line, fragments",
    [
        (
            ["(InstanceOptimisationIterations 5)"],
            3,
            [
                "unknown key InstanceOptimisationIterations",
                "did you mean InstanceOptimizationIterations?",
            ],
        ),
        (["(metric NCC)"], 3, ["unknown key metric", "did you mean Metric?"]),
        (["(NumberOfSpatialSamples 2048)"], 3, ["unknown key NumberOfSpatialSamples", "Metric"]),
        (['(Metric "Mattes")'], 3, ["Metric", '"LNCC"', '"MutualInformation"', 'not "Mattes"']),
        (['(Metric "NCC" "MSE")'], 3, ["Metric takes one value, got 2"]),
        (["(FixedModality PET)"], 3, ["FixedModality", '"CT" or "MRI"']),
        (["(InstanceOptimizationIterations -1)"], 3, ["InstanceOptimizationIterations", ">= 0"]),
        (
            ["(InstanceOptimizationIterations 2.5)"],
            3,
            ["InstanceOptimizationIterations", "integers"],
        ),
        (["(InstanceOptimization Latent)"], 3, ["InstanceOptimization", '"Fields" or "Weights"']),
        (["(MaximumNumberOfIterations 100 0)"], 3, ["MaximumNumberOfIterations", ">= 1"]),
        (["(ImagePyramidSchedule 4 0.5)"], 3, ["ImagePyramidSchedule", ">= 1"]),
        (["(ImagePyramidSchedule 4 two)"], 3, ["ImagePyramidSchedule", "numbers"]),
        (["(LearningRate 0)"], 3, ["LearningRate", "> 0"]),
        (["(LearningRate 0.1 0.2)"], 3, ["LearningRate takes one value, got 2"]),
        (["(Device gpu)"], 3, ["Device", '"cpu", "cuda" or "cuda:N"']),
        (["(Transform BSpline)"], 3, ["Transform", '"Velocity" or "Displacement"']),
        (["(Symmetric yes)"], 3, ["Symmetric", '"true" or "false"']),
        (['(Weights "a" "b")'], 3, ["Weights takes one value"]),
        (["(Regularization Diffusion)"], 3, ["Regularization without RegularizationWeight"]),
        (["(RegularizationWeight 0.1)"], 3, ["RegularizationWeight without Regularization"]),
        (
            ["(Regularization Diffusion GradICON)", "(RegularizationWeight 0.1)"],
            4,
            ["RegularizationWeight has 1 value for 2 Regularization names (line 3)"],
        ),
        (
            ["(Regularization Diffusion Elastic)", "(RegularizationWeight 0.1 1)"],
            3,
            ["Regularization", '"BendingEnergy"', 'not "Elastic"'],
        ),
        (
            ["(Regularization Diffusion diffusion)", "(RegularizationWeight 0.1 1)"],
            3,
            ["Regularization names a regularizer twice"],
        ),
        (
            ["(Regularization Diffusion)", "(RegularizationWeight -1)"],
            4,
            ["RegularizationWeight", ">= 0"],
        ),
        (
            ["(ImagePyramidSchedule 4 2 1)", "(MaximumNumberOfIterations 10 10)"],
            4,
            [
                "MaximumNumberOfIterations has 2 values",
                "ImagePyramidSchedule (line 3) has 3 levels",
            ],
        ),
    ],
)
def test_step_errors_name_the_line_and_the_key(lines, line, fragments):
    with raises_at("my/step.txt", line, *fragments):
        step_options(parse_parameter_text(step_text(*lines), "my/step.txt"), METHODS)


def test_step_errors_about_the_model():
    unknown = '(Registration "DeepRegistration")\n\n(Model "unigradicn")\n'
    with raises_at(
        "s.txt", 3, 'unknown Model "unigradicn"', '"affine", "deformable", "unigradicon"'
    ):
        step_options(parse_parameter_text(unknown, "s.txt"), METHODS)
    missing = '// no model\n(Registration "DeepRegistration")\n(Metric NCC)\n'
    with raises_at("s.txt", 2, "names no method", "(Model"):
        step_options(parse_parameter_text(missing, "s.txt"), METHODS)


def test_only_our_steps_have_step_options():
    with pytest.raises(ParameterFileError, match=r"^b\.txt:10: not an itkdeepreg step"):
        step_options(parse_parameter_text(ELASTIX_BSPLINE, "b.txt"), METHODS)
    assert ParameterMap(values={"Registration": ("DeepRegistration",)}).is_ours
    with pytest.raises(
        ParameterFileError, match=r"^c\.txt: not an itkdeepreg step: no \(Registration"
    ):
        step_options(parse_parameter_text('(Model "affine")\n', "c.txt"), METHODS)


def test_step_parameters_round_trip_through_a_file(tmp_path):
    options = {
        "fixed_modality": "ct",
        "moving_modality": "mri",
        "io_iterations": 50,
        "io_kind": "weights",
        "similarity": "mutual_information",
        "weights": str(tmp_path / "w.trch"),
        "device": "cuda:0",
        "iterations": (100, 50, 25),
        "levels": (4, 2, 1.5),
        "parameterization": "displacement",
        "symmetric": False,
        "regularization": {"bending_energy": 0.5, "gradicon": 2},
        "learning_rate": 2e-5,
    }
    entries = step_parameters("unigradicon", **options, progress=None)
    assert entries["Registration"] == ("DeepRegistration",)
    assert entries["Model"] == ("unigradicon",)
    assert entries["Metric"] == ("MutualInformation",)
    assert entries["Regularization"] == ("BendingEnergy", "GradICON")
    path = tmp_path / "step.txt"
    write_parameter_file(entries, path)
    step = step_options(read_parameter_file(path), METHODS)
    assert step.method == "unigradicon"
    assert step.options == options
    assert step.path == str(path)
    assert step.lines["method"] == 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"similarity": "dice"}, "similarity='dice'"),
        ({"iterations": (10, 0)}, "iterations"),
        ({"levels": 0.5}, "levels"),
        ({"symmetric": "yes"}, "symmetric"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"io_iterations": 1.5}, "io_iterations"),
        ({"device": "tpu"}, "device"),
        ({"regularization": {"elastic": 1.0}}, "elastic"),
        ({"regularization": {"diffusion": -1.0}}, "diffusion"),
        ({"regularization": {}}, "regularization"),
        ({"smoothing": 2.0}, "no parameter-file key for the option 'smoothing'"),
    ],
)
def test_step_parameters_refuses_what_cannot_be_read_back(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        step_parameters("deformable", **options)


def test_step_parameters_writes_paths_and_devices_as_strings(tmp_path):
    torch = pytest.importorskip("torch")
    entries = step_parameters(
        "deformable", weights=tmp_path / "w.trch", device=torch.device("cuda", 1)
    )
    assert entries["Weights"] == (str(tmp_path / "w.trch"),)
    assert entries["Device"] == ("cuda:1",)
    with pytest.raises(ValueError, match="weights=5: Weights takes a string"):
        step_parameters("deformable", weights=5)


def test_the_metric_and_regularizer_names_are_the_methods_names():
    """The table's metrics and regularizers are those the methods know, all of them, and each
    one goes through a step file and back."""
    from itkdeepreg.methods import SIMILARITIES
    from itkdeepreg.optimize.deformable import REGULARIZERS
    from itkdeepreg.parameter_files import _REGULARIZERS, STEP_KEYS

    assert sorted(STEP_KEYS["Metric"].rule.values()) == sorted(SIMILARITIES)
    assert sorted(_REGULARIZERS.values()) == sorted(REGULARIZERS)
    for similarity in SIMILARITIES:
        entries = step_parameters("deformable", similarity=similarity)
        step = step_options(parse_parameter_text(parameter_text(entries)), METHODS)
        assert step.options == {"similarity": similarity}
    regularization = {name: float(weight) for weight, name in enumerate(REGULARIZERS)}
    entries = step_parameters("deformable", regularization=regularization)
    assert "ICON" in entries["Regularization"]
    step = step_options(parse_parameter_text(parameter_text(entries)), METHODS)
    assert step.options == {"regularization": regularization}


def test_icon_is_a_regularizer():
    step = step_options(
        parse_parameter_text(
            step_text("(Regularization icon GradICON)", "(RegularizationWeight 1 2)")
        ),
        METHODS,
    )
    assert step.options == {"regularization": {"icon": 1.0, "gradicon": 2.0}}


def test_parameter_text_is_what_write_writes(tmp_path):
    entries = step_parameters("deformable", similarity="ncc", iterations=(5,), levels=(1,))
    write_parameter_file(entries, tmp_path / "s.txt")
    assert (tmp_path / "s.txt").read_text() == parameter_text(entries)
    assert parameter_text(entries).splitlines() == [
        '(Registration "DeepRegistration")',
        '(Model "deformable")',
        '(Metric "NCC")',
        "(MaximumNumberOfIterations 5)",
        "(ImagePyramidSchedule 1)",
    ]


def test_itk_elastix_reads_what_we_write_and_we_read_what_it_writes(tmp_path):
    itk = pytest.importorskip("itk")
    default = itk.ParameterObject.New()
    default.AddParameterMap(default.GetDefaultParameterMap("bspline"))
    default.WriteParameterFile(str(tmp_path / "bspline.txt"))
    ours = read_parameter_file(tmp_path / "bspline.txt")
    assert not ours.is_ours
    assert ours.as_elastix() == {k: list(v) for k, v in dict(default.GetParameterMap(0)).items()}

    entries = step_parameters(
        "deformable", similarity="lncc", symmetric=True, regularization={"gradicon": 1.5}
    )
    write_parameter_file(entries, tmp_path / "step.txt")
    read = itk.ParameterObject.New()
    read.ReadParameterFile(str(tmp_path / "step.txt"))
    expected = read_parameter_file(tmp_path / "step.txt").as_elastix()
    assert {k: list(v) for k, v in dict(read.GetParameterMap(0)).items()} == expected


def test_a_step_runs_the_method_for_two_arbitrary_images_across_contrasts():
    from itkdeepreg.methods import check_options, method_names

    text = '(Registration "DeepRegistration")\n(Model "affine-deformable")\n(Multimodal "true")\n'
    step = step_options(parse_parameter_text(text), method_names())
    assert step.method == "affine-deformable" and step.options == {"multimodal": True}
    check_options(step.method, step.options)  # the method takes what the step says
