"""Loading YAML configuration: safe parsing, duplicate-key detection and ``${ENV}`` interpolation.

Validation against plugin schemas happens in :mod:`logflume.topology`; this
module only turns a file into plain data and reports YAML problems with the
file, line and column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from logflume.errors import ConfigError
from logflume.secrets import remember_tree

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which YAML would silently overwrite."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.MarkedYAMLError(
                problem=f"a mapping key must be a plain value, got a {type(key).__name__}",
                problem_mark=key_node.start_mark,
            )
        if key in seen:
            mark = key_node.start_mark
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=mark,
            )
        seen[key] = loader.construct_object(value_node, deep=deep)
    return seen


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


#: Most values a config may expand to: YAML aliases share nodes, so nine lines of nested
#: aliases ("billion laughs") would expand to 10^9 values when walked.
MAX_VALUES = 100_000


class _Budget:
    def __init__(self, file: str | None) -> None:
        self.left = MAX_VALUES
        self.file = file

    def spend(self, path: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConfigError(self.file, path, f"config expands to more than {MAX_VALUES} values "
                                               "(nested YAML aliases?); expected a config of reasonable size")


def interpolate(value: Any, file: str | None, path: str = "", env: Mapping[str, str] | None = None,
                budget: _Budget | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    env = os.environ if env is None else env
    budget = budget or _Budget(file)
    budget.spend(path)
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env and (default is None or env[name] != ""):
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                file, path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            )
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, file, f"{path}.{k}" if path else str(k), env, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, file, f"{path}[{i}]", env, budget) for i, v in enumerate(value)]
    return value


def parse_yaml(text: str, file: str | None = None) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(file, "", f"invalid YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, "", f"invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping at the top level, got {type(data).__name__}")
    data = interpolate(data, file)
    remember_tree(data)  # secret-named keys and URL passwords: hidden from every log line from now on
    return data


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a config file; unreadable files are ConfigErrors too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "no such file") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.__class__.__name__}: {exc}") from None
    return parse_yaml(text, str(p))
