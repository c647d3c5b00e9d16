"""Golden-image tuning: profiles, verification (drift), apply (ansible-runner) and BIOS.

A profile states what a node should be (the shipped ones are package data in
assets/profiles/, the playbook in assets/playbooks/); `verify` reads what the node is through
a HostRoot and reports each setting as ok, drift, pending or unknown; `apply` brings the node
to the profile with the golden-image playbook and, when a BMC is configured, with Redfish.
Everything that leaves this package for a file, a kernel command line or a command passes the
allow-lists in `validators` first.
"""
