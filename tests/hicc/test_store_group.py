"""HICC on a collector whose store is a group (``type: group``): the primary column says up/DOWN, with members'.

The group's members have the primaries, not the group: HICC once read only the ``store`` block and showed "-".
"""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.conftest import free_port
from tests.hicc.conftest import answers, get_json, wait_for, write_yaml

pytestmark = pytest.mark.timeout(180)


def buffer_member(tmp_path, key: str) -> dict:
    return {"type": "buffer", "primary": {"type": "seqfile", "url": str(tmp_path / key), "roll_interval": "1s"},
            "secondary": {"dir": str(tmp_path / f"{key}-secondary")}}


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_group_store_primary_and_members(tmp_path, logflume_proc):
    cport, cmport, hport = free_port(), free_port(), free_port()
    collector = write_yaml(tmp_path / "collector.yaml", {
        "collector": {"name": "c1", "listen": f"127.0.0.1:{cport}", "metrics": f"127.0.0.1:{cmport}",
                      "data_dir": str(tmp_path / "cdata")},
        "store": {"type": "group", "processor": "load_balance",
                  "sinks": {"disk1": buffer_member(tmp_path, "disk1"), "disk2": buffer_member(tmp_path, "disk2")}},
    })
    hicc = write_yaml(tmp_path / "hicc.yaml", {"hicc": {
        "listen": f"127.0.0.1:{hport}", "data_dir": str(tmp_path / "hicc"), "agents": [],
        "collectors": [f"127.0.0.1:{cmport}"], "poll_interval": "500ms", "poll_timeout": "1s", "refresh": "1s"}})
    logflume_proc(["collector", "-c", collector], name="collector")
    # Generous waits: two daemons start on a 2-core machine that may be busy (a full suite at load 29 once
    # took more than 30 s to bring HICC up).
    wait_for(lambda: answers(f"http://127.0.0.1:{cmport}/health"), 90, message="collector up")
    published = get_json(f"http://127.0.0.1:{cmport}/status")
    assert published["store"]["primary_up"] is True, published["store"]
    logflume_proc(["hicc", "-c", hicc], name="hicc")
    base = f"http://127.0.0.1:{hport}"
    wait_for(lambda: answers(base + "/api/targets"), 90, message="hicc up")
    wait_for(lambda: all(t["state"] == "up" for t in get_json(base + "/api/targets")), 30, message="collector polled")

    stores = text(page(base + "/store").split('id="stores"', 1)[1].split("</table>", 1)[0])
    assert "c1 StoreGroup up disk1: up, disk2: up" in stores, stores
    collectors = text(page(base + "/").split('id="collectors"', 1)[1].split("</table>", 1)[0])
    assert " up disk1: up, disk2: up " in collectors, collectors
