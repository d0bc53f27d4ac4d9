"""Importing what a setting names as ``package.module:attribute`` (plug-in tasks, gate hooks):
every failure is one ``InputError`` naming the setting."""

from __future__ import annotations

import importlib


def import_object(spec: str, setting: str, what: str, shape: str):
    """The object ``spec`` (``package.module:attr.sub``) names; ``what`` (e.g. "task") and
    ``shape`` (e.g. "package.module:TaskClass") word the errors."""
    from rs_pipeline.errors import InputError

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"{setting}: {spec!r} is not an import path '{shape}'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = ("; install its distribution or put its folder on PYTHONPATH"
                if exc.name and module_name.startswith(exc.name) else "")
        raise InputError(f"{setting}: cannot import module {module_name!r} for {what} {spec!r} "
                         f"(ModuleNotFoundError: {exc}){hint}") from None
    except Exception as exc:  # noqa: BLE001 - an error inside the user's module
        raise InputError(f"{setting}: importing module {module_name!r} for {what} {spec!r} "
                         f"failed ({type(exc).__name__}: {exc})") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InputError(f"{setting}: module {module_name!r} has no attribute {attr!r} "
                             f"({what} {spec!r})")
        target = getattr(target, part)
    return target
