"""The few Kubernetes API calls the reconciler makes, through the official client.

A client is built from a kubeconfig held in memory (the text the database keeps; nothing
is written but the client's own temporary certificate files, in a private directory).
Objects travel as plain JSON dictionaries, as the API server sends them, so what the code
reads is what `kubectl get -o json` shows. Every failure becomes one KubeError whose text
a person can act on: the verb and resource the API server refused (a kubeconfig without
rights), or that it could not be reached (retried with backoff by the caller).

Changes to a Node are merge patches that carry the resourceVersion they were computed
from: a Node the kubelet or another controller changed meanwhile is a 409, and the caller
reads it again instead of overwriting taints it never saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"
Obj = dict[str, Any]


class KubeError(RuntimeError):
    """One line: what was asked of the API server and why it did not happen."""

    retry = True


class KubeUnreachable(KubeError):
    pass


class KubeForbidden(KubeError):
    retry = False  # the kubeconfig lacks a right: the same call fails until someone fixes it


class KubeNotFound(KubeError):
    pass


class KubeConflict(KubeError):
    pass


class KubeBusy(KubeError):
    """429: an eviction a PodDisruptionBudget does not allow now."""


def api_server(kubeconfig: str) -> str:
    """The server URL of the kubeconfig's current context; ValueError when it has none."""
    try:
        data = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as exc:
        raise ValueError(f"kubeconfig is not YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # "[[[[..." thousands deep: PyYAML's composer recurses
        raise ValueError("kubeconfig is nested too deeply to be a kubeconfig") from None
    if not isinstance(data, dict):
        raise ValueError("kubeconfig is not a mapping")
    try:
        contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []}
        current = contexts.get(data.get("current-context")) or next(iter(contexts.values()), {})
        clusters = {c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or []}
        server = (clusters.get(current.get("cluster")) or {}).get("server", "")
    except (AttributeError, TypeError):  # a context or cluster that is not a mapping
        raise ValueError("kubeconfig's contexts and clusters must be lists of mappings") from None
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ValueError("kubeconfig names no API server (clusters[].cluster.server)")
    if not data.get("users"):
        raise ValueError("kubeconfig has no user credentials")
    return server


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason or exc.status)


class Kube:
    def __init__(self, kubeconfig: str, tmp_dir: Path, timeout: float = 10.0) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg = client.Configuration()
        config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
            yaml.safe_load(kubeconfig),
            client_configuration=cfg,
            persist_config=False,
            temp_file_path=str(tmp_dir),
        )
        cfg.retries = 0  # the reconciler retries with backoff; the client must not hide an outage
        self.server = str(cfg.host)
        self.timeout = timeout
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.policy = (
            client.PolicyV1Api(self.api_client) if hasattr(client, "PolicyV1Api") else None
        )

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def _call(self, verb: str, resource: str, name: str, fn: Callable[[], Any]) -> Any:
        what = f"{resource} {name}".strip()
        try:
            result = fn()
        except ApiException as exc:
            msg = _message(exc)
            if exc.status == 403:
                raise KubeForbidden(f"the API server refused to {verb} {what}: {msg}") from None
            if exc.status == 401:
                raise KubeForbidden(
                    f"the API server refused the kubeconfig's credentials ({verb} {what}): {msg}"
                ) from None
            if exc.status == 404:
                raise KubeNotFound(f"{what}: not found") from None
            if exc.status == 409:
                raise KubeConflict(f"{verb} {what}: {msg}") from None
            if exc.status == 429:
                raise KubeBusy(f"{verb} {what}: {msg}") from None
            raise KubeError(f"{verb} {what}: HTTP {exc.status}: {msg}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnreachable(
                f"API server {self.server} unreachable ({verb} {what}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            ) from None
        return self.api_client.sanitize_for_serialization(result)  # type: ignore[no-untyped-call]

    # --- nodes ----------------------------------------------------------------------------
    def get_node(self, name: str) -> Obj:
        node: Obj = self._call(
            "get", "nodes", name, lambda: self.core.read_node(name, _request_timeout=self.timeout)
        )
        return node

    def find_node(self, name: str, system_uuid: str = "") -> Obj | None:
        """The Node called `name`, else the one whose kubelet reports this machine's
        system UUID (a kubelet registered under another name: --hostname-override, a
        cloud provider's naming); None when neither exists."""
        try:
            return self.get_node(name)
        except KubeNotFound:
            if not system_uuid:
                return None
        listed = self._call(
            "list", "nodes", "", lambda: self.core.list_node(_request_timeout=self.timeout)
        )
        want = system_uuid.lower()
        for item in listed.get("items") or []:
            info = (item.get("status") or {}).get("nodeInfo") or {}
            if str(info.get("systemUUID", "")).lower() == want:
                found: Obj = item
                return found
        return None

    def patch_node(self, node: Obj, spec: Obj) -> Obj:
        """Merge `spec` into the Node's spec, guarded by the resourceVersion it was read at
        (KubeConflict when it changed since)."""
        meta = node["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": spec}
        patched: Obj = self._call(
            "patch",
            "nodes",
            meta["name"],
            lambda: self.core.patch_node(
                meta["name"], body, _content_type=MERGE_PATCH, _request_timeout=self.timeout
            ),
        )
        return patched

    def delete_node(self, name: str) -> bool:
        """Delete the Node; False when it was already gone."""
        try:
            self._call(
                "delete",
                "nodes",
                name,
                lambda: self.core.delete_node(name, _request_timeout=self.timeout),
            )
        except KubeNotFound:
            return False
        return True

    # --- drain ----------------------------------------------------------------------------
    def pods_on(self, name: str) -> list[Obj]:
        """Pods a drain evicts: not DaemonSet pods (their controller ignores cordons) and
        not mirror pods (the kubelet owns them), as `kubectl drain` leaves them."""
        listed = self._call(
            "list",
            "pods",
            "",
            lambda: self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={name}", _request_timeout=self.timeout
            ),
        )
        out = []
        for pod in listed.get("items") or []:
            meta = pod.get("metadata") or {}
            owners = meta.get("ownerReferences") or []
            if any(o.get("kind") == "DaemonSet" for o in owners):
                continue
            if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
                continue
            out.append(pod)
        return out

    def evict(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"]),
        )
        try:
            self._call(
                "create",
                "pods/eviction",
                f"{meta['namespace']}/{meta['name']}",
                lambda: self.core.create_namespaced_pod_eviction(
                    meta["name"], meta["namespace"], body, _request_timeout=self.timeout
                ),
            )
        except KubeNotFound:
            return  # gone already: what an eviction wanted

    def drain(
        self,
        name: str,
        timeout: float,
        poll: float = 1.0,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> list[str]:
        """Evict every pod a drain moves, through the Eviction API so PodDisruptionBudgets
        hold (a 429 is tried again until `timeout`); returns the pods still there at the
        end ([] when drained)."""
        deadline = time.monotonic() + timeout
        while True:
            pods = self.pods_on(name)
            blocked = []
            for pod in pods:
                try:
                    self.evict(pod)
                except KubeBusy:
                    blocked.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
            if not pods:
                return []
            if time.monotonic() >= deadline or not keep_going():
                return blocked or [
                    f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods
                ]
            time.sleep(poll)


def condition(node: Obj, kind: str) -> tuple[str, str]:
    """(status, "reason: message") of a Node condition; ("Unknown", "no X condition")."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            return str(c.get("status", "Unknown")), why
    return "Unknown", f"no {kind} condition yet"


def taints(node: Obj) -> list[Obj]:
    return list((node.get("spec") or {}).get("taints") or [])


def allocatable(node: Obj, resource: str) -> str | None:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
    return None if value is None else str(value)
