"""``logflume collector -c FILE``: run a collector until SIGTERM/SIGINT, then drain and exit 0.

SIGHUP (or ``logflume reload -c FILE``) re-reads the config and applies what can
change live (``collector.reload``); the pid is in ``<data_dir>/collector.pid``.

A collector that cannot start prints one line,
``logflume collector: cannot start: REASON``, to stderr and exits non-zero
(2 for configuration problems, 1 for anything else).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from logflume.errors import ConfigError, StartupError
from logflume.exits import EXIT_CONFIG, EXIT_STARTUP, cannot_start
from logflume.logs import setup_logging
from logflume.signals import DaemonSignals


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="logflume collector", description="Run a logflume collector daemon")
    parser.add_argument("-c", "--config", required=True, help="collector YAML file")
    args = parser.parse_args(argv)
    signals = DaemonSignals(logging.getLogger("logflume.collector"))
    signals.install()  # first: a stop sent while the collector recovers its store is kept

    from collector.config import COLLECTOR_SETTINGS, load_collector_config
    from collector.receiver import Collector
    from collector.reload import Reloader
    from collector.routing import buffer_stores
    from logflume.settings import secret_warnings
    from logflume.status import PipelineStatus

    try:
        config = load_collector_config(args.config)
        warnings = secret_warnings(COLLECTOR_SETTINGS, config.collector, "collector", args.config) + config.warnings
    except ConfigError as exc:
        return cannot_start("collector", exc, EXIT_CONFIG)
    setup_logging(config.collector.log_level)
    for warning in warnings:
        logging.getLogger("logflume.collector").warning("%s", warning)
    collector = Collector(config)
    stores = [config.store, *(r.store for r in config.routes)]  # a group's status() lists its members
    config.context.metrics.status = PipelineStatus(
        "collector", config.collector.name, config.context.metrics, stores, store=config.store,
        pending_bytes=lambda: collector.writer.pending_bytes, buffers=buffer_stores(stores))
    reloader = Reloader(collector, args.config)
    try:
        collector.start()
    except StartupError as exc:
        return cannot_start("collector", exc, EXIT_STARTUP)
    except Exception as exc:
        return cannot_start("collector", f"{type(exc).__name__}: {exc}", EXIT_STARTUP)
    addrs = ", ".join(f"{s.endpoint.name}={s.address[0]}:{s.address[1]}" for s in collector.servers)
    logging.getLogger("logflume.collector").info("collector %s ready: %s", config.collector.name, addrs)
    reloader.write_pid(os.getpid())
    while signals.wait() == "reload":
        logging.getLogger("logflume.collector").info("SIGHUP: reloading %s", args.config)
        reloader.reload()
    reloader.remove_pid()
    collector.stop()
    logging.getLogger("logflume.collector").info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
