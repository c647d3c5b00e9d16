"""Agent tests share the writable root copies of tests/rootcopy.py and, for the preflight's
fleet check, the inventory service fixtures."""

from tests.inventory.conftest import dgx_inventory, service_factory
from tests.rootcopy import root_copy

__all__ = ["dgx_inventory", "root_copy", "service_factory"]
