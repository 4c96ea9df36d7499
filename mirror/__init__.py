"""mirror: download models from the hubs, carry them across an air gap, restore them offline."""

__version__ = "0.1.0"
