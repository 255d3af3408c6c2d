"""CIFAR-10 configs (the calibration paper's second dataset)."""
