"""Opening a store URL as an fsspec filesystem: a fresh connection, and SFTP servers proven by their host key.

fsspec's SFTP filesystem trusts any host key (paramiko's ``AutoAddPolicy``) and
never reads ``known_hosts``, so whoever can redirect the connection receives
every log line.  Here the server's key must be in a ``known_hosts`` file
(default ``~/.ssh/known_hosts``, with OpenSSH's hashed names and ``[host]:port``
entries) or match a configured SHA256 fingerprint; an unknown key is refused
with the command that would trust it.  Two ``storage_options`` keys say which:

* ``known_hosts``: path of the known_hosts file;
* ``host_key_fingerprint``: ``SHA256:...`` (as ``ssh-keygen -lf`` prints), or a list of them.
"""

from __future__ import annotations

import os
import re
from typing import Any

import fsspec

from logflume.errors import ConfigError

#: Protocols served by paramiko's SFTP (fsspec's ``sftp``/``ssh``).
SFTP_PROTOCOLS = frozenset({"sftp", "ssh"})
#: storage_options keys this module reads itself (the rest go to fsspec).
HOST_KEY_OPTIONS = ("known_hosts", "host_key_fingerprint")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
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
        fs_cls = _verified_sftp_class()
        kwargs = {**fs_cls._get_kwargs_from_urls(url), **options}
        return fs_cls(skip_instance_cache=True, **kwargs), fs_cls._strip_protocol(url)
    return fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)


def _verified_sftp_class() -> type:
    """Built on first use: paramiko and fsspec's SFTP are imported only by stores that need them."""
    global _VerifiedSFTP
    if _VerifiedSFTP is not None:
        return _VerifiedSFTP
    import paramiko

    # paramiko's implementation, by name: another package (sshfs) may claim the protocol
    from fsspec.implementations.sftp import SFTPFileSystem

    class UntrustedHostKey(paramiko.SSHException):
        """The server's host key is neither in known_hosts nor a configured fingerprint."""

    class TrustFingerprints(paramiko.MissingHostKeyPolicy):
        """For hosts not in known_hosts: accept only a configured fingerprint, else refuse saying how to trust."""

        def __init__(self, fingerprints: list[str], known_hosts: str) -> None:
            self.fingerprints = fingerprints
            self.known_hosts = known_hosts

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            fingerprint = key.fingerprint
            if fingerprint in self.fingerprints:
                return
            host, _, port = hostname.strip("[").partition("]:")
            keyscan = f"ssh-keyscan {'-p ' + port + ' ' if port else ''}-t {key.get_name()} {host}"
            configured = f"; configured fingerprints: {', '.join(self.fingerprints)}" if self.fingerprints else ""
            raise UntrustedHostKey(
                f"SFTP host key of {hostname} is not trusted ({key.get_name()} {fingerprint}: not in "
                f"{self.known_hosts}{configured}). Check that fingerprint with the server's administrator, then "
                f"trust it: `{keyscan} >> {self.known_hosts}`, or storage_options.host_key_fingerprint: {fingerprint}"
            )

    class VerifiedSFTPFileSystem(SFTPFileSystem):
        """fsspec's SFTP with the host key checked against known_hosts or configured fingerprints."""

        def __init__(self, host: str, known_hosts: str = DEFAULT_KNOWN_HOSTS,
                     host_key_fingerprint: str | list[str] | None = None, **ssh_kwargs: Any) -> None:
            self.known_hosts = os.path.expanduser(known_hosts)
            fps = host_key_fingerprint or []
            self.fingerprints = [fps] if isinstance(fps, str) else list(fps)
            super().__init__(host, **ssh_kwargs)

        def _connect(self) -> None:
            self.client = paramiko.SSHClient()
            if os.path.exists(self.known_hosts):
                self.client.load_system_host_keys(self.known_hosts)  # read only: never written back
            self.client.set_missing_host_key_policy(TrustFingerprints(self.fingerprints, self.known_hosts))
            self.client.connect(self.host, **self.ssh_kwargs)
            self.ftp = self.client.open_sftp()

    _VerifiedSFTP = VerifiedSFTPFileSystem
    return _VerifiedSFTP


_VerifiedSFTP: type | None = None
