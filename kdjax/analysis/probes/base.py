"""The probe protocol, its registry and the shared context of the what-gets-distilled report.

Like big_vision's evaluators: one module per probe under ``kdjax/analysis/probes/``, a
``type=`` in the config (``config.probes.<name> = dict(type='adversarial', ...)``) resolves the
class through :func:`get`, and every model output goes through one prediction path
(:func:`kdjax.eval.predict_logits`, via :meth:`Context.predict`). A probe is

* ``defaults()``: its settings (the keys its config entry may hold besides ``type``);
* ``check(setup)``: fail fast (before any model is loaded) on a missing external dataset;
* ``compute(ctx) -> dict``: the numbers (JSON-able after :func:`jsonable`), one jitted function
  over fixed padded batches, with a progress bar (:meth:`Context.bar`);
* ``figures(ctx, result)``: PNGs, saved with :meth:`Context.save_figure`;
* ``markdown(ctx, result) -> lines``: the body of its report section.

Adding a probe is adding one module here that calls :func:`register`; the package imports every
module of the folder, so the probe is then in :func:`names`, the default config and the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np
from tqdm import tqdm

from kdjax import data as kdata
from kdjax.errors import UserError
from kdjax.eval import predict_logits

__all__ = [
  "Probe",
  "register",
  "get",
  "names",
  "Run",
  "Context",
  "Setup",
  "table",
  "fmt",
  "jsonable",
  "figure",
  "grouped_bars",
  "spans",
]

_REGISTRY: Dict[str, type] = {}


def register(type_name: str, *, order: int):
  """Class decorator: makes ``type_name`` resolve to the probe class; ``order`` places it in
  the default probe list (and so in the report)."""

  def deco(cls):
    if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
      raise ValueError(f"probe type {type_name!r} registered twice")
    cls.type_name = type_name
    cls.order = int(order)
    _REGISTRY[type_name] = cls
    return cls

  return deco


def names() -> tuple:
  """Registered probe types, in report order."""
  return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n)))


def get(type_name: str) -> type:
  """The probe class registered as ``type_name`` (a :class:`UserError` naming the known ones)."""
  if type_name not in _REGISTRY:
    close = difflib.get_close_matches(str(type_name), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown probe type {type_name!r}.{hint} Known: {', '.join(names())}.")
  return _REGISTRY[type_name]


class Probe:
  """Base class of the probes (see the module docstring)."""

  type_name: str = ""
  order: int = 0
  title: str = ""

  def __init__(self, name: str, settings: Mapping[str, Any]):
    self.name = name
    defaults = self.defaults()
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
      known = ", ".join(sorted(defaults)) or "(none)"
      raise UserError(
        f"probe {name!r} (type {self.type_name!r}) has no setting(s) {unknown}; "
        f"its settings are: {known}."
      )
    self.settings = {**defaults, **dict(settings)}

  @classmethod
  def defaults(cls) -> Dict[str, Any]:
    return {}

  def check(self, setup: "Setup") -> None:
    """Validation before any model is loaded (e.g. an external dataset is on the machine)."""

  def compute(self, ctx: "Context") -> dict:
    raise NotImplementedError

  def figures(self, ctx: "Context", result: dict) -> None:
    """Writes the probe's PNGs (optional)."""

  def markdown(self, ctx: "Context", result: dict) -> List[str]:
    raise NotImplementedError

  def figure_name(self, fname: str) -> str:
    """``fname``, prefixed with the probe's name when it is not its type's default entry (so
    two entries of one type do not overwrite each other's PNGs)."""
    return fname if self.name == self.type_name else f"{self.name}_{fname}"

  @property
  def section_title(self) -> str:
    return self.title if self.name == self.type_name else f"{self.title} ({self.name})"


# ------------------------------------------------------------------------------------ runs


@dataclasses.dataclass
class Run:
  """One loaded model: ``role`` is 'teacher', 'distilled' or 'independent'."""

  name: str
  role: str
  workdir: str
  module: Any
  variables: Any
  meta: dict
  last_tap: Optional[str] = None
  num_stages: Optional[int] = None


@dataclasses.dataclass
class Setup:
  """What a probe's :meth:`Probe.check` may look at (nothing is loaded yet)."""

  num_examples: int
  seed: int


@functools.lru_cache(maxsize=None)
def pixel_preprocess(mean: tuple, std: tuple) -> Callable:
  """A hashable ``[0, 255] pixels -> model input`` function (one object per mean/std, so that
  :func:`kdjax.eval.predict_logits` compiles once per model)."""

  def preprocess(x):
    return kdata.normalize(x, mean, std)

  return preprocess


def spans(n: int, bs: int):
  """``[(start, stop), ...]`` batches of ``bs`` rows covering ``0..n``."""
  return [(i, min(n, i + bs)) for i in range(0, n, bs)]


def pad_to(a: np.ndarray, bs: int) -> np.ndarray:
  """``a`` with its last row repeated up to ``bs`` rows."""
  if len(a) >= bs:
    return a
  return np.concatenate([a, np.repeat(a[-1:], bs - len(a), axis=0)])


_DISTILLED_COLORS = (
  "tab:orange",
  "tab:green",
  "tab:red",
  "tab:purple",
  "tab:brown",
  "tab:pink",
  "tab:olive",
  "tab:cyan",
)


