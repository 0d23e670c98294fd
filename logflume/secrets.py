"""Secrets in configs: never shown back, and never a well-known placeholder on a listener.

Three rules, used by ``logflume check``, ``logflume plugins``, the logs of every
daemon, and any component that holds a token:

* A setting declared :class:`logflume.settings.Secret` is rendered as ``<redacted>``,
  and its value is remembered so that a log line that happens to contain it
  (an exception message, a URL) shows ``<redacted>`` instead.
* In free-form maps (``storage_options``, nested client kwargs) a value is
  redacted when its key names a secret (:func:`is_secret_key`).
* In any string, the password of a URL is replaced: ``sftp://u:pw@h`` becomes
  ``sftp://u:***@h``.

:func:`secret_problem` says why a secret is not one (empty, a known placeholder,
too short); :func:`check_secret` turns that into a warning, or into a
``ConfigError`` when the secret guards a listener bound beyond loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from logflume.errors import ConfigError

REDACTED = "<redacted>"
#: Secrets shorter than this are guessable; 16 random characters are ~95 bits.
MIN_SECRET_LENGTH = 16
#: Values shorter than this are not remembered for log redaction: they would mask ordinary words.
_MIN_REMEMBERED = 4

#: Words that make a key secret (``password``, ``sas_token``, ``secretAccessKey``, ``client_key``...).
SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pass", "pwd", "passphrase", "secret", "secrets", "token", "tokens",
    "key", "pkey", "credential", "credentials", "auth", "authorization", "cookie", "signature", "sas", "apikey",
    "private",
})
#: Last words that make a key name something about a secret, not the secret (``key_filename``, ``auth_timeout``).
NOT_SECRET_LAST_WORDS = frozenset({
    "file", "filename", "path", "dir", "filepath", "keyfile", "fingerprint", "policy", "type", "algorithm",
    "algorithms", "timeout", "length", "size", "id", "name", "url", "method", "methods",
})
#: Whole keys that hold secrets although no single word says so.
SECRET_KEYS = frozenset({"connection_string", "connectionstring", "dsn"})

#: Placeholder values shipped in examples and defaults (compared case-insensitively).
PLACEHOLDERS = frozenset({
    "change-me", "changeme", "change_me", "change-this", "changethis", "replace-me", "replaceme", "secret",
    "password", "passwd", "token", "default", "example", "test", "testing", "admin", "root", "xxx", "xxxx",
    "xxxxxxxx", "your-token", "your-token-here", "your-secret", "mysecret", "my-secret", "s3cr3t", "letmein",
    "123456", "12345678", "none", "null", "todo", "fixme",
})

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

_remembered: set[str] = set()
_remembered_lock = threading.Lock()
_remembered_pattern: re.Pattern[str] | None = None


def is_secret_key(key: str) -> bool:
    """Whether a free-form map key names a secret: a secret word in it, unless it names a file or path."""
    if key.lower() in SECRET_KEYS:
        return True
    words = [w.lower() for w in _WORD.findall(str(key))]
    if not words or words[-1] in NOT_SECRET_LAST_WORDS:
        return False
    return any(w in SECRET_WORDS for w in words)


def redact_url(text: str) -> str:
    """``sftp://user:pw@host/x`` -> ``sftp://user:***@host/x``, for every URL in ``text``."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def remember(value: str) -> None:
    """Register a configured secret so that :func:`redact_text` (and so every log line) hides it."""
    global _remembered_pattern
    if not isinstance(value, str) or len(value) < _MIN_REMEMBERED:
        return
    with _remembered_lock:
        if value in _remembered:
            return
        _remembered.add(value)
        ordered = sorted(_remembered, key=len, reverse=True)  # a longer secret containing a shorter one first
        _remembered_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact_text(text: str) -> str:
    """A message with URL passwords and every remembered secret replaced."""
    text = redact_url(text)
    pattern = _remembered_pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


def redact(value: Any, key: str | None = None) -> Any:
    """A config value fit to print: secret-named keys' values redacted at any depth, URL passwords hidden."""
    if key is not None and is_secret_key(key) and not isinstance(value, bool) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def remember_tree(value: Any, key: str | None = None) -> None:
    """Remember every value :func:`redact` would hide (secret-named keys, URL passwords)."""
    if key is not None and is_secret_key(key) and isinstance(value, str):
        remember(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            remember_tree(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            remember_tree(v)
    elif isinstance(value, str):
        for m in _URL_PASSWORD.finditer(value):
            remember(m.group("pw"))


# -- weak secrets ------------------------------------------------------------------------------

def secret_problem(value: str | None) -> str | None:
    """Why ``value`` is not a secret worth the name (empty, a known placeholder, too short), or None."""
    if value is None or not value.strip():
        return "is empty"
    if value.strip().lower() in PLACEHOLDERS:
        return f"is a well-known placeholder ({len(value)} characters)"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters ({len(value)})"
    return None


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches only this host (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_secret(value: str | None, *, file: str | None, path: str,
                 bind: tuple[str, int] | None = None) -> str | None:
    """A warning for a weak secret, or None; a ``ConfigError`` if it guards a listener beyond loopback.

    ``bind`` is the listen address of the listener the secret guards (None for a
    client-side secret such as an agent's token).  On loopback a weak secret is
    only a warning: quickstarts and tests use them.
    """
    problem = secret_problem(value)
    if problem is None:
        return None
    if bind is not None and not is_loopback(bind[0]):
        raise ConfigError(file, path, f"secret {problem}, and the listener binds {bind[0]}:{bind[1]} beyond "
                                      f"loopback; expected a random secret of at least {MIN_SECRET_LENGTH} "
                                      "characters (e.g. `openssl rand -hex 32`)")
    return f"{path}: secret {problem}; expected a random secret of at least {MIN_SECRET_LENGTH} characters"


def cleartext_warning(path: str, tls: Any, secrets: Iterable[str | None]) -> str | None:
    """A warning when secrets are configured but ``tls`` is off: they would travel in clear."""
    if tls is None and any(s for s in secrets):
        return f"{path}: a token is configured without tls: it travels in clear; expected a tls section"
    return None


# -- logs --------------------------------------------------------------------------------------

class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record's message and traceback through :func:`redact_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's to report
            return True
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True

