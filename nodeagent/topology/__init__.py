"""Fabric topology: rail observations -> tier ids; fleet grouping; Kueue and Slurm exports.

Everything here but `observe` (which runs the fabric probes) is a pure function of
protobuf messages, so the inventory service can run the same code over every node's
observations.
"""
