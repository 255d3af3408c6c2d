"""Configs of Ojha et al., "What Knowledge Gets Distilled in Knowledge Distillation?", NeurIPS 2023."""
