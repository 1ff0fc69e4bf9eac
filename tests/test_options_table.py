"""One table of options (issue 23): the ITK face's setters, the register flags and the
parameter-file keys all come from itkdeepreg.options, and read the same text the same way."""

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from itkdeepreg import options as table
from itkdeepreg.cli import register
from itkdeepreg.cli._base import Parser, UsageError
from itkdeepreg.parameter_files import (
    STEP_KEYS,
    parameter_text,
    parse_parameter_text,
    step_options,
    step_parameters,
)
from itkdeepreg.registration import DeepRegistrationMethod

DOCS = Path(__file__).parents[1] / "docs"
METHODS = ["deformable", "unigradicon"]

# a value of every option of the table (what a test of the table sets)
VALUES = {
    "fixed_modality": "ct",
    "moving_modality": "mri",
    "similarity": "mutual_information",
    "io_iterations": 7,
    "io_kind": "weights",
    "weights": "some/weights.trch",
    "device": "cuda:1",
    "iterations": (30, 20),
    "levels": (4, 1.5),
    "parameterization": "displacement",
    "symmetric": True,
    "multimodal": False,
    "learning_rate": 0.125,
    "ct_window": (-500.0, 1500.0),
    "quantile_range": (0.01, 0.95),
    "input_masking": True,
    "loss_masking": True,
    "dice_weight": 0.5,
    "intensity_conservation": True,
}

# text as a user writes it, and the option value each face must read from it
TEXTS = [
    ("Metric", "squaredlncc", "squared_lncc"),
    ("Metric", "LNCC", "lncc"),
    ("Metric", "Squared_LNCC", "squared_lncc"),
    ("Metric", "MutualInformation", "mutual_information"),
    ("Metric", "lncc2", "squared_lncc"),  # unigradicon-register's --io_sim name
    ("FixedModality", "CT", "ct"),
    ("MovingModality", "mri", "mri"),
    ("InstanceOptimizationIterations", "50", 50),
    ("InstanceOptimizationIterations", "None", None),  # published: the method's default
    ("InstanceOptimization", "Weights", "weights"),
    ("Weights", "w.trch", "w.trch"),
    ("Device", "cuda:1", "cuda:1"),
    ("MaximumNumberOfIterations", "50 25", (50, 25)),
    ("ImagePyramidSchedule", "4 2.5", (4, 2.5)),
    ("Transform", "Velocity", "velocity"),
    ("Symmetric", "true", True),
    ("Multimodal", "False", False),
    ("LearningRate", "2e-5", 2e-5),
    ("CTWindow", "-1000 0", (-1000.0, 0.0)),
    ("QuantileRange", "0 0.99", (0.0, 0.99)),
    ("DiceWeight", "1", 1.0),
]


def parse(*arguments):
    parser = Parser(prog="itkdeepreg")
    register.add_parser(parser.add_subparsers())
    return parser.parse_args(["register", "--fixed", "f", "--moving", "m", *arguments])


def test_the_table_is_whole():
    assert set(VALUES) == set(table.BY_OPTION)  # a value above for every entry
    assert len(table.BY_KEY) == len(table.BY_OPTION) == len(table.OPTIONS)  # no name twice
    for spec in table.OPTIONS:
        assert spec.help, spec.key
        assert all(flag.startswith("--") for flag in spec.flags), spec.key
        # the documented flag first; published aliases (with "_") after it
        assert not spec.flags or "_" not in spec.flags[0], spec.key


