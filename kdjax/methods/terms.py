"""Deprecated: the built-in terms now live one family per module (``kdjax.methods.logit``,
``fitnet``, ``at``, ...). Re-exports the names older code imported from here."""
from kdjax.methods.ft import FTConnector  # noqa: F401
from kdjax.methods.oh import OHConnector as OHConnectors  # noqa: F401
from kdjax.methods.sftn import sftn_term  # noqa: F401
from kdjax.methods.sskd import ROTATION_VIEWS, ProjHead, SSKDHeads  # noqa: F401
