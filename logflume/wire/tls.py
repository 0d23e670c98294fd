"""TLS contexts for the wire: a server certificate, optional client-certificate verification (mutual TLS)."""

from __future__ import annotations

import ssl

from logflume.errors import StartupError


def server_context(
    cert: str, key: str, client_ca: str | None = None, require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context; with ``require_client_cert`` a client must present a certificate signed by ``client_ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(cafile=client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load TLS certificate/key ({cert}, {key}, ca={client_ca}): {exc}") from None
    if require_client_cert:
        if not client_ca:
            raise StartupError("tls.require_client_cert needs tls.client_ca to verify client certificates")
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif client_ca:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (system roots if None) and may present a certificate."""
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load TLS client certificate/key ({cert}, {key}): {exc}") from None
    return ctx
