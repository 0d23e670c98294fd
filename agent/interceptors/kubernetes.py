"""kubernetes: the pod identity of a container's log file, from its path alone (no API server).

The kubelet names every container log by who wrote it:

* ``/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log``: the file itself
  (rotated copies get ``.<time>`` appended);
* ``/var/log/containers/<pod>_<namespace>_<container>-<container id>.log``: a symbolic link to it.

Namespace, pod and container names are DNS labels or subdomains, which never hold ``_``, so the
names split unambiguously.  A stream under ``containers/`` has no pod uid in its name: it is read from
the link's target (which is the ``pods/`` path) when the link is still there.  The tags are worked out
once per stream (a cache bounded like regex_extractor's), so the cost per chunk is one dict lookup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.interceptor import Interceptor, with_tags
from logflume.settings import Bool, Setting, Str

_NAME = r"[a-z0-9](?:[a-z0-9.-]{0,252})"
_POD_FILE = re.compile(
    rf"(?:^|/)(?P<namespace>{_NAME})_(?P<pod>{_NAME})_(?P<pod_uid>[0-9a-fA-F-]{{8,64}})"
    rf"/(?P<container>{_NAME})/[0-9]{{1,9}}\.log(?:\.[^/]*)?\Z")
_CONTAINER_LINK = re.compile(
    rf"(?:^|/)(?P<pod>{_NAME})_(?P<namespace>{_NAME})_(?P<container>{_NAME})-(?P<container_id>[0-9a-f]{{8,128}})"
    r"\.log\Z")
#: Streams whose tags are remembered (a node runs at most a few hundred containers, each with a few files).
_CACHE_MAX = 4096


def pod_identity(path: str, *, resolve_links: bool = True) -> dict[str, str]:
    """``namespace``, ``pod``, ``pod_uid``, ``container`` (those the path holds) of a kubelet log path."""
    m = _POD_FILE.search(path)
    if m is not None:
        return m.groupdict()
    m = _CONTAINER_LINK.search(path)
    if m is None:
        return {}
    found = {k: m.group(k) for k in ("namespace", "pod", "container")}
    if resolve_links:
        try:
            target = os.readlink(path)
        except OSError:
            return found  # the pod is gone (or the file is not a link): no uid to be had
        linked = _POD_FILE.search(target)
        if linked is not None and all(linked.group(k) == v for k, v in found.items()):
            found["pod_uid"] = linked.group("pod_uid")
    return found


class KubernetesInterceptor(Interceptor):
    """Tags each chunk of a kubelet container log with ``namespace``, ``pod``, ``pod_uid`` and ``container``.

    Chunk-level: metadata only.  A stream that is not a kubelet log path keeps its tags.
    """

    settings: ClassVar[dict[str, Setting]] = {
        "prefix": Setting(Str(), "", "Prefix of the tag names (e.g. 'k8s.': k8s.namespace, k8s.pod, ...)"),
        "preserve_existing": Setting(Bool(), False, "Keep a tag the chunk already has"),
    }

    def configure(self) -> None:
        problem = Chunk("x", "x", "Raw", 0, "", b"", tags={self.config.prefix + "pod_uid": ""}).metadata_error()
        if problem:
            raise ValueError(f"prefix makes tag names collectors refuse: {problem}")
        self._cache: dict[str, dict[str, str]] = {}

    def _tags(self, stream: str) -> dict[str, str]:
        tags = self._cache.get(stream)
        if tags is None:
            prefix = self.config.prefix
            tags = {prefix + k: v for k, v in pod_identity(stream).items()}
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            if prefix + "pod_uid" in tags or not tags:  # a link read before its uid was found is looked at again
                self._cache[stream] = tags
        return tags

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        for chunk in chunks:
            tags = self._tags(chunk.stream)
            if tags:
                with_tags(chunk, tags, self.config.preserve_existing)
        return chunks
