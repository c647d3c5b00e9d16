"""Acceptance tests share the writable root copies of tests/rootcopy.py and, for the
end-to-end tests through the inventory, its service fixture."""

from tests.inventory.conftest import service_factory
from tests.rootcopy import root_copy

__all__ = ["root_copy", "service_factory"]
