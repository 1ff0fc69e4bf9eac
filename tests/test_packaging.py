"""pyproject.toml lists every package (the list is explicit so that wrapping/ can join it)."""

import hashlib
import importlib.resources
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_installed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "itkdeepreg").rglob("__init__.py")
    }
    on_disk.add("itkdeepreg.wrapping")
    assert set(setuptools["packages"]) == on_disk
    assert setuptools["package-dir"] == {"itkdeepreg.wrapping": "wrapping"}
    assert (ROOT / "wrapping" / "__init__.py").is_file()


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMPORT_NAMES = {"pillow": "PIL", "scikit-image": "skimage"}  # where the two names differ
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_license_is_the_apache_license_version_2():
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256  # the ASF text, unaltered
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_every_required_dependency_is_imported_by_the_library():
    sources = [
        path.read_text(encoding="utf-8")
        for folder in ("itkdeepreg", "wrapping")
        for path in (ROOT / folder).rglob("*.py")
    ]
    for requirement in PROJECT["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
        module = IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))
        imported = re.compile(rf"^\s*(import|from)\s+{re.escape(module)}\b", re.MULTILINE)
        assert any(imported.search(source) for source in sources), f"{name} is never imported"


def test_the_installed_package_says_it_is_typed():
    """PEP 561: type checkers read the annotations of a package that holds py.typed."""
    assert importlib.resources.files("itkdeepreg").joinpath("py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in package_data["package-data"]["itkdeepreg"]


def test_the_wheel_and_the_sdist_carry_the_license_and_the_marker(tmp_path):
    """What pip installs: built from a copy of the source, as a release would be."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("license-files needs setuptools 77")
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("itkdeepreg", "wrapping"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    build = "import setuptools.build_meta as b, sys; b.build_wheel('..'), b.build_sdist('..')"
    subprocess.run([sys.executable, "-c", build], cwd=source, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("itkdeepreg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata).decode()
        (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert hashlib.sha256(archive.read(licence)).hexdigest() == APACHE_2_SHA256
    assert "itkdeepreg/py.typed" in names
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert "scikit-image" not in metadata
    (sdist,) = tmp_path.glob("itkdeepreg-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "itkdeepreg/py.typed"} <= names
