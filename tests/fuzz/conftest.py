"""Fixtures the fuzz tests share with the suites of the code they fuzz."""

from tests.wire.conftest import serving, wire_server  # noqa: F401 - a real TcpServer on loopback
