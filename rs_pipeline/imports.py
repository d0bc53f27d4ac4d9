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


class lazy_module:  # noqa: N801 - read like the module it stands for
    """Module ``name``, imported on first attribute access: the Dagster definitions and the CLI's
    read-only commands load without the ML stack (torch, transformers), which the step bodies
    import when they run. A plain proxy, not a ``sys.modules`` entry (``importlib``'s
    ``LazyLoader`` modules are loaded by anything that scans ``sys.modules``, e.g. ``inspect``
    in the middle of torch's own import)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
