"""Demux engines: ``local`` (multiprocessing on this machine) and ``spark`` (PySpark on a cluster)."""
