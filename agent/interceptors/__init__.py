"""Built-in interceptors (the base class and its contract: ``logflume/interceptor.py``).

Chunk-level: ``host``, ``timestamp``, ``static``, ``regex_extractor``.
Record-level: ``regex_filter``, ``mask``.
"""
