"""Pipelines: registration steps one after the other, each started from the result so far.

A step is an elastix registration (parameter maps, run by itk-elastix), an ANTs registration
(antspyx), an ITK transform file, or a method of :mod:`itkdeepreg.methods` (a network, with
or without instance optimization, or registration by optimization). The result is one
:class:`~itkdeepreg.interop.InverseConsistentTransform` from fixed to moving points.

Every step maps the fixed image further into the moving one: a method or a transform file
registers the fixed image to the moving image as the steps before carried it, so its map is
applied to fixed points first (``result = so_far @ step``); elastix and ANTs take the result so
far as their initial transform and return the whole map. A pipeline can be written as a list
of elastix-style parameter files, theirs and ours mixed (:func:`read_pipeline`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .interop import InverseConsistentTransform
from .interop.classical import ants_registration, elastix_registration
from .interop.inverse_consistent import as_inverse_consistent
from .methods import check_options, method_names, takes_option
from .parameter_files import (
    ParameterMap,
    check_elastix_map,
    read_parameter_file,
    step_key,
    step_options,
)
from .registration import DeepRegistrationMethod


@dataclass
class MethodStep:
    """A method of :mod:`itkdeepreg.methods` by name, with its options."""

    method: object
    options: dict = field(default_factory=dict)


@dataclass
class ElastixStep:
    """elastix with its parameter maps (``dict[str, list[str]]``), run by itk-elastix."""

    parameter_maps: list


@dataclass
class AntsStep:
    """``ants.registration`` with a ``type_of_transform`` and its other keywords."""

    type_of_transform: str = "SyN"
    options: dict = field(default_factory=dict)


@dataclass
class TransformFileStep:
    """An ITK transform file (``.h5``, ``.tfm``, ANTs ``.mat``), fixed to moving points."""

    path: str


def read_pipeline(paths) -> list:
    """The steps of a list of parameter files: ``(Registration "DeepRegistration")`` files
    become method steps, every other file an elastix step. Every file is read and checked,
    down to options a method does not take and keys elastix does not read (errors name the
    file and the line), before anything runs; a file that holds no parameters is refused."""
    steps = []
    for path in paths:
        parameters = read_parameter_file(path)
        if parameters.is_ours:
            step = step_options(parameters, method_names())
            for option in step.options:
                if not takes_option(step.method, option):
                    message = f"the method {step.method} takes no {step_key(option)}"
                    raise step.error(option, message)
            steps.append(MethodStep(step.method, step.options))
        else:
            check_elastix_map(parameters)
            steps.append(ElastixStep([parameters.as_elastix()]))
    return steps


def run_pipeline(
    fixed,
    moving,
    steps,
    initial_transform=None,
    fixed_mask=None,
    moving_mask=None,
    show_progress=True,
    log_directory=None,
):
    """``(warped, transform)``: the moving image registered onto the fixed one by ``steps``
    (step objects, or parameter-file paths read with :func:`read_pipeline`), and the
    :class:`~itkdeepreg.interop.InverseConsistentTransform` of the whole pipeline.

    ``initial_transform``: an ITK transform or an ``InverseConsistentTransform`` the first
    step starts from. The masks are handed to every step. Every step is checked (every file
    read, every elastix map's keys) before the first one runs.

    ``log_directory``: a folder (made if missing) for elastix's log of each elastix step, as
    elastix writes it into its ``-out`` folder: ``elastix.log``, or ``elastix.N.log`` (N the
    step's number, from 1) where the pipeline has several elastix steps.
    """
    # a file becomes its step here (read and checked), so a mixed list is checked whole too
    steps = [s for step in steps for s in (read_pipeline([step]) if _is_path(step) else [step])]
    if not steps:
        raise ValueError("a pipeline needs at least one step")
    _check(steps)
    logs = elastix_logs(steps, log_directory)
    if any(logs):
        os.makedirs(log_directory, exist_ok=True)  # before the first step runs
    current = as_inverse_consistent(initial_transform, fixed, moving)
    for step, log in zip(steps, logs):
        current = _run(step, fixed, moving, current, fixed_mask, moving_mask, show_progress, log)
    return current.Warp(moving), current


def elastix_logs(steps, folder) -> list:
    """Where ``run_pipeline(..., log_directory=folder)`` writes elastix's log of each step:
    ``None`` for a step that is not elastix's, and for every step where ``folder`` is None."""
    count = sum(isinstance(step, ElastixStep) for step in steps)
    return [
        os.path.join(folder, f"elastix.{n}.log" if count > 1 else "elastix.log")
        if folder is not None and isinstance(step, ElastixStep)
        else None
        for n, step in enumerate(steps, start=1)
    ]


def _is_path(step) -> bool:
    return isinstance(step, (str, bytes)) or hasattr(step, "__fspath__")


def _check(steps) -> None:
    """Refuse what is not a step, a method step's option values out of range, and an elastix
    map elastix would not run as written."""
    for number, step in enumerate(steps, start=1):
        if isinstance(step, MethodStep):
            try:
                check_options(step.method, step.options)
            except ValueError as error:
                raise ValueError(f"step {number} ({step.method}): {error}") from None
        elif isinstance(step, ElastixStep):
            maps = step.parameter_maps
            if hasattr(maps, "GetNumberOfParameterMaps"):  # an itk.ParameterObject
                maps = [maps.GetParameterMap(i) for i in range(maps.GetNumberOfParameterMaps())]
            elif hasattr(maps, "keys"):
                maps = [maps]
            for index, keys in enumerate(maps, start=1):
                where = f"step {number} (elastix map {index})"
                check_elastix_map(ParameterMap(dict.fromkeys(keys, ()), path=where))
        elif not isinstance(step, (MethodStep, AntsStep, TransformFileStep)):
            raise TypeError(f"step {number} is not a pipeline step: {step!r}")


def _run(step, fixed, moving, current, fixed_mask, moving_mask, show_progress, log_file=None):
    if isinstance(step, MethodStep):
        registration = DeepRegistrationMethod.New(
            fixed_image=fixed,
            moving_image=moving,
            method=step.method,
            method_options=step.options,
            initial_transform=current,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            show_progress=show_progress,
        )
        registration.Update()
        return registration.GetTransform()
    if isinstance(step, TransformFileStep):
        if current is None:
            return InverseConsistentTransform.Read(step.path, fixed, moving)
        # the file maps the fixed image to the moving image as the steps before carried it,
        # which lies on the fixed grid
        read = InverseConsistentTransform.Read(step.path, fixed, fixed)
        forward, backward = current.forward @ read.forward, read.backward @ current.backward
        return InverseConsistentTransform(forward, backward, fixed, moving)
    initial = None if current is None else current.GetITKTransform()
    masks = {"fixed_mask": fixed_mask, "moving_mask": moving_mask}
    if isinstance(step, ElastixStep):
        whole = elastix_registration(
            fixed, moving, step.parameter_maps, initial, **masks, log_file=log_file
        )
    elif isinstance(step, AntsStep):
        whole = ants_registration(
            fixed, moving, step.type_of_transform, initial, **masks, **step.options
        )
    else:
        raise TypeError(f"not a pipeline step: {step!r}")
    return as_inverse_consistent(whole, fixed, moving)
