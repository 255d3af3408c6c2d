"""Declarative distillation methods: ``build_method(config.method)``; see ``base``."""
from kdjax.methods.base import (Batch, Method, Outputs, Stage, Term, TermSpec, build_method,
                                register_term, term_names)

__all__ = ["Batch", "Method", "Outputs", "Stage", "Term", "TermSpec", "build_method",
           "register_term", "term_names"]
