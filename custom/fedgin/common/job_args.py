"""Constructor arguments where NVFlare's Job API finds them when it exports a component.

``FedJob.export_job`` writes a component as ``{"path": <class>, "args": {...}}`` and reads each ``__init__``
parameter back from the object's attribute of the same name (or with a leading ``_``), dropping those equal to
their default; a parameter the object does not keep under that name is silently left out of the exported job.
``keep_job_args`` makes that reading exact: it checks an attribute the class already keeps under the parameter's
name and stores the others under ``_<name>``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["keep_job_args", "JobArgsError"]


class JobArgsError(TypeError):
    """An attribute named like a constructor parameter holds something else: the export would be wrong."""


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:  # tuples and lists, ints and equal floats export to the same JSON
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError):
        return a == b


def keep_job_args(obj: Any, **args: Any) -> None:
    """Record ``obj``'s constructor arguments for ``FedJob`` export (call it last in ``__init__``); every one of
    them is exported, defaults included, so that the job file states the whole configuration.

    Raises:
        JobArgsError: ``obj.<name>`` (or ``obj._<name>``) already holds a different value.
    """
    attrs = obj.__dict__
    for name, value in args.items():
        for key in (name, "_" + name):
            if key in attrs:
                if not _same(attrs[key], value):
                    raise JobArgsError(f"{type(obj).__name__}.{key} holds {attrs[key]!r}, not its constructor "
                                       f"argument {name}={value!r}; a FedJob export would write the former")
                break
        else:
            if hasattr(type(obj), "_" + name):
                raise JobArgsError(f"{type(obj).__name__}._{name} is a class attribute (a method?): storing the "
                                   f"constructor argument {name} there would shadow it; rename one of them")
            attrs["_" + name] = value
    obj._always_serialize_args = tuple(sorted(set(getattr(obj, "_always_serialize_args", ())) | set(args)))
