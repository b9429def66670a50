"""Which layers to analyze: the ``--layers`` filter (WeightWatcher's ``layers=``, extended).

Syntax: comma-separated terms; a term starting with ``!`` excludes, any other term includes.

* ``7`` or ``2-5`` — layer ids, ranges inclusive (hubscan's ``layer_id``: the tensor's position in
  the model's files, 1-D tensors counted; WW numbers its own layer objects, so ids differ from WW's);
* ``dense``, ``embedding``, ``conv1d``, ``conv2d``, ``conv3d`` — layer types (the ``layer_type`` column);
* anything else — a shell-style glob on the tensor name (``fnmatch``, case-sensitive):
  ``*attention*``, ``encoder.layer.0.*``.

A matrix is analyzed when it matches at least one including term (or there is none) and no
excluding term; the others get a skipped row "excluded by --layers SPEC". Where WW composes its
three filter kinds in sequence (ids, types and names each overriding the previous decision) and
requires exact names, hubscan's rule is one boolean formula. WW's ``min_size``/``max_size`` are
ignored by WW 0.7.7 itself ("changed to min_evals, max_evals"): hubscan's ``--min-evals`` /
``--max-evals`` are those.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

LAYER_TYPES = ("dense", "embedding", "conv1d", "conv2d", "conv3d")
#: The reason of a matrix the filter leaves out, before its spec.
EXCLUDED = "excluded by --layers "
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_NEGATIVE = re.compile(r"^-\d+(?:-\d*)?$")


def as_spec(layers) -> str:
    """A layer selection as its spec (module docstring): a spec string as given, a layer id, or a list/tuple
    of ids and spec strings joined by commas (``[1, 3]`` is ``"1,3"``, ``["*0*", "!*4*"]`` is ``"*0*,!*4*"``).

    Raises
    ------
    TypeError
        ``layers`` is none of these (one line naming what is accepted).
    ValueError
        A negative layer id, or a spec :meth:`LayerFilter.parse` refuses.
    """
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    if not isinstance(layers, (str, int, list, tuple)) or any(
            isinstance(x, bool) or not isinstance(x, (str, int)) for x in items):
        raise TypeError(f"layers = {layers!r}: a spec string ('0-5,!*pooler*'), a layer id (int), or a list/tuple "
                        "of ids and spec strings")
    if any(isinstance(x, int) and x < 0 for x in items):
        raise ValueError(f"layers = {layers!r}: layer ids are ≥ 0")
    spec = ",".join(map(str, items))
    LayerFilter.parse(spec)
    return spec


def excluded(row) -> bool:
    """Whether a layer row (mapping with ``reason``) was left out by a ``--layers`` filter."""
    return (row.get("reason") or "").startswith(EXCLUDED)


@dataclasses.dataclass(frozen=True)
class LayerFilter:
    """A parsed ``--layers`` spec.

    Attributes
    ----------
    spec : str
        The text it was parsed from.
    include, exclude : tuple of (str, object)
        Terms as (kind, value): ``("ids", (lo, hi))``, ``("type", name)``, ``("glob", pattern)``.
    """

    spec: str
    include: tuple
    exclude: tuple

    @classmethod
    def parse(cls, spec: str) -> "LayerFilter":
        """Parse a spec (module docstring).

        Raises
        ------
        ValueError
            An empty term, a negative layer id (``-1``: there is no counting from the end), or a range whose
            end is below its start.
        """
        include, exclude = [], []
        for raw in (spec or "").split(","):
            term = raw.strip()
            if not term and (spec or "").strip():
                raise ValueError(f"empty term in --layers {spec!r}")
            if not term:
                continue
            target = exclude if term.startswith("!") else include
            term = term.lstrip("!").strip()
            if not term:
                raise ValueError(f"empty term in --layers {spec!r}")
            if _NEGATIVE.match(term):
                raise ValueError(f"layer id {term!r} in --layers: ids are ≥ 0 (the layer_id column; a range is LO-HI)")
            m = _RANGE.match(term)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
                if hi < lo:
                    raise ValueError(f"range {term!r} in --layers ends before it starts")
                target.append(("ids", (lo, hi)))
            elif term in LAYER_TYPES:
                target.append(("type", term))
            else:
                target.append(("glob", term))
        return cls(spec or "", tuple(include), tuple(exclude))

    @staticmethod
    def _match(term, layer_id: int, name: str, layer_type: str) -> bool:
        kind, value = term
        if kind == "ids":
            return value[0] <= layer_id <= value[1]
        if kind == "type":
            return layer_type == value
        return fnmatch.fnmatchcase(name, value)

    def keeps(self, layer_id: int, name: str, layer_type: str) -> bool:
        """True when the matrix is analyzed."""
        if any(self._match(t, layer_id, name, layer_type) for t in self.exclude):
            return False
        return not self.include or any(self._match(t, layer_id, name, layer_type) for t in self.include)
