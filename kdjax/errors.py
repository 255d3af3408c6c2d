"""User-facing errors. ``UserError`` marks a mistake in the user's config, data, flags or
checkpoints: ``kdjax.cli.guarded`` prints it as one line (``kdjax: error: ...``, exit 2). Any other
exception is a bug and keeps its traceback (exit 1). Subclasses ``ValueError`` so that library
callers catching ``ValueError`` keep working."""


class UserError(ValueError):
  """A mistake the user can fix; the message names the fix."""
