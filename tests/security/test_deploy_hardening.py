"""The deploy files are hardened: systemd sandboxing (checked by systemd-analyze where present), Kubernetes contexts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("logflume-agent.service", "logflume-collector.service")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
#: systemd-analyze security's score (0 = fully sandboxed, 10 = unprotected); both units were 3.4-3.8 before.
MAX_EXPOSURE = 2.0


def directives(unit: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (systemd allows repeated keys such as SystemCallFilter)."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / unit).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


REQUIRED = {
    "ProtectKernelLogs": "true", "ProtectKernelTunables": "true", "ProtectKernelModules": "true",
    "ProtectControlGroups": "true", "ProtectProc": "invisible", "ProtectSystem": "strict", "UMask": "0077",
    "StateDirectoryMode": "0700", "NoNewPrivileges": "true", "PrivateTmp": "true", "PrivateDevices": "true",
    "PrivateMounts": "true", "RestrictSUIDSGID": "true", "RestrictNamespaces": "true", "LockPersonality": "true",
    "RemoveIPC": "true", "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
}


@pytest.mark.parametrize("unit", UNITS)
def test_unit_has_the_hardening(unit):
    d = directives(unit)
    wrong = {k: d.get(k) for k, v in REQUIRED.items() if d.get(k) != [v]}
    assert not wrong, f"{unit}: expected {{key: [value]}} for {wrong}"
    assert "@system-service" in d["SystemCallFilter"][0]
    assert any(v.startswith("~") and "@privileged" in v for v in d["SystemCallFilter"])
    assert d["User"] != ["root"] and d["ReadWritePaths"] == ["/var/lib/logflume"]


def test_agent_keeps_what_a_log_reader_needs():
    d = directives("logflume-agent.service")
    assert "adm" in d["SupplementaryGroups"][0].split()  # reads /var/log without root
    assert d["ProtectHome"] == ["read-only"]  # logs under /home stay readable, never writable
    assert "ProcSubset" not in d  # `type: exec` commands may read /proc


def _testable_copy(tmp_path: Path, unit: str) -> Path:
    """The unit with its binary pointed at one that exists here (verify checks ExecStart paths)."""
    text = (DEPLOY / "systemd" / unit).read_text().replace("/usr/bin/logflume", shutil.which("true") or "/bin/true")
    path = tmp_path / unit
    path.write_text(text)
    return path


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_clean(tmp_path, unit):
    res = subprocess.run([SYSTEMD_ANALYZE, "verify", str(_testable_copy(tmp_path, unit))],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_security_exposure(tmp_path, unit):
    res = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(_testable_copy(tmp_path, unit))],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0 and "offline" in res.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout[-2000:]
    assert float(m.group(1)) <= MAX_EXPOSURE, res.stdout
    failed = [line for line in res.stdout.splitlines() if line.startswith("✗")]
    for setting in ("ProtectKernelLogs=", "ProtectProc=", "SystemCallFilter=", "UMask=", "PrivateDevices="):
        assert not [line for line in failed if line.split()[1].startswith(setting)], "\n".join(failed)


def _docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()))


def _workload(name: str, kind: str) -> dict:
    return next(d for d in _docs(name) if d["kind"] == kind)["spec"]["template"]["spec"]


def _locked_down(ctx: dict) -> None:
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]


def test_agent_daemonset_state_dir_is_made_private_and_logs_read_only():
    pod = _workload("agent-daemonset.yaml", "DaemonSet")
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["hostPath"]["type"] == "DirectoryOrCreate"
    init = pod["initContainers"][0]
    mount = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "state")
    assert init["command"] == ["chmod", "0700", mount]
    _locked_down(init["securityContext"])
    assert "add" not in init["securityContext"]["capabilities"]
    agent = pod["containers"][0]
    _locked_down(agent["securityContext"])
    assert agent["securityContext"]["capabilities"]["add"] == ["DAC_READ_SEARCH"]  # read logs, nothing else
    varlog = next(m for m in agent["volumeMounts"] if m["name"] == "varlog")
    assert varlog["readOnly"] is True
    assert next(m["mountPath"] for m in agent["volumeMounts"] if m["name"] == "state") == mount


def test_collector_runs_as_the_images_numeric_non_root_user():
    pod = _workload("collector-statefulset.yaml", "StatefulSet")
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile).group(1)
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", dockerfile).group(1)
    assert re.search(rf"^USER {uid}:{gid}$", dockerfile, re.M), "runAsNonRoot needs a numeric USER"
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (int(uid), int(gid), int(gid))
    container = pod["containers"][0]
    _locked_down(container["securityContext"])
    assert "add" not in container["securityContext"]["capabilities"]
