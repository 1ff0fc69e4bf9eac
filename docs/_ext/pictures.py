"""Pictures made while the documentation builds, and the gallery of examples/*.py.

Pictures are made by running the library, never drawn by hand:

- ``demo-2d``: the ``figure.png`` that ``itkdeepreg demo --dimension 2`` writes;
- ``itk_face``: the registration of ``examples/itk_face.py``, drawn with
  :func:`itkdeepreg.figure.write_registration_figure` from the transform files the example
  writes (checked against the score the example reports).

They are made in a separate process (``python docs/_ext/pictures.py NAME PNG``), started when
the build starts, while Sphinx reads the other pages, and kept in ``docs/_build/.pictures``
under a key: a hash of the installed library, the example and this file. A build whose
inputs have not changed reuses them; any change to the library makes them again.

In the pages, ``{generated-picture} NAME`` is an image of such a picture, and the line
``<!-- examples -->`` of ``gallery.md`` becomes one section per example: its docstring, the
page that shows it in full (or its source, where none does) and its picture, if it has one.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
EXAMPLES = ROOT / "examples"
CACHE = DOCS / "_build" / ".pictures"
GALLERY_MARKER = "<!-- examples -->"

# the gallery's order: what a new user does first comes first; examples not listed follow
ORDER = (
    "itk_face",
    "two_arbitrary_images",
    "registration_by_optimization",
    "pipeline",
    "itk_round_trip",
    "bad_input",
    "geometry_and_images",
    "transform_values",
    "losses",
    "gradicon_unet",
    "unigradicon_architecture",
    "instance_optimization",
    "training",
    "constricon",
    "carl",
    "nephi",
)


# ----------------------------------------------------------------------------- the makers


def _demo_2d(png: Path) -> None:
    """``itkdeepreg demo --dimension 2``: its figure.png, as the command writes it."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "demo"
        command = [sys.executable, "-m", "itkdeepreg.cli", "demo", "--dimension", "2"]
        subprocess.run([*command, "--quiet", "--out", str(out)], check=True, stdout=sys.stderr)
        shutil.copyfile(out / "figure.png", png)


def _itk_face(png: Path) -> None:
    """examples/itk_face.py: its transform.h5 and inverse.h5, on the pair it registers."""
    import contextlib
    import runpy

    from itkdeepreg.data.brain_pairs import brain_pair
    from itkdeepreg.figure import write_registration_figure
    from itkdeepreg.interop import InverseConsistentTransform

    example = runpy.run_path(str(EXAMPLES / "itk_face.py"))
    with tempfile.TemporaryDirectory() as folder:
        with contextlib.redirect_stdout(sys.stderr):
            _, after, _, _ = example["main"](folder)
        pair = brain_pair(seed=0, dimension=2)  # the example's pair
        fixed, moving = pair.itk_images()
        transform = InverseConsistentTransform.Read(
            f"{folder}/transform.h5", fixed, moving, f"{folder}/inverse.h5"
        )
    dice = pair.score(transform.forward)["dice"]
    if abs(dice - after["dice"]) > 1e-3:
        raise RuntimeError(
            f"examples/itk_face.py reports Dice {after['dice']:.4f}, its transform.h5 on "
            f"brain_pair(seed=0, dimension=2) gives {dice:.4f}: has the example's pair changed?"
        )
    write_registration_figure(
        png,
        pair.fixed,
        pair.moving,
        transform.forward,
        title='examples/itk_face.py: method "deformable", metric "lncc"',
        spacing=tuple(reversed(pair.fixed_geometry.spacing.tolist())),
    )


MAKERS = {"demo-2d": _demo_2d, "itk_face": _itk_face}
# the example each picture comes from (it joins the key); the demo comes from the library
SOURCES = {"demo-2d": None, "itk_face": EXAMPLES / "itk_face.py"}


# ---------------------------------------------------------------------- keys and the cache


def _library_digest() -> str:
    """A hash of the installed library's files (not its caches)."""
    package = Path(importlib.util.find_spec("itkdeepreg").origin).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def keys() -> dict[str, str]:
    """Each picture's key: the library, its example (if any) and this file."""
    shared = hashlib.sha256()
    shared.update(_library_digest().encode())
    shared.update(Path(__file__).read_bytes())
    result = {}
    for name, source in SOURCES.items():
        digest = shared.copy()
        digest.update(name.encode())
        if source is not None:
            digest.update(source.read_bytes())
        result[name] = digest.hexdigest()[:16]
    return result


def cached(name: str, key: str) -> Path:
    return CACHE / f"{name}-{key}.png"


