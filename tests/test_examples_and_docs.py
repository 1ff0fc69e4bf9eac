"""The examples run, the documentation builds without warnings, and CI runs the README's lines."""

import ast
import html as html_lib
import re
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_example_writes_exact_exports(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "itk_round_trip.py"))
    worst = example["main"](str(tmp_path))
    assert worst < 1e-4
    assert {p.name for p in tmp_path.iterdir()} == {
        "transform.h5",
        "warp.nii.gz",
        "warped_by_itk.nii.gz",
    }
    assert "compact (transform.h5)" in capsys.readouterr().out


def test_geometry_example_resamples_onto_the_model_grid():
    example = runpy.run_path(str(ROOT / "examples" / "geometry_and_images.py"))
    model_image = example["main"]()
    assert tuple(model_image.GetLargestPossibleRegion().GetSize()) == (175, 175, 175)
    assert np.asarray(model_image).max() > 50  # the brain is there


def test_transform_values_example_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "transform_values.py"))["main"]()
    assert "inverse o transform is the identity" in capsys.readouterr().out


def test_losses_example_prints_every_loss(capsys):
    runpy.run_path(str(ROOT / "examples" / "losses.py"))["main"]()
    out = capsys.readouterr().out
    assert "MIND-SSC" in out and "bending energy" in out


def test_unet_example_fits_a_pair():
    before, after = runpy.run_path(str(ROOT / "examples" / "gradicon_unet.py"))["main"]()
    assert after < 0.2 * before


def test_unigradicon_architecture_example_runs_the_tree_end_to_end():
    moved = runpy.run_path(str(ROOT / "examples" / "unigradicon_architecture.py"))["main"]()
    assert moved == 0.0  # untrained: zero-initialised last layers give the identity


def test_instance_optimization_example_improves_on_the_network():
    fields, weights = runpy.run_path(str(ROOT / "examples" / "instance_optimization.py"))["main"]()
    assert fields.losses[-1] < fields.losses[0] and weights.losses[-1] < weights.losses[0]


def test_training_example_trains_registers_and_finetunes(tmp_path):
    example = runpy.run_path(str(ROOT / "examples" / "training.py"))
    warped, transform, tuned = example["main"](str(tmp_path))
    assert np.isfinite(np.asarray(warped)).all()
    assert {"config.toml", "weights.pt", "log.csv"} <= {p.name for p in tuned.iterdir()}


def test_registration_by_optimization_example_registers_and_exports():
    example = runpy.run_path(str(ROOT / "examples" / "registration_by_optimization.py"))
    before, after, itk_difference = example["main"]()
    assert after["error"] < 0.5 * before["error"] and after["dice"] > before["dice"] + 0.05
    assert after["folds"] == 0 and itk_difference < 1e-4


def test_two_arbitrary_images_example_registers_across_pose_and_contrast():
    example = runpy.run_path(str(ROOT / "examples" / "two_arbitrary_images.py"))
    for before, after in example["main"]().values():
        assert after["error"] < 0.3 * before["error"] and after["dice"] > before["dice"] + 0.1
        assert after["folds"] == 0


def test_itk_face_example_registers_the_itk_way(tmp_path):
    example = runpy.run_path(str(ROOT / "examples" / "itk_face.py"))
    before, after, same, itk_difference = example["main"](str(tmp_path))
    assert same and itk_difference < 1e-4
    assert after["dice"] > before["dice"] + 0.05
    assert {p.name for p in tmp_path.iterdir()} == {"transform.h5", "inverse.h5"}


def test_pipeline_example_mixes_elastix_and_our_parameter_files(tmp_path):
    before, after = runpy.run_path(str(ROOT / "examples" / "pipeline.py"))["main"](str(tmp_path))
    assert after > before + 0.3
    assert {p.name for p in tmp_path.iterdir()} == {
        "affine.txt",
        "deep.txt",
        "transform.h5",
        "transform.txt",
        "transform_field.nii.gz",
    }


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """The documentation, built once for the tests below: the process and its HTML folder.

    The build runs the library to make its pictures (docs/_ext/pictures.py), unless
    docs/_build/.pictures holds them for the same library, examples and maker.
    """
    html = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(html),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result, html


def test_documentation_builds_without_warnings(built_docs):
    result, html = built_docs
    assert result.returncode == 0, result.stderr
    assert "to_itk_transform" in (html / "api" / "interop.html").read_text()


def _pictures(page: Path) -> list[Path]:
    """The files that a page's img tags point to (relative to the page)."""
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page.read_text())
    return [(page.parent / source).resolve() for source in sources]