@pytest.mark.parametrize("spec", table.OPTIONS, ids=lambda spec: spec.key)
def test_every_entry_has_a_setter_and_getter_that_set_its_option(spec):
    registration = DeepRegistrationMethod()
    value = VALUES[spec.option]
    assert getattr(registration, f"Get{spec.accessor_name}")() is None  # the method's default
    getattr(registration, f"Set{spec.accessor_name}")(value)
    assert getattr(registration, f"Get{spec.accessor_name}")() == value
    assert registration.GetMethodOptions() == {spec.option: value}
    # a keyword of New calls the setter
    keyword = "".join("_" + c.lower() if c.isupper() else c for c in spec.accessor_name)[1:]
    assert DeepRegistrationMethod.New(**{keyword: value}).GetMethodOptions() == {spec.option: value}
    getattr(registration, f"Set{spec.accessor_name}")(None)  # back to the method's default
    assert registration.GetMethodOptions() == {}


def test_transform_is_set_as_parameterization_and_get_transform_is_the_result():
    registration = DeepRegistrationMethod()
    registration.SetParameterization("Displacement")
    assert registration.GetParameterization() == "displacement"
    assert not hasattr(registration, "SetTransform")
    with pytest.raises(RuntimeError, match="Update"):  # the result, not the option
        registration.GetTransform()


@pytest.mark.parametrize("spec", table.OPTIONS, ids=lambda spec: spec.key)
def test_every_flag_sets_its_option_and_the_others_are_options(spec):
    value = VALUES[spec.option]
    if not spec.flags:  # --option KEY=VALUE sets it, for a method that takes it
        from itkdeepreg.methods import method_names, method_options

        method = next(m for m in method_names() if spec.option in (method_options(m) or ()))
        args = parse("--option", f"{spec.option}={value!r}")
        assert register.register_options(args, method) == {spec.option: value}
        return
    text = " ".join(map(str, value)) if spec.many else str(value)
    if spec.kind == "bool":  # a switch: given, true
        text = ""
    for flag in spec.flags:  # the documented flag and the published one alike
        args = parse(flag, *text.split())
        assert register.register_options(args, "unigradicon") == {spec.option: value}


def test_the_flags_are_those_of_the_table():
    flags = {flag for spec in table.OPTIONS for flag in spec.flags}
    assert flags == {
        "--fixed-modality", "--fixed_modality", "--moving-modality", "--moving_modality",
        "--metric", "--io_sim", "--io-iterations", "--io_iterations", "--io-kind",
        "--weights", "--network_weights", "--device", "--learning-rate", "--io_lr",
        "--ct-window", "--ct_window", "--quantile-range", "--quantile_range",
        "--input-masking", "--input_masking", "--loss-masking", "--loss_function_masking",
        "--dice-weight", "--dice_loss_weight", "--intensity-conservation",
        "--intensity_conservation_loss",
    }  # fmt: skip
    args = parse("--option", "iterations=(5,5)", "--option", "symmetric=True")
    assert register.register_options(args, "deformable") == {
        "iterations": (5, 5),
        "symmetric": True,
    }
    with pytest.raises(UsageError, match="use --metric"):
        register.register_options(parse("--option", "similarity=ncc"), "deformable")


def test_a_flag_of_several_values_reads_each_one(monkeypatch):
    """A flag of any number of values reads them all (one of two: test_published_flags)."""
    iterations = table.BY_KEY["MaximumNumberOfIterations"]
    with_flag = dataclasses.replace(iterations, flags=("--iterations",), metavar="N")
    monkeypatch.setattr(register, "OPTIONS", (*table.OPTIONS, with_flag))
    args = parse("--iterations", "30", "20")
    assert register.register_options(args, "deformable") == {"iterations": (30, 20)}
    with pytest.raises(UsageError, match=re.escape("--iterations: takes integers >= 1, not 0")):
        parse("--iterations", "30", "0")


@pytest.mark.parametrize("spec", table.OPTIONS, ids=lambda spec: spec.key)
def test_every_key_round_trips_through_a_step_file(spec):
    value = VALUES[spec.option]
    entries = step_parameters("unigradicon", **{spec.option: value})
    assert set(entries) == {"Registration", "Model", spec.key}
    step = step_options(parse_parameter_text(parameter_text(entries)), METHODS)
    assert step.options == {spec.option: value}
    assert STEP_KEYS[spec.key] is spec


