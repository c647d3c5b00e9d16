"""NFD keys (feature.node.kubernetes.io/*), with node-feature-discovery's formulas.

`source/pci`: a function's class truncated to four hex digits is matched by prefix
against the whitelist, and its label is the configured fields joined by `_`. Two
configurations are computed: NFD's default (whitelist 03, 0b40, 12; fields class and
vendor -> `pci-0302_10de.present`) and the GPU Operator's (whitelist 02, 0200, 0207,
0300, 0302; field vendor -> `pci-10de.present`, `pci-15b3.present`), which is what the
GPU and Network Operators select nodes on. `source/custom` static rules: any PCI
function of vendor 15b3 -> `rdma.capable`; modules ib_uverbs and rdma_ucm loaded ->
`rdma.available`. NFD writes only true features; absence means false.
"""

from __future__ import annotations

from nodeagent.labels.features import NodeFeatures

PREFIX = "feature.node.kubernetes.io"
DEFAULT_WHITELIST = ("03", "0b40", "12")
GPU_OPERATOR_WHITELIST = ("02", "0200", "0207", "0300", "0302")
MELLANOX = "15b3"
RDMA_MODULES = frozenset({"ib_uverbs", "rdma_ucm"})


def labels(features: NodeFeatures) -> dict[str, str]:
    out = {}
    for pci_class, vendor in sorted(features.pci):
        class4 = pci_class[:4]
        if class4.startswith(DEFAULT_WHITELIST):
            out[f"{PREFIX}/pci-{class4}_{vendor}.present"] = "true"
        if class4.startswith(GPU_OPERATOR_WHITELIST):
            out[f"{PREFIX}/pci-{vendor}.present"] = "true"
    if any(vendor == MELLANOX for _, vendor in features.pci):
        out[f"{PREFIX}/rdma.capable"] = "true"
    if features.modules >= RDMA_MODULES:
        out[f"{PREFIX}/rdma.available"] = "true"
    return dict(sorted(out.items()))
