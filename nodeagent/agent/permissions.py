"""Who may call what on the agent's API (contract: the table in docs/agent.md says the same).

The unix socket is root-only and trusted as root. On TCP (mTLS, `api.tcp_listen`) the
caller's certificate role decides, with the inventory's rules: viewer reads; operator
and admin verify and apply tuning and run acceptance tests; a node certificate (another
node) may do nothing.
"""

from __future__ import annotations

from nodeagent.api import auth
from nodeagent.api.auth import OPERATE, VIEW

PERMISSIONS: auth.Permissions = {
    "GetInventory": VIEW,
    "GetStatus": VIEW,
    "WatchEvents": VIEW,
    "VerifyTuning": OPERATE,
    "ApplyTuning": OPERATE,
    "ValidateNode": OPERATE,
}
