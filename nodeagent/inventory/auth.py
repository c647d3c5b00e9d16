"""Who may call what on the inventory (contract: the table in docs/inventory.md says the same).

viewer reads; operator changes nodes and runs operations; admin manages tokens,
clusters and certificates; a node certificate speaks only for its own node (the
servicer checks the node id against the certificate's). The mechanism is shared
with the agent's TCP API: nodeagent.api.auth.
"""

from __future__ import annotations

from nodeagent.api import auth
from nodeagent.api.auth import ADMIN, OPERATE, VIEW

NODE = frozenset({auth.NODE})
PERMISSIONS: auth.Permissions = {
    "Register": None,
    "Heartbeat": NODE,
    "Session": NODE,  # heartbeats on a stream: the node's own, as Heartbeat
    "RenewCertificate": NODE,
    "ListNodes": VIEW,
    "GetNode": VIEW | NODE,
    "WatchNodes": VIEW,
    "ListCertificates": VIEW,
    "RevokeCertificate": ADMIN,
    "ListTokens": VIEW,
    "UpdateAssignment": OPERATE,
    "HoldNode": OPERATE,
    "ReleaseNode": OPERATE,
    "RetireNode": ADMIN,
    "DeleteNode": ADMIN,
    "CreateToken": ADMIN,
    "RevokeToken": ADMIN,
    "ReportFabric": NODE,
    "ExportTopology": VIEW,
    "GetNodeLabels": VIEW,
    "CheckHostname": VIEW | NODE,
    # A cluster spec decides which playbooks the service runs, as itself, with its SSH key.
    "CreateCluster": ADMIN,
    "UpdateCluster": ADMIN,
    "GetCluster": VIEW,
    "ListClusters": VIEW,
    "ExportKubespray": VIEW,
    "ExportGpuOperator": VIEW,
    "GetJob": VIEW,
    "ListJobs": VIEW,
    "WatchJob": VIEW,
    "SetNodeAddress": OPERATE,
    "StartJoin": OPERATE,
    "CancelJob": OPERATE,
    "RetryJob": OPERATE,
    "QuarantineNode": OPERATE,
    # runs the node's acceptance checks: minutes of load on its GPUs, fabric and drives
    "StartValidation": OPERATE,
    # a kubeconfig is the cluster's admin credential, as a cluster spec names an SSH key
    "SetKubeconfig": ADMIN,
}
# the enrolment port (no client certificate) serves these and health, nothing else
ENROLMENT = frozenset({"Register"})
