"""Hypothesis against the live servers: random, malformed and oversized messages to every
method of the agent's and the inventory's APIs. No input may crash a server or produce an
internal error (UNKNOWN or INTERNAL): each gets a proper status or a proper answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeagent.api.v1 import agent_pb2, inventory_pb2
from testbed.agent_process import AgentProcess
from tests.inventory.conftest import ServiceThread, service_factory

__all__ = ["service_factory"]
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
STATS = {"inputs": 0}
AGENT = agent_pb2.DESCRIPTOR.services_by_name["NodeAgent"]
INVENTORY = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"]


def _payloads() -> st.SearchStrategy[bytes]:
    """Raw bytes, truncated/garbled valid messages, and real messages with hostile strings."""
    text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300)
    return st.one_of(
        st.binary(max_size=512),
        st.binary(min_size=70_000, max_size=80_000),  # over the agent's request limit
        st.builds(
            lambda s: inventory_pb2.ListNodesRequest(pool=s, cluster=s).SerializeToString(), text
        ),
        st.builds(
            lambda s, n: inventory_pb2.HeartbeatRequest(
                node_id=s, phase=s, inventory_hash=s * n
            ).SerializeToString(),
            text,
            st.integers(0, 3),
        ),
        st.builds(
            lambda s: inventory_pb2.RegisterRequest(token=s, csr_pem=s).SerializeToString(), text
        ),
        st.builds(lambda s: agent_pb2.WatchEventsRequest(kinds=[s]).SerializeToString(), text),
        # re-enrol tokens and certificates (list, revoke)
        st.builds(
            lambda s, n: inventory_pb2.CreateTokenRequest(
                reenrol_node=s, max_uses=n
            ).SerializeToString(),
            text,
            st.integers(0, 3),
        ),
        st.builds(
            lambda s: inventory_pb2.RevokeCertificateRequest(
                serial=s, reason=s
            ).SerializeToString(),
            text,
        ),
        st.builds(
            lambda s, b: inventory_pb2.ListCertificatesRequest(
                node_id=s, role=s, include_expired=b
            ).SerializeToString(),
            text,
            st.booleans(),
        ),
    )


def _call(channel: grpc.Channel, service: object, method: object, payload: bytes) -> None:
    path = f"/{service.full_name}/{method.name}"  # type: ignore[attr-defined]
    raw = lambda b: b  # noqa: E731
    if method.server_streaming:  # type: ignore[attr-defined]
        stub = channel.unary_stream(path, request_serializer=raw, response_deserializer=raw)
        try:
            for _ in stub(payload, timeout=2):
                break
        except grpc.RpcError as exc:
            assert exc.code() not in BAD, f"{path}: {exc.code()} {exc.details()}"
        return
    stub = channel.unary_unary(path, request_serializer=raw, response_deserializer=raw)
    try:
        stub(payload, timeout=5)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return
        assert exc.code() not in BAD, f"{path}: {exc.code()} {exc.details()}"


@pytest.fixture(scope="module")
def live_agent(
    machine_root: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("agent"), machine_root("cpu-node"))
    proc.start()
    yield proc
    proc.close()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(list(AGENT.methods)), payload=_payloads())
def test_fuzz_agent(live_agent: AgentProcess, method: object, payload: bytes) -> None:
    STATS["inputs"] += 1
    with live_agent.channel() as channel:
        _call(channel, AGENT, method, payload)
    assert live_agent.proc is not None and live_agent.proc.poll() is None, "the agent died"


@pytest.fixture
def live_inventory(service_factory: Callable[..., ServiceThread], scratch: Path) -> ServiceThread:
    return service_factory(f"sqlite:///{scratch / 'fuzz.db'}")


def test_fuzz_inventory(live_inventory: ServiceThread) -> None:
    admin = live_inventory.admin()
    boot = live_inventory.bootstrap_client()

    @settings(max_examples=100, deadline=None)
    @given(
        method=st.sampled_from(list(INVENTORY.methods)),
        payload=_payloads(),
        anonymous=st.booleans(),
    )
    def run(method: object, payload: bytes, anonymous: bool) -> None:
        STATS["inputs"] += 1
        _call(boot.channel if anonymous else admin.channel, INVENTORY, method, payload)

    run()
    # still healthy and consistent afterwards
    assert admin.ListNodes(inventory_pb2.ListNodesRequest()).total >= 0
    boot.close()
    admin.close()


def test_fuzz_report(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\nRPC fuzz: {STATS['inputs']} inputs tried against the live agent and inventory, "
            "0 crashes, 0 internal errors"
        )


SECURITY_RPCS = ("CreateToken", "ListCertificates", "RevokeCertificate", "Register")


def test_fuzz_reenrol_and_certificate_rpcs(live_inventory: ServiceThread) -> None:
    """The RPCs of enrolment and revocation each get their own share of inputs."""
    admin = live_inventory.admin()
    methods = [m for m in INVENTORY.methods if m.name in SECURITY_RPCS]
    assert len(methods) == len(SECURITY_RPCS)

    @settings(max_examples=60, deadline=None)
    @given(method=st.sampled_from(methods), payload=_payloads())
    def run(method: object, payload: bytes) -> None:
        STATS["inputs"] += 1
        _call(admin.channel, INVENTORY, method, payload)

    run()
    # nothing a fuzzer sent revoked the admin's own certificate or broke the list
    listed = admin.ListCertificates(inventory_pb2.ListCertificatesRequest(include_expired=True))
    assert all(c.serial for c in listed.certificates)
    assert admin.ListNodes(inventory_pb2.ListNodesRequest()).total >= 0
    admin.close()


NODE_LIFE_RPCS = ("QuarantineNode", "ReleaseNode", "SetKubeconfig", "ExportGpuOperator")


def _node_life_payloads() -> st.SearchStrategy[bytes]:
    """Hostile reasons, cluster names and kubeconfigs (YAML that is not one, or one naming
    no server), beside the raw bytes every RPC gets."""
    text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300)
    kubeconfig = st.one_of(
        text,
        st.just("apiVersion: v1\nclusters: [{name: c, cluster: {server: file:///etc}}]\n"),
        st.just("users: [{name: u}]\ncontexts: {}\ncurrent-context: 7\n"),
        st.just("[" * 5000),
    )
    return st.one_of(
        st.binary(max_size=512),
        st.builds(
            lambda n, r: inventory_pb2.NodeActionRequest(node_id=n, reason=r).SerializeToString(),
            text,
            text,
        ),
        st.builds(
            lambda c, k: inventory_pb2.SetKubeconfigRequest(
                cluster=c, kubeconfig=k
            ).SerializeToString(),
            text,
            kubeconfig,
        ),
        st.builds(
            lambda c: inventory_pb2.ExportGpuOperatorRequest(cluster=c).SerializeToString(), text
        ),
    )


def test_fuzz_node_life_rpcs(live_inventory: ServiceThread) -> None:
    """Quarantine, release, the cluster's kubeconfig and the GPU Operator export each get
    their own share of inputs (issue 16)."""
    admin = live_inventory.admin()
    methods = [m for m in INVENTORY.methods if m.name in NODE_LIFE_RPCS]
    assert len(methods) == len(NODE_LIFE_RPCS)

    @settings(max_examples=60, deadline=None)
    @given(method=st.sampled_from(methods), payload=_node_life_payloads())
    def run(method: object, payload: bytes) -> None:
        STATS["inputs"] += 1
        _call(admin.channel, INVENTORY, method, payload)

    run()
    assert admin.ListClusters(inventory_pb2.ListClustersRequest()).clusters == []
    admin.close()
