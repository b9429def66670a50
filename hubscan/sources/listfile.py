"""``list:FILE`` — a text file of model references, one per line (``#`` starts a comment).

Each line is any reference :func:`hubscan.refs.parse_ref` accepts (``hf:ORG/NAME@REV``, ``timm:NAME``, a
path …) and is owned by the source its scheme names; this source only enumerates.
"""

from __future__ import annotations

import itertools

from hubscan.errors import SourceError
from hubscan.refs import ModelRef, parse_ref
from hubscan.sources import register_source


@register_source
class ListSource:
    """References listed in a file (``--source list:FILE``)."""

    name = "list"
    spec = "list:FILE"
    filters = ()

    def parse(self, body: str) -> ModelRef:
        raise ValueError(f"list:{body}: a list of references is a survey source, not a model")

    def enumerate(self, arg, *, client, limit=None):
        try:
            with open(arg) as f:
                lines = [ln.split("#", 1)[0].strip() for ln in f]
        except OSError as exc:
            raise SourceError(arg, f"cannot read the list of models ({exc.strerror or exc})") from exc
        refs = (parse_ref(line) for line in lines if line)
        return ((ref, {}) for ref in itertools.islice(refs, limit))

    def resolve(self, ref, client):
        raise SourceError(str(ref), "the list source owns no models")

    def open(self, ref, client):
        raise SourceError(str(ref), "the list source owns no models")
