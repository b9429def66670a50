"""``list:FILE`` — a text file of model references, one per line (``#`` starts a comment).

Each line is any reference :func:`hubscan.refs.parse_ref` accepts (``hf:ORG/NAME@REV``, ``timm:NAME``, a
path …) and is owned by the source its scheme names; this source only enumerates. A path is normalised
(``./models//a`` → ``models/a``; relative paths stay relative, to the folder the survey runs in), and a model
listed twice — the same reference, or two spellings of one path — is surveyed once, under its first line's id.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

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
        refs, bad, seen = [], [], set()
        for number, line in enumerate(lines, 1):  # every line checked before the survey starts: all typos at once
            if not line:
                continue
            try:
                ref = parse_ref(line)
            except (ValueError, LookupError) as exc:
                bad.append(f"line {number}: {' '.join(str(exc).split())}")
                continue
            if ref.source == "local":  # one path, one id: models/a, ./models/a and models//a are one model
                ref = dataclasses.replace(ref, id=os.path.normpath(ref.id))
            same = (ref.source, os.path.realpath(ref.id) if ref.source == "local" else ref.id, ref.revision)
            if same not in seen:  # a model listed twice (or by two spellings of its path) is surveyed once
                seen.add(same)
                refs.append(ref)
        if bad:
            raise SourceError(arg, f"{len(bad)} line(s) are not model references: " + "; ".join(bad[:3])
                              + (" …" if len(bad) > 3 else ""))
        return ((ref, {}) for ref in itertools.islice(refs, limit))

    def resolve(self, ref, client):
        raise SourceError(str(ref), "the list source owns no models")

    def open(self, ref, client):
        raise SourceError(str(ref), "the list source owns no models")
