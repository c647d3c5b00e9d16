"""A kubeconfig an admin uploads is read before anything is stored: whatever its shape, a
bad one is refused with one line saying why (the RPC turns it into INVALID_ARGUMENT)."""

from __future__ import annotations

import pytest

from nodeagent.inventory.kube import api_server

GOOD = """
apiVersion: v1
clusters:
- name: c
  cluster: {server: "https://10.0.0.1:6443"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
users:
- name: u
  user: {token: t}
"""


def test_the_current_contexts_server_is_read() -> None:
    assert api_server(GOOD) == "https://10.0.0.1:6443"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[" * 5000 + "]" * 5000, "kubeconfig is nested too deeply to be a kubeconfig"),
        (
            "contexts: [1, 2]\nusers: [a]\n",
            "kubeconfig's contexts and clusters must be lists of mappings",
        ),
        ("contexts: 7\n", "kubeconfig's contexts and clusters must be lists of mappings"),
        ("clusters: [[x]]\n", "kubeconfig's contexts and clusters must be lists of mappings"),
        ("- a\n- b\n", "kubeconfig is not a mapping"),
        ("a: [\n", "kubeconfig is not YAML: while parsing a flow node"),
        (
            GOOD.replace("https://10.0.0.1:6443", "ftp://x"),
            "kubeconfig names no API server (clusters[].cluster.server)",
        ),
        (GOOD.split("users:")[0], "kubeconfig has no user credentials"),
    ],
)
def test_a_bad_kubeconfig_is_refused_with_its_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        api_server(text)
    assert str(err.value) == why
