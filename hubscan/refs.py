"""Model references: which model, from which source, at which exact revision, from which files.

Strings accepted (:func:`parse_ref`):

* ``hf:ORG/NAME`` or ``hf:ORG/NAME@REVISION`` — a Hugging Face Hub model repo (revision: branch,
  tag or commit sha; pinned to the commit sha when resolved);
* ``timm:ARCH.TAG`` (or ``timm:ARCH``, timm's default tag) — a timm pretrained model, fetched
  from the hub repo its pretrained config names (mostly ``timm/ARCH.TAG``);
* ``local:PATH`` or a plain path — a weight file or a Hugging Face layout folder.

Only the standard library here: every other module may import this one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """One model to analyze.

    Attributes
    ----------
    source : str
        ``hf``, ``timm`` or ``local``.
    id : str
        Hub repo id (``hf``), timm ``arch.tag`` name (``timm``; the key that joins timm's results
        CSVs), or the path (``local``).
    revision : str or None
        Requested (unresolved) or pinned revision: the commit sha for the hub, a content
        fingerprint (size + mtime hash) for local files. None until resolved.
    files : tuple of str
        The weight files chosen (paths in the repo, or absolute local paths); empty until resolved.
    repo_id : str or None
        The hub repo holding the weights (``timm/ARCH.TAG`` for most timm models; ``id`` for hf).
    """

    source: str
    id: str
    revision: str | None = None
    files: tuple = ()
    repo_id: str | None = None

    def __str__(self) -> str:
        if self.source == "local":
            return self.id
        return f"{self.source}:{self.id}" + (f"@{self.revision}" if self.revision else "")


def parse_ref(text: str | os.PathLike) -> ModelRef:
    """Parse a model reference string.

    Parameters
    ----------
    text : str or path
        ``hf:ORG/NAME[@REV]``, ``timm:NAME``, ``local:PATH`` or a path.

    Returns
    -------
    ModelRef
        Unresolved (no pinned revision or files unless the string gives a revision).

    Raises
    ------
    ValueError
        Malformed reference (empty id, a repo id with characters the hub does not allow, ``..``).
    """
    text = os.fspath(text)
    if text.startswith("hf:"):
        body = text[3:]
        repo, _, rev = body.partition("@")
        if not _REPO_ID.match(repo) or ".." in repo:
            raise ValueError(f"{text}: not a Hugging Face repo id (expected hf:ORG/NAME[@REVISION])")
        return ModelRef("hf", repo, rev or None, repo_id=repo)
    if text.startswith("timm:"):
        name = text[5:]
        if not name or "/" in name:
            raise ValueError(f"{text}: not a timm model name (expected timm:ARCH.TAG)")
        return ModelRef("timm", name)
    if text.startswith("local:"):
        text = text[6:]
    if not text:
        raise ValueError("empty model reference")
    return ModelRef("local", text)


def local_fingerprint(paths) -> str:
    """A revision for local files: sha256 of (name, size, mtime_ns) of each file, 16 hex digits.

    Parameters
    ----------
    paths : iterable of str
        Files of the model.

    Returns
    -------
    str
    """
    h = hashlib.sha256()
    for p in sorted(os.fspath(p) for p in paths):
        st = os.stat(p)
        h.update(json.dumps([os.path.basename(p), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:16]
