"""pyproject.toml lists every package (the list is explicit so that wrapping/ can join it)."""

import tomllib
from pathlib import Path

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
