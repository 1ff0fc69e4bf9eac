"""The ITK face: ``DeepRegistrationMethod`` and ``deep_registration_method``.

The object mirrors ITK and ITKElastix (``New(fixed_image=..., moving_image=...)``,
``SetX`` and ``GetX``, ``Update()``, ``GetOutput()``, ``GetTransform()``); the function is the
one-liner over the same object. Both take ITK images with their geometry and run any
method of :mod:`itkdeepreg.methods` by name: a published network (with or without instance
optimization) or registration by optimization.
"""

from __future__ import annotations

import contextlib

import torch

from .interop import (
    InverseConsistentTransform,
    check_scalar_image,
    from_itk_transform,
    image_to_tensor,
)
from .interop.classical import _check_threads, _itk_threads
from .interop.images import check_same_grid
from .methods import Pair, check_options, run_method, takes_option
from .options import BY_OPTION, OPTIONS, InvalidValue, read_text

DEFAULT_METHOD = "unigradicon"

_INPUTS = (
    "FixedImage",
    "MovingImage",
    "FixedMask",
    "MovingMask",
    "FixedSegmentation",
    "MovingSegmentation",
    "InitialTransform",
)


class DeepRegistrationMethod:
    """Registers a moving image onto a fixed image with a network or by optimization.

    Inputs: ``SetFixedImage``, ``SetMovingImage`` (scalar ``itk.Image``, 2D or 3D, any pixel
    type), ``SetFixedMask``/``SetMovingMask`` (where the similarity counts; a network uses
    masks as ``SetInputMasking`` and ``SetLossMasking`` say),
    ``SetFixedSegmentation``/``SetMovingSegmentation`` (label maps: a network's Dice term,
    ``SetDiceWeight``; the optimization methods multiply the image by them),
    ``SetInitialTransform`` (any ITK transform
    from fixed to moving physical points: an elastix or ANTs affine, a composite).

    The method: ``SetMethod`` (a name of :func:`~itkdeepreg.methods.method_names`, or a
    callable method; ``SetModel`` is the same, for network users), and its options, one setter
    and getter per entry of the table of options (:data:`itkdeepreg.options.OPTIONS`, whose
    keys parameter files and the command's flags share): ``SetFixedModality``/
    ``SetMovingModality`` (``"ct"``, ``"mri"``), ``SetMetric`` (``"lncc"``,
    ``"squared_lncc"``, ``"mind"``, ``"ncc"``, ``"mse"``, ``"mutual_information"``, ``"ngf"``),
    ``SetMultimodal``, ``SetInstanceOptimizationIterations``, ``SetInstanceOptimization``
    (``"fields"`` or ``"weights"``), ``SetWeights`` (a weights file), ``SetCTWindow``,
    ``SetQuantileRange``, ``SetInputMasking``, ``SetLossMasking``, ``SetDiceWeight``,
    ``SetIntensityConservation`` (``unigradicon-register``'s options), ``SetDevice``,
    ``SetMaximumNumberOfIterations``, ``SetImagePyramidSchedule``, ``SetParameterization``
    (the key ``Transform``: ``GetTransform`` is the result), ``SetSymmetric`` and
    ``SetLearningRate``; ``SetMethodOptions`` for any option by keyword. Text is read as a
    parameter file reads it (``"LNCC"`` and ``"SquaredLNCC"`` are ``"lncc"`` and
    ``"squared_lncc"``), and ``None`` leaves the method's default. An option the method does
    not take is refused by ``Update``, by name. ``SetNumberOfThreads``: torch's and ITK's
    thread counts during ``Update`` (restored afterwards; ``None``, the default, leaves them).

    ``Update()`` registers; ``GetOutput()`` is the moving image warped into the fixed
    image's geometry, in the moving image's pixel type; ``GetTransform()`` the
    :class:`~itkdeepreg.interop.InverseConsistentTransform` from fixed to moving points, and
    ``GetInverseTransform()`` its inverse.
    """

    def __init__(self):
        self._inputs = dict.fromkeys(_INPUTS)
        self._method = DEFAULT_METHOD
        self._options = {}
        self._show_progress = True
        self._threads = None
        self._transform = self._output = None

    @classmethod
    def New(cls, *images, **kwargs) -> DeepRegistrationMethod:
        """A new object; each keyword calls its setter: ``fixed_image=`` calls
        ``SetFixedImage``, ``instance_optimization_iterations=`` calls
        ``SetInstanceOptimizationIterations``, and so on. The fixed and the moving image may
        come first, by position, as in ITKElastix's ``ElastixRegistrationMethod.New(fixed,
        moving)``."""
        if len(images) > 2:
            raise TypeError(f"New takes the fixed and the moving image, got {len(images)} images")
        for name, image in zip(("fixed_image", "moving_image"), images):
            if name in kwargs:
                raise TypeError(
                    f"New got the {name.replace('_', ' ')} twice: by position and as {name}="
                )
            kwargs[name] = image
        method = cls()
        for name, value in kwargs.items():
            setter = "Set" + "".join(word.capitalize() for word in name.split("_"))
            if not hasattr(method, setter):  # an acronym: ct_window= calls SetCTWindow
                setter = next((n for n in dir(cls) if n.lower() == setter.lower()), setter)
            if not hasattr(method, setter):
                raise TypeError(f"DeepRegistrationMethod has no {setter} for the keyword {name}")
            getattr(method, setter)(value)
        return method

    def SetMethod(self, method) -> None:
        self._method = method
        self._modified()

    SetModel = SetMethod

    def GetMethod(self):
        return self._method

    GetModel = GetMethod

    def SetMethodOptions(self, options: dict) -> None:
        """Options of the method by keyword, those beyond the table of options
        (:mod:`itkdeepreg.options`: ``smoothing``, ``seed``, ...) and those in it, read as
        their setters read them."""
        for option, value in options.items():
            self._set_option(option, value)

    def _set_option(self, option, value) -> None:
        """The one place an option is set. Text for an option of the table is read as a
        parameter file reads it (``"LNCC"`` and ``"lncc"`` are ``"lncc"``); text it does not
        read stays as given, for the method's own check to name (or take: nephi's
        ``"patch_ncc"``). ``None``, given or read (the published ``"None"``), leaves the
        method's default."""
        spec = BY_OPTION.get(option)
        if spec is not None and isinstance(value, str):
            with contextlib.suppress(InvalidValue):
                value = read_text(spec, value)
        if value is None:
            self._options.pop(option, None)
        else:
            self._options[option] = value
        self._modified()

    def GetMethodOptions(self) -> dict:
        return dict(self._options)

    def SetShowProgress(self, show: bool) -> None:
        self._show_progress = bool(show)

    def SetNumberOfThreads(self, threads: int | None) -> None:
        """torch's and ITK's thread counts while ``Update`` runs (``None``: leave them)."""
        self._threads = _check_threads(threads)

    def GetNumberOfThreads(self) -> int | None:
        return self._threads

    def Update(self) -> None:
        """Register the moving image onto the fixed image."""
        with number_of_threads(self._threads):
            self._update()

    def _update(self) -> None:
        fixed, moving = self._inputs["FixedImage"], self._inputs["MovingImage"]
        if fixed is None or moving is None:
            raise ValueError("set both the fixed and the moving image before Update()")
        check_scalar_image(fixed, "the fixed image")
        check_scalar_image(moving, "the moving image")
        if fixed.GetImageDimension() != moving.GetImageDimension():
            raise ValueError(
                f"a {fixed.GetImageDimension()}D fixed and a {moving.GetImageDimension()}D "
                "moving image"
            )
        options = dict(self._options)
        if takes_option(self._method, "progress"):
            options["progress"] = self._show_progress
        check_options(self._method, options)  # before the images are converted
        fixed_tensor, fixed_geometry = image_to_tensor(fixed)
        moving_tensor, moving_geometry = image_to_tensor(moving)
        extras = {
            f"{side}_{kind}": self._on_grid(f"{side.capitalize()}{kind.capitalize()}", image)
            for side, image in (("moving", moving), ("fixed", fixed))
            for kind in ("mask", "segmentation")
        }
        pair = Pair(moving_tensor, fixed_tensor, moving_geometry, fixed_geometry, **extras)
        initial, initial_inverse = self._initial(fixed_geometry, moving_geometry)
        result = run_method(self._method, pair, initial, initial_inverse, **options)
        forward = result.forward.to(device="cpu")
        backward = result.backward.to(device="cpu")
        self._transform = InverseConsistentTransform(forward, backward, fixed, moving)
        self._output = self._transform.Warp(moving)

    def GetOutput(self):
        """The moving image warped into the fixed image's geometry (after ``Update``)."""
        return self._result(self._output)

    def GetTransform(self) -> InverseConsistentTransform:
        """The map from fixed to moving physical points (after ``Update``)."""
        return self._result(self._transform)

    def GetInverseTransform(self) -> InverseConsistentTransform:
        """The map from moving to fixed physical points (after ``Update``)."""
        return self._result(self._transform).GetInverseTransform()

    def _initial(self, fixed_geometry, moving_geometry):
        """The initial transform as values ``(forward, backward)``; ``(None, None)`` if unset."""
        initial = self._inputs["InitialTransform"]
        if initial is None:
            return None, None
        if isinstance(initial, InverseConsistentTransform):  # a result, with its inverse
            initial = initial.between(fixed_geometry, moving_geometry)
            return initial.forward, initial.backward
        return from_itk_transform(initial, fixed_geometry, moving_geometry), None

    def _on_grid(self, name, image):
        """The input ``name`` (a mask or a segmentation) as a tensor, checked against the
        geometry of its ``image``."""
        extra = self._inputs[name]
        if extra is None:
            return None
        check_same_grid(extra, image, name)
        return image_to_tensor(extra)[0]

    def _result(self, value):
        if value is None:
            raise RuntimeError("call Update() first")
        return value

    def _modified(self):
        self._transform = self._output = None


