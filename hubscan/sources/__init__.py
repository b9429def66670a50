"""Model sources: enumerate models and pin each to an exact revision and set of files.

``hf`` (Hugging Face Hub), ``timm`` (timm's pretrained names, weights from the hub) and ``local``
(files and folders). Each yields ``(ModelRef, metadata)``; :func:`resolve` pins a ref.
"""

from __future__ import annotations

from typing import Iterator

from hubscan.hub import HubClient
from hubscan.refs import ModelRef, parse_ref


def resolve(ref: ModelRef | str, client: HubClient | None = None) -> tuple[ModelRef, dict]:
    """Pin a reference: commit sha (hub) or fingerprint (local), and the weight files to read.

    Parameters
    ----------
    ref : ModelRef or str
        ``hf:ORG/NAME[@REV]``, ``timm:NAME``, a path, or a ModelRef.
    client : HubClient, optional
        Hub settings (endpoint, token, retries).

    Returns
    -------
    (ModelRef, dict)
        The pinned ref and the model's metadata.

    Raises
    ------
    hubscan.errors.HubscanError
        GatedModelError (skip), SourceError / NoWeightsError / UnsafeFileError (fail).
    """
    if isinstance(ref, str):
        ref = parse_ref(ref)
    if ref.source == "hf":
        from hubscan.sources.hf import resolve_hf
        return resolve_hf(ref, client)
    if ref.source == "timm":
        from hubscan.sources.timm import resolve_timm
        return resolve_timm(ref, client)
    from hubscan.sources.local import resolve_local
    return resolve_local(ref)


def enumerate_models(source: str, *, client: HubClient | None = None, limit: int | None = None,
                     **filters) -> Iterator[tuple[ModelRef, dict]]:
    """Enumerate a source.

    Parameters
    ----------
    source : str
        ``hf``, ``timm``, ``local:DIR`` or ``list:FILE`` (one reference per line, ``#`` comments).
    client : HubClient, optional
    limit : int, optional
    **filters
        ``hf``: filter, author, search, pipeline_tag, sort. ``timm``: filter, exclude.

    Yields
    ------
    (ModelRef, dict)
    """
    if source == "hf":
        from hubscan.sources.hf import list_hf
        yield from list_hf(client, limit=limit, **filters)
    elif source == "timm":
        from hubscan.sources.timm import list_timm
        yield from list_timm(filters.get("filter") or "*", exclude=filters.get("exclude"), limit=limit)
    elif source.startswith("local:"):
        from hubscan.sources.local import list_local
        for i, item in enumerate(list_local(source[6:])):
            if limit is not None and i >= limit:
                break
            yield item
    elif source.startswith("list:"):
        with open(source[5:]) as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
        for i, line in enumerate(ln for ln in lines if ln):
            if limit is not None and i >= limit:
                break
            yield parse_ref(line), {}
    else:
        raise ValueError(f"unknown source {source!r} (use hf, timm, local:DIR or list:FILE)")