def make(name: str, png: Path) -> None:
    """Make one picture into ``png``, whole or not at all."""
    png.parent.mkdir(parents=True, exist_ok=True)
    partial = png.with_name(f".{png.name}.{os.getpid()}.partial.png")
    try:
        MAKERS[name](partial)
        os.replace(partial, png)
    finally:
        partial.unlink(missing_ok=True)
    for stale in png.parent.glob(f"{name}-*.png"):
        if stale != png:
            stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the gallery's text


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _shown_on(name: str) -> list[str]:
    """The pages that include examples/NAME.py in full."""
    include = re.compile(r"```\{literalinclude\}\s+\.\./examples/" + re.escape(name) + r"\.py\s")
    return sorted(
        page.stem
        for page in DOCS.glob("*.md")
        if page.name != "gallery.md" and include.search(page.read_text())
    )


def examples() -> list[Path]:
    present = {path.stem: path for path in EXAMPLES.glob("*.py")}
    ordered = [present.pop(name) for name in ORDER if name in present]
    return ordered + sorted(present.values())


def gallery_markdown() -> str:
    """One section per example: title, page or source, picture, docstring, how to run it."""
    parts = []
    for path in examples():
        name = path.stem
        lines = _docstring(path).splitlines()
        title = lines[0].rstrip(".") if lines else name
        usage = [line.strip() for line in lines[1:] if line.strip().startswith("python ")]
        body = "\n".join(
            line for line in lines[1:] if not line.strip().startswith("python ")
        ).strip()
        pages = _shown_on(name)
        section = [f"({name}-example)=", f"## {title}", ""]
        where = ", ".join(f"{{doc}}`{page}`" for page in pages)
        section.append(f"`examples/{name}.py`" + (f", shown in full in {where}." if pages else "."))
        section.append("")
        if name in MAKERS:
            section += [f"```{{generated-picture}} {name}", f":alt: {title}", "```", ""]
        if body:
            section += [body, ""]
        section += ["```sh", *(usage or [f"python examples/{name}.py"]), "```", ""]
        if not pages:
            section += [
                f"```{{literalinclude}} ../examples/{name}.py",
                ":language: python",
                "```",
                "",
            ]
        parts.append("\n".join(section))
    return "\n".join(parts)


# ------------------------------------------------------------------------- the extension


def setup(app):
    from docutils.parsers.rst.directives.images import Image
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    state = {}

    def start(app):
        """Start making the pictures the cache lacks, in one process beside the build."""
        state["keys"] = keys()
        missing = [n for n, k in state["keys"].items() if not cached(n, k).exists()]
        state["process"] = None
        if missing:
            logger.info(f"making pictures {', '.join(missing)} (docs/_ext/pictures.py)")
            arguments = [a for n in missing for a in (n, str(cached(n, state["keys"][n])))]
            state["log"] = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by wait)
            state["process"] = subprocess.Popen(
                [sys.executable, __file__, *arguments],
                stdout=state["log"],
                stderr=subprocess.STDOUT,
                text=True,
            )

    def wait():
        process = state.pop("process", None)
        if process is not None:
            process.wait()
            log = state.pop("log")
            log.seek(0)
            if process.returncode != 0:
                logger.warning(
                    "docs/_ext/pictures.py failed; its output ends:\n" + log.read()[-3000:]
                )
            log.close()

    class GeneratedPicture(Image):
        """An image of a picture made by the build: ``{generated-picture} NAME``."""

        def run(self):
            name = self.arguments[0]
            if name not in MAKERS:
                raise self.error(f"no picture called {name!r}: {', '.join(MAKERS)}")
            wait()
            env = self.state.document.settings.env
            page = Path(env.doc2path(env.docname)).parent
            self.arguments = [os.path.relpath(cached(name, state["keys"][name]), page)]
            return super().run()

    def source_read(app, docname, source):
        if docname == "gallery":
            for path in examples():  # a changed example rebuilds the gallery
                app.env.note_dependency(str(path))
            if GALLERY_MARKER not in source[0]:
                logger.warning(f"gallery.md lacks the line {GALLERY_MARKER}")
            source[0] = source[0].replace(GALLERY_MARKER, gallery_markdown())

    app.connect("builder-inited", start)
    app.connect("source-read", source_read)
    app.connect("env-updated", lambda app, env: wait())
    # the pages with pictures are read again each build: a picture's file name has its key
    app.connect("env-get-outdated", lambda *args: ["gallery", "getting_started"])
    app.add_directive("generated-picture", GeneratedPicture)
    return {"parallel_read_safe": False, "parallel_write_safe": True}


if __name__ == "__main__":  # python docs/_ext/pictures.py NAME PNG [NAME PNG ...]
    pairs = sys.argv[1:]
    for name, png in zip(pairs[::2], pairs[1::2]):
        make(name, Path(png))
