"""Evaluation of stored models: one padded, sharded prediction path (:func:`predict_logits`)."""

from kdjax.eval.predict import predict_logits

__all__ = ["predict_logits"]
