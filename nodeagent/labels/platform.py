"""Platform keys a user switches on (family "platform"): TrueFoundry's node pool and GPU type.

`truefoundry.com/nodepool` is the assigned pool; `truefoundry.com/gpu_type` is the GPU
model in the same form as `nvidia.com/gpu.product` (NVIDIA-H100-80GB-HBM3).
"""

from __future__ import annotations

from collections import Counter

from nodeagent.labels import gfd
from nodeagent.labels.inputs import LabelInputs

PREFIX = "truefoundry.com"


def labels(inp: LabelInputs) -> dict[str, str]:
    out = {}
    if inp.assignment.pool:
        out[f"{PREFIX}/nodepool"] = inp.assignment.pool
    models = Counter(g.model for g in inp.inventory.gpus if g.model)
    if models:
        out[f"{PREFIX}/gpu_type"] = gfd.sanitise(models.most_common(1)[0][0])
    return out