def _input_accessors(name):
    def setter(self, value):
        self._inputs[name] = value
        self._modified()

    def getter(self):
        return self._inputs[name]

    return setter, getter


def _option_accessors(spec):
    def setter(self, value):
        self._set_option(spec.option, value)

    def getter(self):
        return self._options.get(spec.option)

    setter.__doc__ = f"{spec.help} (the option {spec.option}; None: the method's default)."
    getter.__doc__ = f"The option {spec.option}, or None where the method's default holds."
    return setter, getter


for _name in _INPUTS:
    _setter, _getter = _input_accessors(_name)
    setattr(DeepRegistrationMethod, f"Set{_name}", _setter)
    setattr(DeepRegistrationMethod, f"Get{_name}", _getter)
for _spec in OPTIONS:  # the table of options: one setter and getter per entry
    for _prefix, _accessor in zip(("Set", "Get"), _option_accessors(_spec)):
        _accessor_name = _prefix + _spec.accessor_name
        if hasattr(DeepRegistrationMethod, _accessor_name):  # Transform: GetTransform
            raise TypeError(
                f"the option {_spec.key} would replace {_accessor_name}: give it an accessor"
            )
        setattr(DeepRegistrationMethod, _accessor_name, _accessor)


@contextlib.contextmanager
def number_of_threads(threads):
    """torch's thread count and ITK's global ones set to ``threads`` for the block, then
    restored: a library must not leave its caller's process changed. ``None``: left as they
    are. The one place the API and the command line set threads."""
    threads = _check_threads(threads)
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _itk_threads(threads):
            yield
    finally:
        torch.set_num_threads(before)


def deep_registration_method(fixed, moving, **kwargs):
    """``(warped, transform)``: the moving image registered onto the fixed one, and the
    :class:`~itkdeepreg.interop.InverseConsistentTransform` from fixed to moving points.

    The keywords are those of :meth:`DeepRegistrationMethod.New` (``method=``,
    ``metric=``, ``initial_transform=``, ``instance_optimization_iterations=``, ...).
    """
    registration = DeepRegistrationMethod.New(fixed_image=fixed, moving_image=moving, **kwargs)
    registration.Update()
    return registration.GetOutput(), registration.GetTransform()
