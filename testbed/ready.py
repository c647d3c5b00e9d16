"""What a tuned, booted node shows that the modelled trees leave out, so preflight passes.

The modelled roots are servers as discovery sees them right after install; a node that is
ready to join also has swap off, the Kubernetes modules and sysctls, cgroup v2, a
synchronised clock and (on NVSwitch systems) a running fabric manager. Tests of preflight
and the demo's READY nodes use this; each broken variant starts from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from nodeagent.host import HostRoot

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def rewrite(root: Path, rel: str, text: str) -> None:
    """Replace a file (resolving sysfs links inside the root), never writing through a
    hard link shared with another copy."""
    path = Path(HostRoot(root).host_path(HostRoot(root).resolve(rel)))
    path.unlink()
    path.write_text(text)


def make_ready(root: Path) -> Path:
    files = {
        "proc/swaps": "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        "proc/sys/net/ipv4/ip_forward": "1\n",
        "proc/sys/net/bridge/bridge-nf-call-iptables": "1\n",
        "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
        "proc/net/tcp": TCP_HEADER + "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000     0\n   1: 0A000005:280A 0A000009:D431 01 00000000:00000000 "
        "00:00000000 00000000     0\n",
        "var/lib/dpkg/status": "Package: openssh-server\nStatus: install ok installed\n\n"
        "Package: docker-ce\nStatus: deinstall ok config-files\n",
        ".nodeagent/probes/timesync.json": json.dumps({"synchronized": True}),
        "var/run/nvidia-fabricmanager/nv-fabricmanager.pid": "4242\n",
        "proc/4242/comm": "nv-fabricmanager\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(text)
    modules = (root / "proc/modules").read_text()
    rewrite(
        root,
        "proc/modules",
        modules + "overlay 151552 0 - Live 0x0\nbr_netfilter 32768 0 - Live 0x0\n",
    )
    return root
