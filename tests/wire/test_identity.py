"""Authenticator: tokens, certificate names, both, the open (no credentials) case; sanitized names."""

from __future__ import annotations

from logflume.wire.identity import Authenticator, Credential, Identity, sanitize

CREDS = [
    Credential("web-01", ("web-01",), token="t-web-01"),
    Credential("fleet", ("{certificate}",), certificate="web-*.example.com"),
    Credential("relay", ("*",), token="t-relay", certificate="relay.example.com"),
]


def test_tokens_and_certificates_name_identities():
    auth = Authenticator(CREDS)
    web = auth.authenticate("t-web-01", [], "10.0.0.1:5000")
    assert web == Identity("web-01", ("web-01",)) and web.may_send("web-01") and not web.may_send("web-02")
    fleet = auth.authenticate(None, ["web-07.example.com"], "10.0.0.7:5000")
    assert fleet.name == "fleet" and fleet.may_send("web-07.example.com") and not fleet.may_send("web-08.example.com")
    assert "may not send source 'web-08.example.com'" in fleet.refusal("web-08.example.com")
    assert auth.authenticate("t-relay", ["relay.example.com"], "p:1").name == "relay"


def test_refusals_say_why():
    auth = Authenticator(CREDS)
    assert auth.authenticate("guess", [], "p:1") == "authentication failed: unknown token"
    assert "needs its client certificate" in auth.authenticate("t-relay", [], "p:1")
    assert "certificate db-1.example.com is not a configured identity" in auth.authenticate(None, ["db-1.example.com"],
                                                                                             "p:1")
    assert auth.authenticate(None, [], "p:1").startswith("authentication failed: missing token")
    # a certificate that alone names nobody cannot borrow an identity that needs a token too
    assert isinstance(auth.authenticate(None, ["relay.example.com"], "p:1"), str)


def test_no_credentials_means_anonymous_peers_that_may_send_anything():
    auth = Authenticator()
    assert auth.open
    who = auth.authenticate(None, [], "127.0.0.1:4242")
    assert who.name == "peer:127.0.0.1" and who.may_send("anything")
    assert not Authenticator(require_certificate=True).open


def test_client_supplied_names_are_sanitized():
    assert sanitize("web\n01\x1b[2J") == "web\\x0a01\\x1b[2J"
    assert sanitize("x" * 300).endswith("...") and len(sanitize("x" * 300)) == 258
    assert sanitize(b"\xffbad") == "\ufffdbad"
