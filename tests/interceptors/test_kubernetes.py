"""The kubernetes interceptor: pod identity from the kubelet's log paths (the real-process test is
tests/tail/test_container_e2e.py)."""

from __future__ import annotations

import pytest

from agent.interceptors.kubernetes import KubernetesInterceptor, pod_identity
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.metrics import Metrics
from logflume.settings import parse_settings

UID = "5e4b2a6c-0b3f-4c7e-9a51-2f6d8e1c7a90"
CID = "ab" * 32
POD = {"namespace": "kube-system", "pod": "coredns-5d78c9869d-x2v8k", "pod_uid": UID, "container": "coredns"}


def make(tmp_path, **raw) -> KubernetesInterceptor:
    values = parse_settings(KubernetesInterceptor.schema(), raw, "sources.pods.interceptors[kubernetes]", None)
    return KubernetesInterceptor("pods.kubernetes", values, Context(agent_name="n1", data_dir=tmp_path,
                                                                    metrics=Metrics()))


@pytest.mark.parametrize("path", [
    f"/var/log/pods/kube-system_coredns-5d78c9869d-x2v8k_{UID}/coredns/0.log",
    f"/var/log/pods/kube-system_coredns-5d78c9869d-x2v8k_{UID}/coredns/12.log",
    f"/var/log/pods/kube-system_coredns-5d78c9869d-x2v8k_{UID}/coredns/0.log.20261205-190102",  # rotated
    f"/host/var/log/pods/kube-system_coredns-5d78c9869d-x2v8k_{UID}/coredns/0.log",  # mounted elsewhere
])
def test_pod_log_paths(path):
    assert pod_identity(path) == POD


def test_container_link_without_its_target_has_no_uid():
    path = f"/var/log/containers/coredns-5d78c9869d-x2v8k_kube-system_coredns-{CID}.log"
    assert pod_identity(path) == {k: v for k, v in POD.items() if k != "pod_uid"}


def test_container_link_gets_the_uid_from_its_target(tmp_path):
    target = tmp_path / "pods" / f"kube-system_coredns-5d78c9869d-x2v8k_{UID}" / "coredns" / "0.log"
    target.parent.mkdir(parents=True)
    target.write_text("x\n")
    (tmp_path / "containers").mkdir()
    link = tmp_path / "containers" / f"coredns-5d78c9869d-x2v8k_kube-system_coredns-{CID}.log"
    link.symlink_to(target)
    assert pod_identity(str(link)) == POD
    # a link whose target names another pod is not believed
    other = tmp_path / "containers" / f"web-1_kube-system_coredns-{CID}.log"
    other.symlink_to(target)
    assert "pod_uid" not in pod_identity(str(other))


@pytest.mark.parametrize("path", ["/var/log/syslog", "/var/log/pods/readme.log", f"/var/log/pods/a_b_{UID}/c/x.log",
                                  "/var/log/containers/no-id.log", f"/var/log/pods/A_b_{UID}/c/0.log"])
def test_other_paths_get_nothing(path):
    assert pod_identity(path) == {}


def test_interceptor_sets_prefixed_tags_and_keeps_the_rest(tmp_path):
    icp = make(tmp_path, prefix="k8s.")
    path = f"/var/log/pods/kube-system_coredns-5d78c9869d-x2v8k_{UID}/coredns/0.log"
    c = Chunk("n1", path, "CRI", 3, "e", b"x\n", tags={"cluster": "eu-1", "k8s.pod": "old"})
    shared = c.tags
    other = Chunk("n1", "/var/log/syslog", "Raw", 3, "e", b"y\n", tags={"cluster": "eu-1"})
    out = icp.intercept([c, other])
    assert out[0].tags == {"cluster": "eu-1", **{"k8s." + k: v for k, v in POD.items()}}
    assert shared == {"cluster": "eu-1", "k8s.pod": "old"}  # the source's dict is not mutated
    assert out[1].tags == {"cluster": "eu-1"}
    assert (out[0].data, out[0].seq_id, out[0].epoch) == (b"x\n", 3, "e")  # metadata only
    assert make(tmp_path, preserve_existing=True).intercept(
        [Chunk("n1", path, "CRI", 3, "e", b"x\n", tags={"pod": "mine"})])[0].tags["pod"] == "mine"


def test_bad_prefix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        make(tmp_path, prefix="bad prefix ")
