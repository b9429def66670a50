"""Lineage: a base model's descendants on the Hugging Face Hub, breadth-first, as (child, parent) edges.

The Hub records lineage in model cards (``base_model: <id>`` or a list, ``base_model_relation:
finetune | adapter | quantized | merge``) and turns it into tags: ``base_model:<id>`` and
``base_model:<relation>:<id>`` (hub-docs ``model-cards.md``; the Hub infers the relation when the card
gives none). Children of a node are found with huggingface_hub's public ``list_models``:

1. ``filter="base_model:<relation>:<id>"`` for each relation asked → edge ``found_by = "tag"``;
2. ``filter="base_model:<id>"`` for children that no relation tag listed (legacy cards, relations not
   tagged): the relation is the card's ``base_model_relation`` (``found_by = "card"``), else inferred
   from the files and config (``found_by = "config"``): an ``adapter_config.json`` → adapter; a
   ``quantization_config`` in ``config.json`` or a GGUF file → quantized; several base models → merge;
   otherwise finetune.

Each listing asks ``expand=`` for sha, siblings, cardData, tags and config, so every node is pinned (commit
sha, weight files) from the listing itself — no per-model ``model_info`` call. (``baseModels`` and
``childrenModelCount`` are accepted by ``model_info`` only, not by the listing: huggingface_hub PR #3182.)

Rules: breadth-first from the root (depth 0); a node is expanded once, at the smallest depth it is found;
an edge (child, parent) is recorded once; an edge whose child is the root or was found at a depth ≤ the
parent's (a cycle, or a back edge) is ignored; a merge child of two nodes in the tree has one edge to
each. ``depth`` bounds the depth of children, ``limit`` the number of descendants.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque

from hubscan.hub import HubClient
from hubscan.refs import ModelRef

log = logging.getLogger(__name__)

RELATIONS = ("finetune", "adapter", "quantized", "merge")
#: Properties fetched with each listed child (pins it and gives what the relation inference needs).
LINEAGE_EXPAND = ["sha", "siblings", "cardData", "tags", "config", "downloads", "likes", "library_name",
                  "pipeline_tag", "safetensors", "lastModified", "createdAt", "gated", "private"]


@dataclasses.dataclass(frozen=True)
class Edge:
    """One (child, parent) edge of a model tree.

    Attributes
    ----------
    child, parent : str
        Repo ids.
    relation : str
        ``finetune``, ``adapter``, ``quantized`` or ``merge``.
    depth : int
        The child's depth (the root's children: 1).
    found_by : str
        ``tag`` (a ``base_model:<relation>:<parent>`` tag listed it), ``card`` (the card's
        ``base_model_relation``) or ``config`` (inferred from files / config, module docstring).
    """

    child: str
    parent: str
    relation: str
    depth: int
    found_by: str


@dataclasses.dataclass
class Tree:
    """A surveyed model tree: ``nodes`` (repo id → (pinned ModelRef, metadata)), root first in
    breadth-first order, and its ``edges``."""

    root: str
    nodes: dict
    edges: list

    def children(self, parent: str) -> list[Edge]:
        """Edges whose parent is ``parent``."""
        return [e for e in self.edges if e.parent == parent]


def _card_bases(info) -> list[str]:
    card = getattr(info, "card_data", None)
    bases = getattr(card, "base_model", None) if card is not None else None
    return [bases] if isinstance(bases, str) else [b for b in (bases or []) if isinstance(b, str)]


def infer_relation(info) -> tuple[str, str]:
    """The relation of a child found by the generic ``base_model:<id>`` tag, and how it was decided.

    Returns
    -------
    (relation, found_by)
        ``found_by`` is ``card`` when the card states ``base_model_relation``, else ``config``.
    """
    card = getattr(info, "card_data", None)
    stated = getattr(card, "base_model_relation", None) if card is not None else None
    if stated in RELATIONS:
        return stated, "card"
    names = {s.rfilename.rsplit("/", 1)[-1] for s in (getattr(info, "siblings", None) or [])}
    config = getattr(info, "config", None) or {}
    if "adapter_config.json" in names:
        return "adapter", "config"
    if (isinstance(config, dict) and config.get("quantization_config")) or any(n.endswith(".gguf") for n in names):
        return "quantized", "config"
    if len(_card_bases(info)) > 1:
        return "merge", "config"
    return "finetune", "config"


def enumerate_lineage(root: str, client: HubClient | None = None, *, depth: int | None = None,
                      relations=RELATIONS, limit: int | None = None) -> Tree:
    """Enumerate a base model's descendants breadth-first (module docstring) and pin every node.

    Parameters
    ----------
    root : str
        Hub repo id of the base model (``ORG/NAME``; an ``hf:`` prefix is accepted).
    client : HubClient, optional
    depth : int, optional
        Largest depth of a child (1: the root's children only); None: unbounded.
    relations : iterable of str
        Relations followed (subset of :data:`RELATIONS`).
    limit : int, optional
        Largest number of descendants (nodes other than the root).

    Returns
    -------
    Tree
        The root pinned with ``model_info`` (:func:`hubscan.sources.resolve`), children pinned from the
        listings; the edges in discovery order.

    Raises
    ------
    ValueError
        An unknown relation.
    hubscan.errors.HubscanError
        The root cannot be resolved or a listing fails.
    """
    from hubscan.sources import resolve
    from hubscan.sources.hf import metadata_from_info, ref_from_info

    client = client or HubClient()
    root = root[3:] if root.startswith("hf:") else root
    relations = tuple(relations)
    bad = [r for r in relations if r not in RELATIONS]
    if bad:
        raise ValueError(f"unknown relation {bad[0]!r} (use {', '.join(RELATIONS)})")
    ref, meta = resolve(ModelRef("hf", root, repo_id=root), client)
    nodes = {root: (ref, meta)}
    depth_of = {root: 0}
    edges: list[Edge] = []
    seen_edges: set = set()
    queue = deque([root])

    def listing(tag: str):
        return client.iterate(client.api.list_models, what=f"list_models(filter={tag})", filter=tag,
                              expand=LINEAGE_EXPAND)

    def add(info, parent: str, relation: str, found_by: str) -> bool:
        child, d = info.id, depth_of[parent] + 1
        if child == root or (child, parent) in seen_edges or depth_of.get(child, d) <= depth_of[parent]:
            return True  # a repeat, a cycle or a back edge
        if child not in nodes:
            if limit is not None and len(nodes) - 1 >= limit:
                return False
            nodes[child] = (ref_from_info(info, ModelRef("hf", child, repo_id=child)), metadata_from_info(info))
            depth_of[child] = d
            queue.append(child)
        seen_edges.add((child, parent))
        edges.append(Edge(child, parent, relation, depth_of[child], found_by))
        return True

    while queue:
        parent = queue.popleft()
        if depth is not None and depth_of[parent] >= depth:
            continue
        tagged = set()
        for relation in relations:
            for info in listing(f"base_model:{relation}:{parent}"):
                tagged.add(info.id)
                if not add(info, parent, relation, "tag"):
                    return Tree(root, nodes, edges)
        for info in listing(f"base_model:{parent}"):
            if info.id in tagged:
                continue
            tags = [t.split(":", 2)[1] for t in (info.tags or []) if t.startswith("base_model:")
                    and t.count(":") == 2 and t.split(":", 2)[2] == parent]
            relation, found_by = (tags[0], "tag") if tags else infer_relation(info)
            if relation in relations and not add(info, parent, relation, found_by):
                return Tree(root, nodes, edges)
    return Tree(root, nodes, edges)
