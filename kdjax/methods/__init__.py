"""Declarative distillation methods: ``build_method(config.method)`` (:mod:`~kdjax.methods.core`).

A method family is one module (``logit``, ``fitnet``, ``at``, ``nst_sp_fsp``, ``vid``, ``ab``,
``ft``, ``oh``, ``cc_rkd_pkt``, ``crd``, ``itrd``, ``sskd``, ``sftn``): its term adapters (registered
with :func:`~kdjax.methods.registry.register_term`), connector modules, defaults and ``PRESETS``.
Importing this package registers them all; named recipes: :func:`preset`.
"""
from kdjax.methods.core import (Batch, Method, Outputs, Stage, Term, build_method, common_stages,
                                connector_calls)
from kdjax.methods.registry import (BuildContext, TermSpec, ViewSpec, get_term, register_term,
                                    term_names)
from kdjax.methods import (ab, at, cc_rkd_pkt, crd, fitnet, ft, itrd, logit, nst_sp_fsp,  # noqa: F401,E402
                           oh, sftn, sskd, vid)
from kdjax.methods.presets import apply_preset, preset, preset_names, register_preset  # noqa: E402

__all__ = ["Batch", "BuildContext", "Method", "Outputs", "Stage", "Term", "TermSpec", "ViewSpec",
           "apply_preset", "build_method", "common_stages", "connector_calls", "get_term",
           "preset", "preset_names", "register_preset", "register_term", "term_names"]
from kdjax.methods import ctkd, lskd, nkd, reviewkd  # noqa: F401,E402  (new families)
from kdjax.methods import noisy_labels  # noqa: F401,E402  (Ojha et al. App. 11.2 control)
