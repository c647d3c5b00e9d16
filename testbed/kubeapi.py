"""A local DOUBLE of the Kubernetes API server, for the reconciler's tests and the demo.

This is not kube-apiserver: none can be installed from the registries the test machines
reach (Debian ships only kubectl and etcd). It is a small HTTP server on loopback that the
official `kubernetes` client talks to through an ordinary kubeconfig, answering the few
requests nodeagent makes with Node objects shaped after `testbed/data/kube/node.json` and the
apiserver's own Status bodies (provenance in `testbed/data/kube/README.md`). It enforces the
semantics the reconciler relies on, so a test fails where a real server would refuse:

- a bearer token is required (401 without it), and a (verb, resource) can be forbidden (403
  with the apiserver's message, naming the user, verb and resource);
- PATCH accepts only `application/merge-patch+json` (415 otherwise), and a patch carrying
  `metadata.resourceVersion` that is not the object's current one is a 409 Conflict; every
  write bumps the resourceVersion;
- an eviction of a pod covered by a PodDisruptionBudget with no disruption allowed is a 429
  `TooManyRequests`; others delete the pod (201);
- `down` makes every request fail at the connection (an unreachable server).

Every request is recorded (`requests`), so a test can say that no write happened twice.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

NODE_TEMPLATE = Path(__file__).resolve().parent / "data" / "kube" / "node.json"
MERGE_PATCH = "application/merge-patch+json"


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


@dataclass
class KubeApiDouble:
    token: str = "nodeagent-test-token"
    user: str = "system:serviceaccount:kube-system:nodeagent"
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    # PodDisruptionBudgets: (namespace, label key, label value, disruptions allowed)
    pdbs: list[tuple[str, str, str, int]] = field(default_factory=list)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    down: bool = False

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._version = 100
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                double._handle(self, "GET")

            def do_PATCH(self) -> None:
                double._handle(self, "PATCH")

            def do_POST(self) -> None:
                double._handle(self, "POST")

            def do_DELETE(self) -> None:
                double._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- the test's side ------------------------------------------------------------------
    def start(self) -> KubeApiDouble:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, token: str | None = None) -> str:
        """A kubeconfig as kubeadm's admin.conf is laid out, with a bearer token."""
        return (
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
            f"    server: {self.url}\n  name: cluster.local\ncontexts:\n- context:\n"
            "    cluster: cluster.local\n    user: nodeagent\n  name: nodeagent@cluster.local\n"
            "current-context: nodeagent@cluster.local\npreferences: {}\nusers:\n"
            f"- name: nodeagent\n  user:\n    token: {token or self.token}\n"
        )

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def add_node(
        self, name: str, ip: str = "10.0.8.21", system_uuid: str = "", ready: bool = False
    ) -> dict[str, Any]:
        """A Node as a kubelet registers it after `kubeadm join` (with Kubespray's taints)."""
        text = NODE_TEMPLATE.read_text()
        text = text.replace("NODE_NAME", name).replace("NODE_IP", ip)
        node: dict[str, Any] = json.loads(text.replace("SYSTEM_UUID", system_uuid))
        with self.lock:
            self._bump(node)
            self.nodes[name] = node
        if ready:
            self.set_ready(name)
        return node

    def set_ready(self, name: str, ready: bool = True) -> None:
        with self.lock:
            node = self.nodes[name]
            for c in node["status"]["conditions"]:
                if c["type"] == "Ready":
                    c.update(
                        {
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                        if ready
                        else {
                            "status": "False",
                            "reason": "KubeletNotReady",
                            "message": "PLEG is not healthy: pleg was last seen active 3m0s ago",
                        }
                    )
            self._bump(node)

    def set_allocatable(self, name: str, resource: str, value: str) -> None:
        with self.lock:
            node = self.nodes[name]
            node["status"]["capacity"][resource] = value
            node["status"]["allocatable"][resource] = value
            self._bump(node)

    def add_pod(
        self,
        name: str,
        node: str,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        daemonset: bool = False,
    ) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
        if daemonset:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": name,
                    "uid": "9a1c2f0e-5b1d-4c3e-8f7a-0d2b6e4c1a93",
                    "controller": True,
                }
            ]
        with self.lock:
            self.pods.append(
                {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "metadata": meta,
                    "spec": {
                        "nodeName": node,
                        "containers": [{"name": name, "image": "registry.k8s.io/pause:3.10"}],
                    },
                    "status": {"phase": "Running"},
                }
            )

    def writes(self, method: str = "", path_part: str = "") -> list[tuple[str, str, Any]]:
        return [
            r
            for r in self.requests
            if r[0] != "GET" and (not method or r[0] == method) and path_part in r[1]
        ]

    # --- the server's side ----------------------------------------------------------------
    def _reply(self, h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if self.down:
            h.close_connection = True
            h.connection.close()
            return
        url = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self.lock:
            self.requests.append((method, url.path, body))
            code, reply = self._route(method, url.path, parse_qs(url.query), h, body)
        self._reply(h, code, reply)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], h: Any, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        parts = path.strip("/").split("/")
        verb = {"GET": "get", "PATCH": "patch", "POST": "create", "DELETE": "delete"}[method]
        if parts == ["api", "v1", "nodes"]:
            return self._guard("list", "nodes", "", lambda: self._list_nodes())
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            name = parts[3]
            return self._guard(verb, "nodes", name, lambda: self._node(method, name, h, body))
        if parts == ["api", "v1", "pods"]:
            selector = (query.get("fieldSelector") or [""])[0]
            return self._guard("list", "pods", "", lambda: self._list_pods(selector))
        if len(parts) == 7 and parts[2] == "namespaces" and parts[6] == "eviction":
            ns, pod = parts[3], parts[5]
            return self._guard("create", "pods/eviction", pod, lambda: self._evict(ns, pod))
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def _guard(self, verb: str, resource: str, name: str, then: Any) -> tuple[int, dict[str, Any]]:
        if (verb, resource) in self.forbidden:
            res = resource.partition("/")[0]
            what = f'{res} "{name}"' if name else res
            where = f'resource "{resource}" in API group ""'
            scope = "at the cluster scope" if res == "nodes" else 'in the namespace "default"'
            return 403, status(
                403,
                "Forbidden",
                f'{what} is forbidden: User "{self.user}" cannot {verb} {where} {scope}',
                name=name,
                kind=res,
            )
        result: tuple[int, dict[str, Any]] = then()
        return result

    def _list_nodes(self) -> tuple[int, dict[str, Any]]:
        items = [copy.deepcopy(n) for n in self.nodes.values()]
        return 200, {
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _not_found(self, name: str) -> tuple[int, dict[str, Any]]:
        return 404, status(404, "NotFound", f'nodes "{name}" not found', name=name, kind="nodes")

    def _node(self, method: str, name: str, h: Any, body: Any) -> tuple[int, dict[str, Any]]:
        node = self.nodes.get(name)
        if node is None:
            return self._not_found(name)
        if method == "GET":
            return 200, copy.deepcopy(node)
        if method == "DELETE":
            del self.nodes[name]
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": "nodes", "uid": node["metadata"]["uid"]},
            }
        if method == "PATCH":
            kind = (h.headers.get("Content-Type") or "").split(";")[0].strip()
            if kind != MERGE_PATCH:
                return 415, status(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown "
                    f"format - accepted media types include: {MERGE_PATCH}",
                )
            wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != node["metadata"]["resourceVersion"]:
                return 409, status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on nodes "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    name=name,
                    kind="nodes",
                )
            patched = merge(node, body)
            self.nodes[name] = patched
            self._bump(patched)
            return 200, copy.deepcopy(patched)
        return 405, status(405, "MethodNotAllowed", "the server does not allow this method")

    def _list_pods(self, selector: str) -> tuple[int, dict[str, Any]]:
        node = selector.removeprefix("spec.nodeName=")
        items = [copy.deepcopy(p) for p in self.pods if p["spec"]["nodeName"] == node]
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def _evict(self, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        pod = next(
            (
                p
                for p in self.pods
                if p["metadata"]["name"] == name and p["metadata"]["namespace"] == ns
            ),
            None,
        )
        if pod is None:
            return 404, status(404, "NotFound", f'pods "{name}" not found', name=name)
        labels = pod["metadata"]["labels"]
        for pdb_ns, key, value, allowed in self.pdbs:
            if pdb_ns == ns and labels.get(key) == value and allowed <= 0:
                return 429, status(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    causes=[
                        {
                            "reason": "DisruptionBudget",
                            "message": "The disruption budget needs 1 healthy pods and has 1 "
                            "currently",
                        }
                    ],
                )
        self.pods.remove(pod)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
