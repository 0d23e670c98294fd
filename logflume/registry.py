"""Plugin registry: a name in YAML -> a component class, imported only when used.

Lookup order for ``type: NAME``: a ``package.module:Class`` path; a built-in
name; an entry point in group ``logflume.<kind>s`` (``logflume.sources``,
``logflume.channels``, ``logflume.sinks``, ``logflume.processors``,
``logflume.interceptors``).  The class must subclass the base class of its kind.
"""

from __future__ import annotations

import importlib
import re
from importlib.metadata import entry_points
from typing import Any

from logflume.errors import ConfigError

BUILTINS: dict[str, dict[str, str]] = {
    "source": {
        "stdin": "agent.sources.stdin:StdinSource",
        "exec": "agent.sources.exec:ExecSource",
        "tail": "agent.sources.tail:TailSource",
        "syslog": "agent.sources.syslog:SyslogSource",
        "http": "agent.sources.http:HttpSource",
        "spooldir": "agent.sources.spooldir:SpoolDirSource",
        "forward": "agent.sources.forward:ForwardSource",
        "scribe": "agent.sources.thrift.scribe:ScribeSource",
        "flume": "agent.sources.thrift.flume:FlumeSource",
    },
    "channel": {
        "memory": "agent.channels.memory:MemoryChannel",
        "file": "agent.channels.file:FileChannel",
    },
    "sink": {
        "console": "sinks.console:ConsoleSink",
        "null": "sinks.null:NullSink",
        "file": "sinks.file:FileSink",
        "collector": "sinks.to_collector:CollectorSink",
        "seqfile": "sinks.seqfile:SeqFileSink",
        "buffer": "collector.store:BufferStore",
    },
    "processor": {
        "raw": "jobs.processors.raw:RawProcessor",
        "syslog": "jobs.processors.syslog:SyslogProcessor",
        "access": "jobs.processors.access:AccessLogProcessor",
        "json": "jobs.processors.json:JsonProcessor",
        "regex": "jobs.processors.regex:RegexProcessor",
    },
    "interceptor": {
        "host": "agent.interceptors.host:HostInterceptor",
        "timestamp": "agent.interceptors.timestamp:TimestampInterceptor",
        "static": "agent.interceptors.static:StaticInterceptor",
        "regex_extractor": "agent.interceptors.regex_extractor:RegexExtractorInterceptor",
        "kubernetes": "agent.interceptors.kubernetes:KubernetesInterceptor",
        "regex_filter": "agent.interceptors.regex_filter:RegexFilterInterceptor",
        "mask": "agent.interceptors.mask:MaskInterceptor",
    },
}


def _base_class(kind: str) -> type:
    if kind == "source":
        from logflume.source import Source

        return Source
    if kind == "channel":
        from logflume.channel import Channel

        return Channel
    if kind == "sink":
        from logflume.sink import Sink

        return Sink
    if kind == "processor":
        from logflume.processor import Processor

        return Processor
    if kind == "interceptor":
        from logflume.interceptor import Interceptor

        return Interceptor
    raise ValueError(kind)


#: ``package.module:Class`` (or ``:Class.Nested``): what ``type:`` names a plugin by.
_PLUGIN_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def entry_point_names(kind: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=f"logflume.{kind}s")}


def available(kind: str) -> list[str]:
    """Every name ``type:`` accepts for this kind (built-ins and installed plugins)."""
    return sorted(set(BUILTINS.get(kind, {})) | set(entry_point_names(kind)))


def resolve(kind: str, name: str, file: str | None = None, path: str = "") -> type:
    """The class for ``type: name``, or a ConfigError saying what exists."""
    where = f"{path}.type" if path else "type"
    try:
        if ":" in name:
            if not _PLUGIN_PATH.match(name):
                raise ConfigError(file, where, f"expected a built-in {kind} type or package.module:Class, got {name!r}")
            cls = _import(name)
        elif name in BUILTINS.get(kind, {}):
            cls = _import(BUILTINS[kind][name])
        else:
            eps = entry_point_names(kind)
            if name not in eps:
                raise ConfigError(
                    file, where, f"unknown {kind} type {name!r}; expected one of: {', '.join(available(kind))}, "
                    f"or package.module:Class",
                )
            cls = eps[name].load()
    except ConfigError:
        raise
    except (ImportError, AttributeError, ValueError, TypeError) as exc:  # also what a plugin's import raised
        raise ConfigError(file, where, f"cannot load {kind} plugin {name!r}: {exc}") from None
    base = _base_class(kind)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(file, where, f"{name!r} is not a subclass of {base.__module__}.{base.__name__}")
    return cls
