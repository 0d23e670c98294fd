"""TLS and mutual TLS on the logflume wire, with certificates generated at test time."""

from __future__ import annotations

import logging

import pytest

from logflume.chunk import Chunk
from logflume.errors import StartupError
from logflume.wire import RefusedError, WireClient
from logflume.wire.tls import client_context, server_context
from tests.conftest import wait_for
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def one() -> list[Chunk]:
    return [Chunk(source="a", stream="s", datatype="Raw", seq_id=3, epoch="e", data=b"hi\n")]


def test_tls_delivers_and_plain_client_is_refused(wire_server, pki, caplog):
    srv, rec = wire_server(ssl_context=server_context(pki.server_cert, pki.server_key))
    client = WireClient(*srv.address, ssl_context=client_context(pki.ca))
    assert client.deliver(one()).ok
    client.close()
    assert [bytes(c.data) for c in rec.chunks] == [b"hi\n"]
    with caplog.at_level(logging.WARNING):
        plain = WireClient(*srv.address, timeout=5)
        with pytest.raises(Exception):  # noqa: B017 - the plain client sees garbage or a reset
            plain.deliver(one())
        wait_for(lambda: "TLS handshake with" in caplog.text, 5, message="server logs the failed handshake")


def test_client_refuses_server_signed_by_unknown_ca(wire_server, pki):
    srv, _ = wire_server(ssl_context=server_context(pki.server_cert, pki.server_key))
    client = WireClient(*srv.address, ssl_context=client_context(pki.other_ca), timeout=5)
    with pytest.raises(RefusedError, match="TLS handshake failed.*CERTIFICATE_VERIFY_FAILED"):
        client.connect()


def test_mutual_tls(wire_server, pki, caplog):
    ctx = server_context(pki.server_cert, pki.server_key, client_ca=pki.ca, require_client_cert=True)
    srv, rec = wire_server(ssl_context=ctx)
    good = WireClient(*srv.address, ssl_context=client_context(pki.ca, pki.client_cert, pki.client_key))
    assert good.deliver(one()).ok
    good.close()
    with caplog.at_level(logging.WARNING):
        for ssl_ctx in (client_context(pki.ca), client_context(pki.ca, pki.rogue_client_cert, pki.rogue_client_key)):
            bad = WireClient(*srv.address, ssl_context=ssl_ctx, timeout=5)
            with pytest.raises(Exception):  # noqa: B017 - TLS 1.3 reports the refusal on first read
                bad.deliver(one())
            bad.close()
        wait_for(lambda: caplog.text.count("TLS handshake with") >= 2, 5, message="server logs both refusals")
    assert len(rec.chunks) == 1
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in caplog.text and "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_bad_tls_files_are_startup_errors(tmp_path, pki):
    with pytest.raises(StartupError, match="cannot load TLS certificate"):
        server_context(str(tmp_path / "missing.crt"), pki.server_key)
    with pytest.raises(StartupError, match="client_ca"):
        server_context(pki.server_cert, pki.server_key, require_client_cert=True)
