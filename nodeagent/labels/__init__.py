"""Node labels: what we call a machine, derived from what discovery found.

`hardware/` says what is there; this package names it, in our own keys under a
configurable domain and in the keys other tools (NFD, GFD, OCI) own, computed with
their formulas so values never flip when those tools take over.
"""
