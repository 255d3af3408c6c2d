"""kdjax model zoo. Public API: ``get(name, num_classes=...)``, ``names()``, ``count_params``,
``bn_before_relu`` (OH's teacher BNs)."""

from kdjax.models.bn_before_relu import bn_before_relu, bn_before_relu_paths
from kdjax.models.registry import count_params, get, names, register

__all__ = ["get", "names", "register", "count_params", "bn_before_relu", "bn_before_relu_paths"]