@pytest.mark.parametrize("key, text, expected", TEXTS, ids=lambda v: str(v))
def test_the_three_faces_read_text_alike(key, text, expected):
    spec = table.BY_KEY[key]
    # a parameter file
    step = step_options(
        parse_parameter_text(
            f'(Registration "DeepRegistration")\n(Model "unigradicon")\n({key} {text})\n'
        ),
        METHODS,
    )
    from_file = step.options.get(spec.option)
    # a setter
    registration = DeepRegistrationMethod()
    getattr(registration, f"Set{spec.accessor_name}")(text)
    from_setter = getattr(registration, f"Get{spec.accessor_name}")()
    from_options = DeepRegistrationMethod.New(method_options={spec.option: text})
    assert from_file == from_setter == from_options.GetMethodOptions().get(spec.option)
    assert from_file == expected and type(from_file) is type(expected)
    # a flag, where the table gives one
    for flag in spec.flags:
        args = parse(flag, *text.split())
        from_flag = register.register_options(args, "unigradicon").get(spec.option)
        assert from_flag == expected and type(from_flag) is type(expected)


@pytest.mark.parametrize(
    "key, text",
    [("Metric", "Lnc"), ("FixedModality", "PET"), ("Device", "gpu"), ("InstanceOptimization", "w")],
)
def test_a_bad_value_is_one_message_in_the_file_and_on_the_command_line(key, text):
    spec = table.BY_KEY[key]
    with pytest.raises(table.InvalidValue) as refused:
        table.read_value(spec, text)
    message = str(refused.value)
    assert message.startswith("takes ") and message.endswith(f'not "{text}"')
    with pytest.raises(ValueError, match=re.escape(f"<text>:3: {key} {message}")):
        step_options(
            parse_parameter_text(
                f'(Registration "DeepRegistration")\n(Model "unigradicon")\n({key} "{text}")\n'
            ),
            METHODS,
        )
    flags = "/".join(spec.flags)
    with pytest.raises(UsageError, match=re.escape(f"register: argument {flags}: {message}")):
        parse(spec.flags[0], text)
    # the setter keeps text it cannot read, for the method's check to name at Update
    registration = DeepRegistrationMethod()
    getattr(registration, f"Set{spec.accessor_name}")(text)
    assert registration.GetMethodOptions() == {spec.option: text}


def test_text_the_table_does_not_read_is_left_to_the_method():
    """nephi's similarities are not a parameter file's; a function is not text."""
    registration = DeepRegistrationMethod.New(method="nephi", metric="patch_ncc")
    assert registration.GetMetric() == "patch_ncc"
    registration.SetMetric(len)
    assert registration.GetMetric() is len


def test_the_table_and_the_command_line_import_without_torch_or_itk():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        sys.modules["itk"] = None
        from itkdeepreg import options, parameter_files
        from itkdeepreg.cli import register
        from itkdeepreg.cli._base import Parser
        parser = Parser(prog="itkdeepreg")
        register.add_parser(parser.add_subparsers())
        args = parser.parse_args(["register", "--fixed", "f", "--moving", "m", "--io_sim",
                                  "squaredlncc", "--io_iterations", "None"])
        assert (args.metric, args.io_iterations) == ("squared_lncc", None), args
        assert parameter_files.STEP_KEYS["Metric"] is options.BY_KEY["Metric"]
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_docs_list_every_entry_of_the_table():
    itk_face = (DOCS / "itk_face.md").read_text()
    parameter_files = (DOCS / "parameter_files.md").read_text()
    command_line = (DOCS / "command_line.md").read_text()
    for spec in table.OPTIONS:
        assert f"`Set{spec.accessor_name}`" in itk_face, spec.key
        assert f"`{spec.key}`" in parameter_files, spec.key
        assert f"`{spec.option}`" in parameter_files, spec.key
        for flag in spec.flags:
            assert f"`{flag}" in command_line, flag
