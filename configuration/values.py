"""The forms a setting's value may take, and turning each into its declared type or one line of error.

A value reaches us either typed, from YAML in a config file (invoke.yaml: `endpoint_port: 8081`), or as text,
from an INVOKE_* variable or the text defaults invoke is given. Both forms parse to the same typed value:

- bool: true/false, yes/no, 1/0 (any case); anything else is an error, not "on" (invoke's own rule for a bool).
- int, float: the number as Python reads it ("8080", "2.5", "1e-6").
- list: a YAML/JSON list ("[module.storage, module.iam]") or comma-separated text ("module.storage,module.iam").
- mapping: a YAML/JSON mapping ('{epochs: 10, arch: resnet18}', '{"epochs": 10}'); empty text is {}.
"""

import typing
from pathlib import Path

import yaml
from invoke.exceptions import Exit

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


class SettingError(Exit):
    """A setting that cannot be used; the message is one line naming it and what to write instead.

    An invoke Exit, so a task that meets one stops with that line and no traceback."""

    def __init__(self, message):
        super().__init__(message, code=1)


def as_text(value):
    """The text form of a typed value: what an INVOKE_* variable would hold for it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, Path):
        return value.as_posix()
    return yaml.safe_dump(value if isinstance(value, dict) else list(value), default_flow_style=True,
                          width=1 << 16).strip()


def _yaml_text(name, text):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", "") or error).split())
        raise SettingError(f"{name}: {text!r} is not YAML or JSON text ({problem})") from None


def parse_bool(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise SettingError(f"{name}: {value!r} is not a boolean: write true or false (or yes/no, 1/0)")


def parse_number(name, value, kind):
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
        what = "a whole number" if kind is int else "a number"
        raise SettingError(f"{name}: {value!r} is not {what}")
    return kind(value)


def parse_str(name, value):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)                     # pytorch_version: 2.8 written without quotes
    raise SettingError(f"{name}: {value!r} is not text")


def parse_list(name, value):
    """A list from a YAML list, or from text: a YAML/JSON list or comma-separated items."""
    if isinstance(value, str):
        parsed = _yaml_text(name, value) if value.strip() else []
        value = parsed if isinstance(parsed, list) else [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise SettingError(f"{name}: {value!r} is not a list: write [a, b] or a,b")
    return list(value)


def parse_mapping(name, value):
    """A mapping from YAML, or from YAML/JSON text ('{epochs: 10}'); empty text or null is {}."""
    if isinstance(value, str):
        value = _yaml_text(name, value) if value.strip() else {}
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise SettingError(f"{name}: {value!r} is not a mapping: write {{name: value, ...}} (YAML or JSON)")
    return {str(key): item for key, item in value.items()}


def parse_value(name, value, kind):
    """`value` (typed or text) as `kind`: bool, int, float, str, Path, dict, or tuple[X, ...] of one of those."""
    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        return tuple(parse_value(f"{name}[{index}]", item, item_kind)
                     for index, item in enumerate(parse_list(name, value)))
    parsers = {bool: parse_bool, str: parse_str, dict: parse_mapping,
               int: lambda n, v: parse_number(n, v, int), float: lambda n, v: parse_number(n, v, float),
               Path: lambda n, v: Path(parse_str(n, v))}
    return parsers[kind](name, value)
