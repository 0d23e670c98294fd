"""HICC, the operator's web console: polls the agents' and collectors' ``/status``, keeps a time series, serves pages.

Modules: ``config`` (the YAML), ``timeseries`` (SQLite, bounded), ``poller``
(the polling loop), ``jobs`` (store, archive and demux outputs), ``records``
(search of demuxed records), ``charts`` (server-side SVG), ``pages`` (HTML),
``server`` (HTTP, token, TLS) and ``daemon`` (``logflume hicc -c FILE``).
"""
