"""Opening a store URL as an fsspec filesystem: a fresh connection, and SFTP servers proven by their host key.

fsspec's SFTP filesystem trusts any host key (paramiko's ``AutoAddPolicy``) and
never reads ``known_hosts``, so whoever can redirect the connection receives
every log line.  SFTP URLs get :class:`sinks.sftp.VerifiedSFTPFileSystem`
instead, configured by two ``storage_options`` keys:

* ``known_hosts``: path of the known_hosts file;
* ``host_key_fingerprint``: ``SHA256:...`` (as ``ssh-keygen -lf`` prints), or a list of them.
"""

from __future__ import annotations

import re
from typing import Any

import fsspec

from logflume.errors import ConfigError

#: Protocols served by paramiko's SFTP (fsspec's ``sftp``/``ssh``).
SFTP_PROTOCOLS = frozenset({"sftp", "ssh"})
#: storage_options keys logflume reads itself (sinks/sftp.py); the rest go to paramiko or fsspec.
HOST_KEY_OPTIONS = ("known_hosts", "host_key_fingerprint")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def protocol_of(url: str) -> str:
    """``sftp://h/x`` -> ``sftp``; a local path -> ``file``."""
    return url.split("://", 1)[0] if "://" in url else "file"


def check_storage_options(url: str, options: dict[str, Any], file: str | None, path: str) -> None:
    """ConfigError for host-key options that are malformed, or given for a store that is not SFTP."""
    sftp = protocol_of(url) in SFTP_PROTOCOLS
    if "host_key_policy" in options:
        raise ConfigError(file, f"{path}.host_key_policy", "not accepted: host keys are always verified; expected "
                          "known_hosts or host_key_fingerprint")
    for key in HOST_KEY_OPTIONS:
        if key in options and not sftp:
            raise ConfigError(file, f"{path}.{key}", f"only for sftp:// stores, not {protocol_of(url)}")
    if "known_hosts" in options and not isinstance(options["known_hosts"], str):
        raise ConfigError(file, f"{path}.known_hosts", f"expected a file path, got {options['known_hosts']!r}")
    fingerprints = options.get("host_key_fingerprint")
    if fingerprints is not None:
        items = fingerprints if isinstance(fingerprints, list) else [fingerprints]
        for i, fp in enumerate(items):
            if not isinstance(fp, str) or not _FINGERPRINT.fullmatch(fp):
                where = f"{path}.host_key_fingerprint" + (f"[{i}]" if isinstance(fingerprints, list) else "")
                raise ConfigError(file, where, f"expected SHA256:<43 base64 characters> (as printed by "
                                               f"`ssh-keygen -lf KEY.pub`), got {fp!r}")


def open_filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """A fresh (uncached) filesystem for ``url`` and the root path in it; SFTP verifies the host key."""
    if protocol_of(url) in SFTP_PROTOCOLS:
        from sinks.sftp import VerifiedSFTPFileSystem  # paramiko is imported only by stores that need it

        kwargs = {**VerifiedSFTPFileSystem._get_kwargs_from_urls(url), **options}
        return (VerifiedSFTPFileSystem(skip_instance_cache=True, **kwargs),
                VerifiedSFTPFileSystem._strip_protocol(url))
    return fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
