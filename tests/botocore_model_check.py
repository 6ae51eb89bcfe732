"""Every request a test sends through botocore, checked against botocore's own service model of its operation.

botocore's ParamValidator checks member names, types, required members and minimum sizes before sending; AWS then
applies the rest of the model (enums, maximum lengths, patterns, numeric ranges, list and map sizes), and moto applies
little of it. `ModelCheck` applies all of it, recursively from the operation's input shape, to the parameters as they
are about to be serialized (botocore's `before-parameter-build` event, after botocore's own handlers have filled in
what they add). Installed as a built-in handler, it reaches every client of every session created afterwards,
including the ones the SageMaker SDK makes itself. Violations are collected, not raised, so that code which catches
errors cannot hide one; the fixture in conftest.py fails the test that sent it.
"""

import functools
import re

import botocore.handlers

EVENT = "before-parameter-build"


@functools.lru_cache(maxsize=None)
def _compiled(pattern):
    """The model's pattern as a Python regex, or None where Java syntax has no Python spelling (\\p{...})."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _size_problems(shape, size, what, path):
    problems = []
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        problems.append(f"{path}: {what} {size} is below the minimum {low}")
    if high is not None and size > high:
        problems.append(f"{path}: {what} {size} is above the maximum {high}")
    return problems


def violations(shape, value, path):
    """What of `value` breaks `shape`'s rules, each as '<path>: <what>'; empty when it conforms."""
    if shape is None or value is None:
        return []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return []  # botocore's own validator reports wrong types
        problems = [f"{path}.{name}: required member is missing" for name in shape.required_members
                    if value.get(name) is None]
        for name, member in value.items():
            if name in shape.members:
                problems += violations(shape.members[name], member, f"{path}.{name}")
        return problems
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return []
        problems = _size_problems(shape, len(value), "length", path)
        for index, item in enumerate(value):
            problems += violations(shape.member, item, f"{path}[{index}]")
        return problems
    if kind == "map":
        if not isinstance(value, dict):
            return []
        problems = _size_problems(shape, len(value), "size", path)
        for key, item in value.items():
            problems += violations(shape.key, key, f"{path} key {key!r}")
            problems += violations(shape.value, item, f"{path}[{key!r}]")
        return problems
    if kind == "string":
        if not isinstance(value, str):
            return []
        problems = _size_problems(shape, len(value), "length", path)
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {', '.join(shape.enum)}")
        pattern = shape.metadata.get("pattern")
        # AWS matches the whole value (Java's String.matches), anchored or not in the model.
        if pattern and _compiled(pattern) and not _compiled(pattern).fullmatch(value):
            problems.append(f"{path}: {value!r} does not match the pattern {pattern}")
        return problems
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return []
        return _size_problems(shape, value, "value", path)
    if kind == "blob" and isinstance(value, (bytes, bytearray, str)):
        return _size_problems(shape, len(value), "length", path)
    return []


class ModelCheck:
    """Collects the violations of every request sent while it is installed."""

    def __init__(self):
        self.found = []
        self.checked = []  # "<service> <operation>" of every request checked
        self._default_events = None
        self._spec = (EVENT, self, botocore.handlers.REGISTER_LAST)

    def __call__(self, params, model, **_):
        self.checked.append(f"{model.service_model.service_name} {model.name}")
        problems = violations(model.input_shape, params, model.name)
        self.found += [f"{model.service_model.service_name} {problem}" for problem in problems]

    def install(self):
        """Register on every botocore session created from now on, and on boto3's default session if it exists.

        BUILTIN_HANDLERS is changed in place, not replaced: moto adds its own handler to that same list when it is
        first imported, and must keep it after this check is uninstalled."""
        import boto3

        botocore.handlers.BUILTIN_HANDLERS.append(self._spec)
        if boto3.DEFAULT_SESSION is not None:
            self._default_events = boto3.DEFAULT_SESSION.events
            self._default_events.register_last(EVENT, self)
        return self

    def uninstall(self):
        botocore.handlers.BUILTIN_HANDLERS.remove(self._spec)
        if self._default_events is not None:
            self._default_events.unregister(EVENT, self)
