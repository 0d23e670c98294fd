"""``logflume hicc -c FILE``: run the console until SIGTERM/SIGINT.

It cannot start (bad config, port in use, unreadable TLS files): one line,
``logflume hicc: cannot start: REASON``, and exit 2 (config) or 1.
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
    parser = argparse.ArgumentParser(prog="logflume hicc", description="Run HICC, the logflume web console")
    parser.add_argument("-c", "--config", required=True, help="hicc YAML file")
    args = parser.parse_args(argv)
    signals = DaemonSignals(logging.getLogger("logflume.hicc"), reload=False)
    signals.install()

    from hicc.config import load_hicc_config
    from hicc.poller import Poller
    from hicc.server import Console, ConsoleServer
    from hicc.timeseries import TimeSeries

    try:
        config = load_hicc_config(args.config)
    except ConfigError as exc:
        return cannot_start("hicc", exc, EXIT_CONFIG)
    cfg = config.values
    setup_logging(cfg.log_level)  # redacting, as the agent's and the collector's logs
    log = logging.getLogger("logflume.hicc")
    try:
        os.makedirs(cfg.data_dir, exist_ok=True)
        series = TimeSeries(os.path.join(cfg.data_dir, "timeseries.sqlite"), cfg.retention, cfg.max_db_size)
        poller = Poller(cfg, series)
        ssl_ctx = None
        if cfg.tls is not None:
            from logflume.wire.tls import server_context

            ssl_ctx = server_context(cfg.tls.cert, cfg.tls.key)
        server = ConsoleServer(Console(cfg, poller, series), ssl_ctx)
    except ConfigError as exc:
        return cannot_start("hicc", exc, EXIT_CONFIG)
    except StartupError as exc:
        return cannot_start("hicc", exc, EXIT_STARTUP)
    except OSError as exc:
        return cannot_start("hicc", f"{cfg.listen[0]}:{cfg.listen[1]} or {cfg.data_dir}: {exc.strerror or exc}",
                             EXIT_STARTUP)
    poller.start()
    server.start()
    host, port = server.server_address[:2]
    scheme = "https" if ssl_ctx is not None else "http"
    log.info("hicc ready: %s://%s:%d/ watching %d agent(s) and %d collector(s)", scheme, host, port,
             len(poller.snapshot("agent")), len(poller.snapshot("collector")))
    signals.wait()
    server.close()
    poller.stop()
    series.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
