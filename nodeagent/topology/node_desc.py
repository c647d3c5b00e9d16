"""Set each HCA's NodeDescription to `<hostname> <device>` so fabric tools can name hosts.

Without rdma-ndd an HCA describes itself as `MT4129 ConnectX7   Mellanox Technologies`,
which ibnetdiscover-based tools (Topograph among them) cannot map to a host; they take
the first word of the description as the node name. `/sys/class/infiniband/<dev>/
node_desc` is writable, and this is the one place nodeagent writes it. It writes
through the HostRoot's path, so tests point it at a throwaway root.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.host import HostRoot

IB_CLASS = "sys/class/infiniband"
MAX_BYTES = 64  # NodeDescription is 64 bytes on the wire
DEFAULT_TEMPLATE = "{hostname} {device}"


@dataclass(frozen=True)
class Change:
    device: str
    before: str
    after: str


def desired(hostname: str, device: str, template: str = DEFAULT_TEMPLATE) -> str:
    text = template.format(hostname=hostname, device=device)
    return text.encode()[:MAX_BYTES].decode("utf-8", "ignore")


def set_node_descriptions(
    root: HostRoot, hostname: str, template: str = DEFAULT_TEMPLATE
) -> list[Change]:
    """Write every device whose description differs; return what changed.

    Idempotent: an unchanged description is not rewritten (each write makes the
    subnet manager see a trap and re-read it). Raises OSError when a write fails.
    """
    if not hostname:
        raise ValueError("no hostname to write into the node descriptions")
    changes = []
    for device in root.listdir(IB_CLASS):
        rel = f"{IB_CLASS}/{device}/node_desc"
        if not root.exists(rel):
            continue
        before = root.attr(rel)
        after = desired(hostname, device, template)
        if before == after:
            continue
        with open(root.host_path(rel), "w", encoding="utf-8") as fh:
            fh.write(after)  # one write(): sysfs takes the value in a single store
        changes.append(Change(device, before, after))
    return changes
