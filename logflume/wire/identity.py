"""Who a peer is, and which ``source`` names it may send: the collector's trust model.

A peer proves an identity with a token (compared in constant time) or with a
TLS client certificate verified against the collector's ``client_ca`` (its
subject common name or a DNS name of its subjectAltName).  Each identity
lists the ``source`` globs it may send; a chunk for any other source is
refused.  A collector configured with no credentials at all serves everyone
as the anonymous identity ``peer:<address>``, which may send any source: that
is only allowed on loopback, or when the operator says ``insecure: true``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

#: In ``sources`` globs, replaced by the name of the certificate that matched.
CERT_PLACEHOLDER = "{certificate}"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Longest client-supplied name (sender, certificate name) written into a log line.
MAX_LOGGED_NAME = 255


def sanitize(name: object, limit: int = MAX_LOGGED_NAME) -> str:
    """A client-supplied name made safe for one log line: control characters escaped, length bounded."""
    text = name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text[:limit])
    return text + "..." if len(name) > limit else text  # type: ignore[arg-type]


@dataclass(frozen=True)
class Identity:
    """An authenticated peer: its name (recorded as the chunks' ``sender``) and the sources it may send."""

    name: str
    sources: tuple[str, ...]

    def may_send(self, source: str) -> bool:
        if "*" in self.sources:
            return True
        return any(fnmatchcase(source, glob) for glob in self.sources)

    def refusal(self, source: str) -> str | None:
        """Why this identity may not send ``source``, or None when it may."""
        if self.may_send(source):
            return None
        allowed = ", ".join(self.sources) or "none"
        return f"identity {self.name!r} may not send source {sanitize(source, 80)!r} (allowed: {allowed})"


@dataclass(frozen=True)
class Credential:
    """One configured identity: a token, a certificate name (glob), or both (then both must be shown)."""

    name: str
    sources: tuple[str, ...]
    token: str | None = None
    certificate: str | None = None
    _token_bytes: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        object.__setattr__(self, "_token_bytes", (self.token or "").encode())

    def identity(self, cert_name: str | None) -> Identity:
        sources = tuple(s.replace(CERT_PLACEHOLDER, cert_name or "") for s in self.sources)
        return Identity(self.name, sources)


class Authenticator:
    """Maps what a peer showed (token, verified certificate names, address) to an Identity or a refusal reason."""

    def __init__(self, credentials: Sequence[Credential] = (), *, require_certificate: bool = False) -> None:
        self.credentials = list(credentials)
        self.require_certificate = require_certificate

    @property
    def open(self) -> bool:
        """True when no credential is configured: every peer is anonymous and may send any source."""
        return not self.credentials and not self.require_certificate

    def authenticate(self, token: str | bytes | None, cert_names: Sequence[str], peer: str) -> Identity | str:
        """The peer's identity, or a one-line reason to refuse it."""
        if self.open:
            return Identity(f"peer:{peer_host(peer)}", ("*",))
        if token:
            given = token if isinstance(token, bytes) else token.encode()
            match = None
            for cred in self.credentials:  # every token is compared, in constant time
                if cred.token is not None and hmac.compare_digest(given, cred._token_bytes):
                    match = cred
            if match is None:
                return "authentication failed: unknown token"
            if match.certificate is None:
                return match.identity(None)
            name = _first_match(match.certificate, cert_names)
            if name is None:
                return f"authentication failed: the token of {match.name!r} needs its client certificate"
            return match.identity(name)
        if cert_names:
            for cred in self.credentials:
                if cred.certificate is not None and cred.token is None:
                    name = _first_match(cred.certificate, cert_names)
                    if name is not None:
                        return cred.identity(name)
            shown = ", ".join(sanitize(n, 80) for n in cert_names)
            return f"authentication failed: certificate {shown} is not a configured identity"
        return "authentication failed: missing token (or client certificate)"


def _first_match(pattern: str, names: Iterable[str]) -> str | None:
    for n in names:
        if fnmatchcase(n, pattern):
            return n
    return None


def peer_host(peer: str) -> str:
    """The address part of ``HOST:PORT`` (IPv6 included)."""
    return peer.rsplit(":", 1)[0] if ":" in peer else peer


def certificate_names(sock: Any) -> list[str]:
    """Subject common name and DNS subjectAltNames of a TLS peer's *verified* certificate (empty otherwise)."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return []
    try:
        cert = getpeercert()
    except (ValueError, OSError):
        return []
    if not cert:  # no certificate, or not verified (getpeercert() returns {} then)
        return []
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and value not in names:
            names.append(value)
    return names
