"""Typed setting declarations: one schema per plugin, used for validation, defaults, `check` and docs.

A plugin declares ``settings = {"chunk_size": Setting(Size(), "64MiB", "...")}``; the
loader parses raw YAML values through the declared types and reports every
mismatch as a :class:`ConfigError` naming the key path and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from logflume import secrets
from logflume.errors import ConfigError


def _bare(description: str) -> str:
    """'a string' -> 'string': for nesting one description in another."""
    for article in ("a ", "an "):
        if description.startswith(article):
            return description[len(article):]
    return description


class Invalid(ValueError):
    """Raised by a setting type; the loader adds file and key path."""


class SettingType:
    expected: str = "a value"

    def parse(self, value: Any, path: str, file: str | None) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return self.expected

    def render(self, value: Any) -> Any:
        """The value as it would be written in YAML (for `check` output)."""
        return value

    def _fail(self, value: Any, path: str, file: str | None) -> ConfigError:
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        return ConfigError(file, path, f"expected {self.describe()}, got {shown}")


class Str(SettingType):
    expected = "a string"

    def parse(self, value, path, file):
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            raise self._fail(value, path, file)
        return str(value)

    def render(self, value):
        return secrets.redact_url(value)  # a URL's password is never shown back


class Secret(Str):
    """A string never shown back: `check` output renders it as ``<redacted>`` and logs hide its value.

    Declaring a setting ``Secret`` is how a plugin marks it: ``check`` also warns when
    the value is a placeholder or short (:func:`secret_warnings`).
    """

    expected = "a secret string"

    def parse(self, value, path, file):
        text = super().parse(value, path, file)
        secrets.remember(text)
        return text

    def render(self, value):
        return secrets.REDACTED if value else value


class Int(SettingType):
    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def describe(self) -> str:
        rng = ""
        if self.min is not None and self.max is not None:
            rng = f" in [{self.min}, {self.max}]"
        elif self.min is not None:
            rng = f" >= {self.min}"
        return "an integer" + rng

    def parse(self, value, path, file):
        if isinstance(value, bool):
            raise self._fail(value, path, file)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            value = int(value)
        if not isinstance(value, int):
            raise self._fail(value, path, file)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self._fail(value, path, file)
        return value


class Float(SettingType):
    def __init__(self, min: float | None = None) -> None:
        self.min = min

    def describe(self) -> str:
        return "a number" + (f" >= {self.min}" if self.min is not None else "")

    def parse(self, value, path, file):
        if isinstance(value, bool):
            raise self._fail(value, path, file)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise self._fail(value, path, file) from None
        if self.min is not None and out < self.min:
            raise self._fail(value, path, file)
        return out


class Bool(SettingType):
    expected = "true or false"
    _words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

    def parse(self, value, path, file):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in self._words:
            return self._words[value.strip().lower()]
        raise self._fail(value, path, file)


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}


def parse_size(text: str | int) -> int:
    """``64MiB`` -> 67108864; ``10MB`` is decimal, ``10MiB`` (or ``10M``) binary."""
    if isinstance(text, bool):
        raise Invalid(text)
    if isinstance(text, int):
        if text < 0:
            raise Invalid(text)
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise Invalid(text)
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    for unit, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


class Size(SettingType):
    expected = "a size such as 4096, 512KiB, 64MiB or 1GB"

    def __init__(self, min: int = 0) -> None:
        self.min = min

    def parse(self, value, path, file):
        try:
            out = parse_size(value)
        except Invalid:
            raise self._fail(value, path, file) from None
        if out < self.min:
            raise ConfigError(file, path, f"expected a size of at least {format_size(self.min)}, got {value!r}")
        return out

    def render(self, value):
        return format_size(value)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float) -> float:
    """``250ms`` -> 0.25, ``5s`` -> 5.0, ``1h30m`` -> 5400.0; a bare number is seconds."""
    if isinstance(text, bool):
        raise Invalid(text)
    if isinstance(text, (int, float)):
        if text < 0:
            raise Invalid(text)
        return float(text)
    s = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)", s)
    if not parts or "".join(a + b for a, b in parts) != s.replace(" ", ""):
        raise Invalid(text)
    return sum(float(a) * _DURATION_UNITS[b] for a, b in parts)


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        ms = seconds * 1000
        return f"{int(ms)}ms" if ms == int(ms) else f"{seconds}s"
    s = int(seconds)
    for unit, mult in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % mult == 0:
            return f"{s // mult}{unit}"
    return f"{s}s"


class Duration(SettingType):
    expected = "a duration such as 250ms, 5s, 2m or 1h"

    def parse(self, value, path, file):
        try:
            return parse_duration(value)
        except Invalid:
            raise self._fail(value, path, file) from None

    def render(self, value):
        return format_duration(value)


class Enum(SettingType):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def parse(self, value, path, file):
        if not isinstance(value, str) or value not in self.choices:
            raise self._fail(value, path, file)
        return value


class Regex(Str):
    expected = "a regular expression"

    def parse(self, value, path, file):
        text = super().parse(value, path, file)
        try:
            re.compile(text)
        except re.error as exc:
            raise ConfigError(file, path, f"expected a regular expression, got {text!r}: {exc}") from None
        return text


class HostPort(SettingType):
    expected = "HOST:PORT (e.g. 127.0.0.1:9090)"

    def parse(self, value, path, file):
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if sep and port.isdigit() and 0 <= int(port) <= 65535:
                return (host.strip("[]") or "0.0.0.0", int(port))
        raise self._fail(value, path, file)

    def render(self, value):
        return f"{value[0]}:{value[1]}"


class ListOf(SettingType):
    """A list; a single scalar is accepted as a list of one (``paths: /var/log/x``)."""

    def __init__(self, item: SettingType, min_items: int = 0) -> None:
        self.item, self.min_items = item, min_items

    def describe(self) -> str:
        return f"a list of ({_bare(self.item.describe())})"

    def parse(self, value, path, file):
        if value is None:
            value = []
        if not isinstance(value, list):
            value = [value]
        if len(value) < self.min_items:
            raise ConfigError(file, path, f"expected at least {self.min_items} item(s), got {len(value)}")
        return [self.item.parse(v, f"{path}[{i}]", file) for i, v in enumerate(value)]

    def render(self, value):
        return [self.item.render(v) for v in value]


class MapOf(SettingType):
    def __init__(self, item: SettingType) -> None:
        self.item = item

    def describe(self) -> str:
        return f"a mapping of names to ({_bare(self.item.describe())})"

    def parse(self, value, path, file):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(value, path, file)
        return {str(k): self.item.parse(v, f"{path}.{k}", file) for k, v in value.items()}

    def render(self, value):
        return {k: secrets.redact(self.item.render(v), k) for k, v in value.items()}


class Optional(SettingType):
    """A value or null (``None``); the default is usually ``None``."""

    def __init__(self, inner: SettingType) -> None:
        self.inner = inner

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"

    def parse(self, value, path, file):
        return None if value is None else self.inner.parse(value, path, file)

    def render(self, value):
        return None if value is None else self.inner.render(value)


class AnyValue(SettingType):
    """Free-form data (e.g. fsspec ``storage_options``): shown with secret-named keys redacted."""

    expected = "any value"

    def parse(self, value, path, file):
        secrets.remember_tree(value)
        return value

    def render(self, value):
        return secrets.redact(value)


REQUIRED: Any = object()


@dataclass(frozen=True)
class Setting:
    """One declared key: its type, its default (``REQUIRED`` if none) and a one-line doc."""

    type: SettingType
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class Obj(SettingType):
    """A nested mapping with its own declared keys (e.g. one entry of a ``paths`` list)."""

    def __init__(self, fields: Mapping[str, Setting], shorthand: str | None = None) -> None:
        self.fields = dict(fields)
        self.shorthand = shorthand  # a scalar is accepted as {shorthand: scalar}

    def describe(self) -> str:
        return "a mapping with keys " + ", ".join(self.fields)

    def parse(self, value, path, file):
        if self.shorthand and not isinstance(value, (dict, list)) and value is not None:
            value = {self.shorthand: value}
        if not isinstance(value, dict):
            raise self._fail(value, path, file)
        return parse_settings(self.fields, value, path, file)

    def render(self, value):
        return render_settings(self.fields, value)


class Values(Mapping[str, Any]):
    """Parsed settings: read as ``values.chunk_size`` or ``values["chunk_size"]``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Values({self._data!r})"


