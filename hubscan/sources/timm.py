"""timm source: pretrained ``arch.tag`` names mapped to the hub repos that hold their weights.

The timm name is kept as the model id: it is the key of timm's ImageNet results CSVs. The weights
are fetched from the repo the pretrained config names (``timm/ARCH.TAG`` for 1,771 of 1,826
names; a few other orgs; 19 names are URL-only and are skipped with that reason). No network is
needed to enumerate.
"""

from __future__ import annotations

import re
from typing import Iterator

from hubscan.errors import HubscanError, SourceError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef
from hubscan.sources import register_source

_FAMILY = re.compile(r"^[a-z]+")
#: Base families: an architecture whose name starts with one of these belongs to it (longest wins),
#: so resnetaa50d / resnetv2_50 / resnetrs101 are ``resnet`` and efficientnetv2_s is ``efficientnet``.
KNOWN_FAMILIES = (
    "resnet", "resnext", "wide_resnet", "seresnet", "seresnext", "ecaresnet", "skresnet", "regnet", "densenet",
    "vgg", "inception", "efficientnet", "tf_efficientnet", "mobilenet", "tf_mobilenet", "mnasnet", "ghostnet",
    "convnext", "convnextv2", "vit", "deit", "beit", "eva", "swin", "swinv2", "cait", "xcit", "levit", "coat",
    "twins", "pvt", "mixer", "resmlp", "gmlp", "poolformer", "maxvit", "coatnet", "efficientformer", "fastvit",
    "mobilevit", "edgenext", "convit", "crossvit", "tnt", "nfnet", "dm_nfnet", "eca_nfnet", "nf_resnet", "rexnet",
    "hrnet", "dla", "dpn", "cspresnet", "cspdarknet", "darknet", "repvgg", "hgnet", "tresnet", "res2net",
    "selecsls", "xception", "nasnet", "pnasnet", "botnet", "halonet", "lambda", "volo", "focalnet", "davit",
    "hiera", "caformer", "convformer", "inception_next", "tiny_vit", "flexivit", "mvitv2", "sequencer",
)


def family_of(name: str) -> str:
    """Model family from a timm architecture name: the longest :data:`KNOWN_FAMILIES` prefix
    (``resnetaa50d`` → ``resnet``, ``vit_base_patch16_224`` → ``vit``, ``convnext_tiny`` →
    ``convnext``), else the leading letters."""
    arch = name.split(".")[0].lower()
    best = max((f for f in KNOWN_FAMILIES if arch.startswith(f)), key=len, default=None)
    if best:
        return best
    m = _FAMILY.match(arch)
    return m.group(0) if m else arch


def timm_metadata(name: str) -> dict:
    """Metadata of a timm pretrained name from its pretrained config (no network).

    Raises
    ------
    SourceError
        Unknown name.
    """
    from timm.models import get_pretrained_cfg
    import timm

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise SourceError(f"timm:{name}", "not a timm pretrained model name")
    arch = name.split(".")[0]
    return {"architecture": cfg.architecture or arch, "tag": cfg.tag or (name.split(".", 1)[1] if "." in name else ""),
            "family": family_of(arch), "hf_hub_id": cfg.hf_hub_id or None, "num_classes": cfg.num_classes,
            "input_size": list(cfg.input_size) if cfg.input_size else None, "library_name": "timm",
            "model_type": family_of(arch), "architectures": [arch],
            "timm_version": timm.__version__}


def timm_ref(name: str) -> ModelRef:
    """The ModelRef of a timm name (unresolved: no revision yet). ``repo_id`` is the hub repo.

    Raises
    ------
    SourceError
        Unknown name, or weights only at a URL (not on the hub).
    """
    meta = timm_metadata(name)
    if not meta["hf_hub_id"]:
        raise SourceError(f"timm:{name}", "weights are not on the Hugging Face Hub (URL only)")
    repo = meta["hf_hub_id"].split("@")[0]
    return ModelRef("timm", name, None, (), repo)


def list_timm(filter: str | list | None = "*", *, exclude: str | list | None = None,
              limit: int | None = None) -> Iterator[tuple[ModelRef, dict]]:
    """Enumerate timm's pretrained names (``timm.list_models(filter, pretrained=True)``).

    Yields
    ------
    (ModelRef, dict)
        Unresolved refs (``repo_id`` = hub repo, or None for URL-only weights) and metadata.
    """
    import timm

    names = timm.list_models(filter or "*", pretrained=True, exclude_filters=exclude or "")
    for i, name in enumerate(names):
        if limit is not None and i >= limit:
            break
        meta = timm_metadata(name)
        repo = meta["hf_hub_id"].split("@")[0] if meta["hf_hub_id"] else None
        yield ModelRef("timm", name, None, (), repo), meta


def resolve_timm(ref: ModelRef, client: HubClient | None = None) -> tuple[ModelRef, dict]:
    """Pin a timm ref to its hub repo's commit and choose the files (through the hf source)."""
    from hubscan.sources.hf import resolve_hf

    base = ref if ref.repo_id else timm_ref(ref.id)
    if ref.revision:
        base = ModelRef(base.source, base.id, ref.revision, (), base.repo_id)
    try:
        pinned, hub_meta = resolve_hf(base, client)
    except HubscanError as exc:  # named as the user typed it, the hub repo beside it
        exc.where = f"timm:{ref.id} ({exc.where})"
        exc.args = (f"{exc.where}: {exc.reason}",)
        raise
    meta = timm_metadata(ref.id)
    meta.update({k: v for k, v in hub_meta.items() if v not in (None, [], "") and k not in ("model_type", "architectures")})
    return pinned, meta


@register_source
class TimmSource:
    """timm's pretrained names: ``timm:ARCH.TAG``; ``--source timm`` lists them (``--filter`` a name glob)."""

    name = "timm"
    spec = "timm"
    filters = ("filter", "exclude")

    def parse(self, body: str) -> ModelRef:
        if not body or "/" in body:
            raise ValueError(f"timm:{body}: not a timm model name (expected timm:ARCH.TAG)")
        return ModelRef("timm", body)

    def enumerate(self, arg, *, client, limit=None, filter=None, exclude=None):
        return list_timm(filter or "*", exclude=exclude, limit=limit)

    def resolve(self, ref, client):
        return resolve_timm(ref, client)

    def open(self, ref, client):
        from hubscan.weights.remote import open_hub_files
        return open_hub_files(ref, client)
