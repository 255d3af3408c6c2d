"""kdjax model zoo. Public API: ``get(name, num_classes=...)``, ``names()``, ``count_params``."""
from kdjax.models.registry import count_params, get, names, register

__all__ = ["get", "names", "register", "count_params"]
