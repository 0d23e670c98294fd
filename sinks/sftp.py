"""fsspec's SFTP filesystem with the server's host key verified, never trusted on first sight.

The key must be in a ``known_hosts`` file (default ``~/.ssh/known_hosts``; OpenSSH's
hashed names and ``[host]:port`` entries are understood, the file is never written)
or match a configured SHA256 fingerprint.  A host that known_hosts lists with another
key is refused by paramiko itself (``BadHostKeyException``); an unknown key is refused
with its fingerprint and the ``ssh-keyscan`` line that would trust it.
"""

from __future__ import annotations

import os
from typing import Any

import paramiko

# paramiko's implementation, by name: another package (sshfs) may claim the protocol
from fsspec.implementations.sftp import SFTPFileSystem

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class UntrustedHostKey(paramiko.SSHException):
    """The server's host key is neither in known_hosts nor a configured fingerprint."""


class TrustFingerprints(paramiko.MissingHostKeyPolicy):
    """For hosts known_hosts does not list: accept a configured fingerprint, else refuse saying how to trust."""

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