@dataclasses.dataclass
class Context:
  """Everything a probe computes from: the runs, the evaluation set, the clean logits."""

  teacher: Run
  students: List[Run]
  info: Any
  images: np.ndarray  # uint8 (N, H, W, C)
  labels: np.ndarray
  batch_size: int
  out_dir: str
  seed: int
  num_examples: int
  progress: bool = False
  logits: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  directions: List[dict] = dataclasses.field(default_factory=list)
  notes: List[str] = dataclasses.field(default_factory=list)
  figures: Dict[str, str] = dataclasses.field(default_factory=dict)

  @property
  def runs(self) -> List[Run]:
    return [self.teacher] + self.students

  @property
  def distilled(self) -> List[Run]:
    return [s for s in self.students if s.role == "distilled"]

  @property
  def independent(self) -> Run:
    return [s for s in self.students if s.role == "independent"][0]

  @property
  def num_classes(self) -> int:
    return int(self.teacher.meta["num_classes"])

  @property
  def preprocess(self) -> Callable:
    """``[0, 255]`` pixels -> normalised model input (the dataset's mean / std)."""
    return pixel_preprocess(tuple(map(float, self.info.mean)), tuple(map(float, self.info.std)))

  def normalize(self, x255):
    return self.preprocess(x255)

  def predict(self, run: Run, images, *, pixels: bool = True, taps: Sequence[str] = ()):
    """Eval-mode logits of ``run`` (``(logits, taps)`` when ``taps``) through
    :func:`kdjax.eval.predict_logits`, in batches of :attr:`batch_size`.

    ``images``: ``[0, 255]`` pixels (uint8 or float) when ``pixels``, else model inputs.
    """
    return predict_logits(
      run.module,
      run.variables,
      images,
      batch_size=self.batch_size,
      preprocess=self.preprocess if pixels else None,
      taps=tuple(taps),
    )

  def spans(self, n: Optional[int] = None):
    return spans(len(self.labels) if n is None else n, self.batch_size)

  def bar(self, total: int, desc: str):
    """A progress bar for one probe (disabled when ``progress`` is off)."""
    return tqdm(total=total, desc=desc, disable=not self.progress, unit="batch", leave=False)

  def direct(self, probe: str, claim: str, student: str, d, i, holds: Callable):
    """Records one "direction vs paper" comparison of a distilled and the independent student."""
    d, i = float(d), float(i)
    ok = None if not (math.isfinite(d) and math.isfinite(i)) else bool(holds(d, i))
    self.directions.append(
      dict(probe=probe, claim=claim, student=student, distilled=d, independent=i, holds=ok)
    )

  def colors(self) -> Dict[str, str]:
    """One colour per model, the same in every figure."""
    c = {self.teacher.name: "tab:gray", self.independent.name: "tab:blue"}
    for i, d in enumerate(self.distilled):
      c[d.name] = _DISTILLED_COLORS[i % len(_DISTILLED_COLORS)]
    return c

  def save_figure(self, fig, key: str, fname: str):
    path = os.path.join(self.out_dir, fname)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    self.figures[key] = fname

  def direction_lines(self, probe: str) -> List[str]:
    return [f"- {direction_sentence(d)}" for d in self.directions if d["probe"] == probe]


# ------------------------------------------------------------------------------------ output


def nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def fmt(v, nd=2) -> str:
  if v is None:
    return "–"
  if isinstance(v, (bool, np.bool_)):
    return "yes" if v else "no"
  if isinstance(v, (int, np.integer)):
    return str(int(v))
  if isinstance(v, (float, np.floating)):
    return "–" if not math.isfinite(float(v)) else f"{float(v):.{nd}f}"
  return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], nd=2) -> str:
  out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  out += ["| " + " | ".join(fmt(v, nd) for v in r) + " |" for r in rows]
  return "\n".join(out)


def direction_sentence(d: dict) -> str:
  ans = "n/a" if d["holds"] is None else ("yes" if d["holds"] else "no")
  return (
    f"{d['student']}: {d['claim']}: **{ans}** ({fmt(d['distilled'], 3)} vs "
    f"{fmt(d['independent'], 3)})"
  )


def jsonable(o):
  if isinstance(o, dict):
    return {str(k): jsonable(v) for k, v in o.items()}
  if isinstance(o, (list, tuple)):
    return [jsonable(v) for v in o]
  if isinstance(o, np.ndarray):
    return jsonable(o.tolist())
  if isinstance(o, (np.bool_, bool)):
    return bool(o)
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (float, np.floating)):
    return float(o) if math.isfinite(float(o)) else None
  if isinstance(o, jax.Array):
    return jsonable(np.asarray(o))
  return o


def figure(ncols=1, nrows=1, size=(6, 4)):
  """A matplotlib figure with an Agg canvas (no pyplot state) and its axes grid."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency
  from matplotlib.figure import Figure

  fig = Figure(figsize=size)
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  return fig, axes


def grouped_bars(
  ax,
  groups: Sequence[str],
  series: Dict[str, Sequence[float]],
  ylabel: str,
  colors: Optional[Mapping[str, str]] = None,
):
  names_ = list(series)
  w = 0.8 / max(len(names_), 1)
  xs = np.arange(len(groups))
  for i, nm in enumerate(names_):
    vals = np.nan_to_num(np.asarray(series[nm], np.float64), nan=0.0)
    ax.bar(
      xs + (i - (len(names_) - 1) / 2) * w, vals, width=w, label=nm, color=(colors or {}).get(nm)
    )
  ax.set_xticks(xs)
  ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)
