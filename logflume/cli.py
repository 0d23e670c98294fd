"""The `logflume` command: one entry point, a subcommand per daemon or job.

Subcommands import their implementation lazily, so `logflume version` costs
nothing and a broken optional extra only affects the command that needs it.
Errors people can act on are printed as one line and give a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import yaml

from logflume import __version__
from logflume.allocator import reuse_large_buffers
from logflume.errors import ConfigError, StartupError

# Subcommands whose implementation lives with its stage: "module:function" taking argv, returning an exit code.
DELEGATED = {
    "collector": ("collector.daemon:main", "Run a collector daemon (logflume collector -c FILE)"),
    "cat": ("sinks.sequencefile.cat:main", "Print the records of SequenceFiles (like hadoop fs -text)"),
    "archive": ("jobs.archive:main", "Compact sink files by datatype and hour, dropping duplicate chunks"),
    "demux": ("jobs.demux:main", "Split chunks into records and parse them per datatype"),
}

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _fail(cmd: str, message: str, code: int) -> int:
    print(f"logflume {cmd}: {message}", file=sys.stderr)
    return code


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.agent import Agent
    from logflume.topology import load_topology

    try:
        topo = load_topology(args.config)
    except ConfigError as exc:
        return _fail("agent", f"invalid config: {exc}", EXIT_CONFIG)
    _setup_logging(topo.agent.log_level)
    try:
        Agent(topo).run_forever()
    except StartupError as exc:
        return _fail("agent", f"cannot start: {exc}", EXIT_STARTUP)
    return 0


def _is_collector_config(raw: dict) -> bool:
    return "collector" in raw or "store" in raw


def cmd_check(args: argparse.Namespace) -> int:
    from logflume.config import load_yaml

    try:
        raw = load_yaml(args.config)
        if _is_collector_config(raw):
            from collector.config import load_collector_config

            resolved = load_collector_config(args.config)
            print(f"# {args.config}: valid collector config")
            print(yaml.safe_dump(resolved.render(), sort_keys=False, default_flow_style=False), end="")
            return 0
        from logflume.topology import build_topology

        topo = build_topology(raw, args.config)
    except ConfigError as exc:
        return _fail("check", str(exc), EXIT_CONFIG)
    print(f"# {args.config}: valid agent config")
    print("# flow:")
    for line in topo.flows():
        print(f"#   {line}")
    print(yaml.safe_dump(topo.render(), sort_keys=False, default_flow_style=False), end="")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from logflume.registry import available, resolve
    from logflume.settings import describe_schema

    kinds = [args.kind] if args.kind else ["source", "channel", "sink", "processor"]
    for kind in kinds:
        for name in available(kind):
            try:
                cls = resolve(kind, name)
            except ConfigError as exc:
                print(f"## {kind} `{name}` (unavailable: {exc.message})\n")
                continue
            doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            print(f"## {kind} `{name}`\n\n{doc}\n")
            schema = cls.schema() if hasattr(cls, "schema") else {}
            if schema:
                print("| key | type | default | meaning |\n|---|---|---|---|")
                for key, typ, default, meaning in describe_schema(schema):
                    print(f"| `{key}` | {typ} | {default} | {meaning} |")
                print()
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from logflume.quickstart import run_quickstart

    _setup_logging("WARNING")
    try:
        return run_quickstart(args.data_dir, args.seconds)
    except StartupError as exc:
        return _fail("quickstart", f"cannot start: {exc}", EXIT_STARTUP)


def _delegate(name: str, argv: list[str]) -> int:
    target, _ = DELEGATED[name]
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return _fail(name, f"not available: {exc}", EXIT_STARTUP)
    return int(getattr(module, func)(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logflume", description="Log collection in chunks, exactly once after archive."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("agent", help="Run an agent: sources -> channels -> sinks")
    p.add_argument("-c", "--config", required=True, help="agent YAML file")
    p.set_defaults(func=cmd_agent)
    p = sub.add_parser("check", help="Validate a config and print the resolved topology with defaults")
    p.add_argument("-c", "--config", required=True, help="agent or collector YAML file")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("quickstart", help="Run a working local pipeline (agent + collector on loopback)")
    p.add_argument("--data-dir", default=None, help="where to put config, logs and the store (default: a new temp dir)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to let data flow before stopping")
    p.set_defaults(func=cmd_quickstart)
    p = sub.add_parser("plugins", help="List plugins and their settings (Markdown reference)")
    p.add_argument("kind", nargs="?", choices=["source", "channel", "sink", "processor"])
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("version", help="Print the version")
    p.set_defaults(func=lambda a: print(f"logflume {__version__}") or 0)
    for name, (_target, help_text) in DELEGATED.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda a, n=name: _delegate(n, a.args))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    reuse_large_buffers()
    parser = build_parser()
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
