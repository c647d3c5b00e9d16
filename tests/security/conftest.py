"""The security tests attack enrolled copies of the inventory tests' modelled DGX."""

from tests.inventory.conftest import dgx_inventory

__all__ = ["dgx_inventory"]