def test_gallery_and_getting_started_show_pictures_made_by_the_build(built_docs):
    result, html = built_docs
    assert result.returncode == 0, result.stderr
    for page, names in (("gallery", ["itk_face"]), ("getting_started", ["demo-2d"])):
        pictures = _pictures(html / f"{page}.html")
        assert sorted(p.name.rsplit("-", 1)[0] for p in pictures) == names, pictures
        for picture in pictures:
            assert picture.is_file() and picture.is_relative_to(html), picture
            assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
            assert picture.stat().st_size > 20_000, picture  # a figure, not a placeholder


def test_gallery_lists_every_example_with_its_docstring(built_docs):
    _, html = built_docs
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", (html / "gallery.html").read_text()))
    text = text.translate(str.maketrans({"\u2019": "'", "\u201c": '"', "\u201d": '"'}))
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert f"examples/{example.name}" in text, example.name
        summary = ast.get_docstring(ast.parse(example.read_text())).splitlines()[0]
        assert summary.rstrip(".").replace("``", "") in text, summary


def test_api_reference_opens_with_the_itk_face_and_shows_types(built_docs):
    _, html = built_docs
    api = (html / "api.html").read_text()
    pages = [link for link in re.findall(r'href="(api/[^"#]+)"', api)]
    assert pages[0] == "api/itk_face.html", pages
    face = (html / "api" / "itk_face.html").read_text()
    for name in (
        "registration.DeepRegistrationMethod",
        "registration.deep_registration_method",
        "interop.inverse_consistent.InverseConsistentTransform",
    ):
        assert f'id="itkdeepreg.{name}"' in face, name
    # annotations appear in signatures: a parameter with its type, a return type
    assert re.search(r'class="sig-param">.*?<span class="pre">:</span>', face)
    assert 'class="sig-return-typehint"' in face


def test_getting_started_comes_first_and_every_page_is_reachable():
    def toctree(page):
        block = (ROOT / "docs" / page).read_text().split("```{toctree}")[1].split("```")[0]
        return [line.strip() for line in block.splitlines() if line.strip()[:1] not in ("", ":")]

    entries = toctree("index.md")
    assert entries[:2] == ["getting_started", "gallery"], entries
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}
    assert pages <= set(entries), pages - set(entries)
    api = toctree("api.md")
    assert api[0] == "api/itk_face", api
    assert {f"api/{p.stem}" for p in (ROOT / "docs" / "api").glob("*.md")} == set(api)


def test_the_itk_face_methods_table_names_every_method():
    from itkdeepreg.methods import method_names

    page = (ROOT / "docs" / "itk_face.md").read_text()
    table = page.split("## Methods")[1].split("\n\n| name |")[1].split("\n\n")[0]
    named = set(
        re.findall(r"`([^`]+)`", "\n".join(row.split("|")[1] for row in table.splitlines()[2:]))
    )
    assert set(method_names()) <= named, set(method_names()) - named


def test_docs_state_the_python_version_that_pyproject_requires():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.fullmatch(r">=\s*(\d+\.\d+)", requires.strip()).group(1)
    for page in ("installation.md", "getting_started.md"):
        text = (ROOT / "docs" / page).read_text()
        assert f"Python {version} or newer" in text, page
        stated = set(re.findall(r"Python (3\.\d+)", text))
        assert stated == {version}, (page, stated)


def test_no_reference_to_design_notes_outside_the_repository():
    design = "DESIGN" + ".md"  # spelled apart, so that this file does not match itself
    folders = ("itkdeepreg", "wrapping", "examples", "tests", "docs", "benchmarks", "tools")
    files = [ROOT / "README.md"] + [
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".md", ".toml", ".txt") and "_build" not in path.parts
    ]
    assert [str(path) for path in files if design in path.read_text(errors="replace")] == []


def test_ci_runs_exactly_the_readme_quick_start():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- quick-start -->")[1].split("<!-- /quick-start -->")[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("```")]
    assert len(commands) == 2 and commands[1].startswith("python -m pytest")
    assert "quick-start" in (ROOT / ".ci" / "run").read_text()


def test_bad_input_example_refuses_each_attempt_in_one_line(tmp_path):
    outcomes = runpy.run_path(str(ROOT / "examples" / "bad_input.py"))["main"](str(tmp_path))
    for code, err in outcomes.values():
        assert code in (1, 2) and err.startswith("itkdeepreg: error: ") and "\n" not in err
