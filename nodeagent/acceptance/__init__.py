"""Acceptance tests: proving that a node's hardware performs before it serves jobs.

Discovery says what a machine has; these checks say whether it works at speed (GPU state,
DCGM diagnostics, NCCL all-reduce, RDMA rails, NVMe reads, memory errors). `runner` runs a
level's checks one at a time with per-check timeouts, `store` keeps the one-run lock and the
last report in the agent's state directory. docs/acceptance.md lists every check.
"""
