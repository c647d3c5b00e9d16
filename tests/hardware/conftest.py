"""Hardware tests share the writable root copies of tests/rootcopy.py."""

from tests.rootcopy import root_copy

__all__ = ["root_copy"]