def _suggest(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_settings(schema: Mapping[str, Setting], raw: Mapping[str, Any], path: str, file: str | None) -> Values:
    """Validate ``raw`` against ``schema``: unknown keys, missing required keys and wrong types are errors."""
    prefix = f"{path}." if path else ""
    for key in raw:
        if key not in schema:
            known = sorted(schema)
            raise ConfigError(
                file, f"{prefix}{key}",
                f"unknown key{_suggest(str(key), known)}; expected one of: {', '.join(known)}",
            )
    out: dict[str, Any] = {}
    for key, setting in schema.items():
        if key in raw:
            out[key] = setting.type.parse(raw[key], f"{prefix}{key}", file)
        elif setting.required:
            raise ConfigError(file, f"{prefix}{key}", f"missing required key: expected {setting.type.describe()}")
        else:
            default = setting.default
            if isinstance(default, str) and not isinstance(setting.type, (Str, Enum)):
                default = setting.type.parse(default, f"{prefix}{key}", file)
            elif isinstance(default, (list, dict)):
                default = setting.type.parse(default, f"{prefix}{key}", file)
            out[key] = default
    return Values(out)


def render_settings(schema: Mapping[str, Setting], values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: schema[k].type.render(v) if k in schema else v for k, v in values.items()}


def _secrets_in(t: SettingType, value: Any, path: str) -> list[tuple[str, str]]:
    """(key path, value) of every declared Secret inside one parsed value (lists, maps, nested mappings)."""
    if value is None:
        return []
    if isinstance(t, Secret):
        return [(path, value)]
    if isinstance(t, Optional):
        return _secrets_in(t.inner, value, path)
    if isinstance(t, ListOf):
        return [x for i, v in enumerate(value) for x in _secrets_in(t.item, v, f"{path}[{i}]")]
    if isinstance(t, MapOf):
        return [x for k, v in value.items() for x in _secrets_in(t.item, v, f"{path}.{k}")]
    if isinstance(t, Obj):
        return [x for k, setting in t.fields.items() if k in value
                for x in _secrets_in(setting.type, value[k], f"{path}.{k}")]
    return []


def secret_warnings(schema: Mapping[str, Setting], values: Mapping[str, Any], path: str,
                    file: str | None) -> list[str]:
    """Warnings about the declared ``Secret`` settings of one component (or collector section), at any depth.

    Each weak secret (placeholder, short, empty) is a warning, or a ``ConfigError`` when
    the component's ``listen`` address is beyond loopback; secrets configured while the
    component's ``tls`` is null get a warning that they travel in clear.
    """
    listen = values.get("listen") if isinstance(values.get("listen"), tuple) else None
    found = [x for key, setting in schema.items() if key in values
             for x in _secrets_in(setting.type, values[key], f"{path}.{key}")]
    out = [w for where, value in found if (w := secrets.check_secret(value, file=file, path=where, bind=listen))]
    if "tls" in schema:
        warning = secrets.cleartext_warning(path, values.get("tls"), [value for _, value in found])
        if warning:
            out.append(warning)
    return out


def describe_schema(schema: Mapping[str, Setting]) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for generated reference docs."""
    rows = []
    for key, s in schema.items():
        if s.required:
            default = "required"
        else:
            default = repr(s.default if isinstance(s.default, str) else s.type.render(s.default))
        rows.append((key, s.type.describe(), default, s.doc))
    return rows


Parser = Callable[[Any, str, "str | None"], Any]
