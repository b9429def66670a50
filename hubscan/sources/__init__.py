"""Model sources: where models come from, as a registry (as timm registers models).

A source is one module with one class that implements :class:`Source` and is decorated with
:func:`register_source`; importing it (one line at the bottom of this file, or in user code) is all the
wiring there is. The registry gives:

* :func:`parse_spec` / :func:`source_specs` — what ``hubscan survey --source`` accepts (``hf``, ``timm``,
  ``local:DIR``, ``list:FILE``, and any registered source); the CLI's help is derived from it;
* :func:`enumerate_models` — a spec's models as ``(ModelRef, metadata)``;
* :func:`resolve` — pin a reference (commit sha, or a local content fingerprint) and choose its files;
* :func:`open_ref` / :func:`open_model` — a pinned reference's weights as a
  :class:`~hubscan.weights.base.WeightSet` (sources read through the readers of :mod:`hubscan.weights`).

Built in: ``hf`` (the Hugging Face Hub; the Hub client is its business), ``timm`` (timm's pretrained
names, weights from the Hub), ``local`` (files and folders), ``list`` (a file of references, one per
line, each owned by the source its scheme names).
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Protocol, runtime_checkable

from hubscan.errors import SourceError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef, parse_ref, register_scheme
from hubscan.registry import Registry, load_plugins, plugin_modules

__all__ = ["SOURCES", "plugin_modules", "load_plugins", "Source", "register_source", "get_source", "sources", "source_specs", "parse_spec",
           "enumerate_models", "resolve", "open_ref", "open_model"]


@runtime_checkable
class Source(Protocol):
    """What a model source implements.

    Attributes
    ----------
    name : str
        The scheme: ``ModelRef.source`` of the refs it owns, and the first part of its spec.
    spec : str
        How ``--source`` names it: ``NAME`` or ``NAME:ARG`` (e.g. ``local:DIR``).
    filters : tuple of str
        Keyword filters :meth:`enumerate` accepts (``--filter``, ``--author`` … of the CLI).
    """

    name: str
    spec: str
    filters: tuple

    def enumerate(self, arg: str | None, *, client: HubClient, limit: int | None = None,
                  **filters) -> Iterator[tuple[ModelRef, dict]]:
        """The models of ``NAME[:ARG]``: ``(ModelRef, metadata)``, pinned when the listing pins them."""

    def parse(self, body: str) -> ModelRef:
        """A reference ``NAME:BODY`` (raises ValueError when malformed)."""

    def resolve(self, ref: ModelRef, client: HubClient) -> tuple[ModelRef, dict]:
        """Pin ``ref`` (revision and files) and return its metadata (``family`` among it, when known)."""

    def open(self, ref: ModelRef, client: HubClient):
        """The pinned ref's weights as a :class:`~hubscan.weights.base.WeightSet`."""


#: The source registry: name (its scheme) → source instance.
SOURCES: Registry[Source] = Registry("source")
log = logging.getLogger(__name__)


def register_source(cls=None, *, plain: bool = False):
    """Class decorator: register one instance of a :class:`Source` under its ``name``.

    A name registered again is taken over by the newer source (a user's own ``hf`` replaces the built-in
    one), with a :class:`~hubscan.registry.RegistryWarning` naming both modules. Its ``NAME:`` prefix becomes
    a reference scheme of :func:`hubscan.refs.parse_ref`; with ``plain=True`` the source also owns
    references with no scheme (paths: the local source).
    """
    def deco(cls):
        source = cls() if isinstance(cls, type) else cls
        module = cls.__module__ if isinstance(cls, type) else type(cls).__module__
        SOURCES.register(source.name, source, module=module)
        register_scheme(source.name, source.parse, module=module, plain=plain)
        return cls
    return deco(cls) if cls is not None else deco


def sources() -> dict[str, Source]:
    """The registry: name -> source (a copy)."""
    return dict(SOURCES)


def get_source(name: str) -> Source:
    """The source registered as ``name``.

    Raises
    ------
    SourceError
        None is.
    """
    if name not in SOURCES:
        raise SourceError(name, f"unknown source (use {', '.join(source_specs())})")
    return SOURCES[name]


def source_specs() -> list[str]:
    """The ``--source`` forms the registry accepts, e.g. ``['hf', 'timm', 'local:DIR', 'list:FILE']``."""
    return [s.spec for s in SOURCES.values()]


def parse_spec(spec: str) -> tuple[Source, str | None]:
    """Split a ``--source`` value into its source and argument.

    Raises
    ------
    SourceError
        Unknown source, or an argument missing (``local`` without ``:DIR``) or given to a source that
        takes none.
    """
    name, colon, arg = spec.partition(":")
    source = get_source(name)
    takes_arg = ":" in source.spec
    if takes_arg and not arg:
        raise SourceError(spec, f"expected {source.spec}")
    if not takes_arg and colon:
        raise SourceError(spec, f"the {name} source takes no argument (expected {source.spec})")
    return source, (arg or None)


def enumerate_models(spec: str, *, client: HubClient | None = None, limit: int | None = None,
                     **filters) -> Iterator[tuple[ModelRef, dict]]:
    """Enumerate a source.

    Parameters
    ----------
    spec : str
        ``hf``, ``timm``, ``local:DIR``, ``list:FILE`` or another registered source's spec.
    client : HubClient, optional
    limit : int, optional
        Models at most.
    **filters
        Passed to the source; each source names those it accepts (``Source.filters``), others are ignored.

    Yields
    ------
    (ModelRef, dict)

    Raises
    ------
    SourceError
        Unknown source or malformed spec (raised at the first ``next``).
    """
    source, arg = parse_spec(spec)
    wanted = {k: v for k, v in filters.items() if k in source.filters and v is not None}
    yield from source.enumerate(arg, client=client or HubClient(), limit=limit, **wanted)


def _as_ref(ref: ModelRef | str | os.PathLike) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else parse_ref(ref)


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
    ref = _as_ref(ref)
    return get_source(ref.source).resolve(ref, client or HubClient())


def open_ref(ref: ModelRef, client: HubClient | None = None):
    """Open a pinned reference's weights (:class:`~hubscan.weights.base.WeightSet`).

    Raises
    ------
    hubscan.errors.HubscanError
    """
    return get_source(ref.source).open(ref, client or HubClient())


def open_model(model: ModelRef | str | os.PathLike, client: HubClient | None = None):
    """Resolve a reference and open its weights: ``(WeightSet, pinned ModelRef, metadata)``.

    A reference that is already pinned (revision and files, as a hub listing gives them) is opened
    without another resolve.

    Raises
    ------
    hubscan.errors.HubscanError
    """
    ref = _as_ref(model)
    source = get_source(ref.source)
    client = client or HubClient()
    if hasattr(source, "open_model"):
        return source.open_model(ref, client)
    pinned, meta = (ref, {}) if ref.revision and ref.files else source.resolve(ref, client)
    return source.open(pinned, client), pinned, meta


# Sources register themselves on import; a new source is one more module and one more line here.
from hubscan.sources import hf as _hf  # noqa: E402,F401
from hubscan.sources import timm as _timm  # noqa: E402,F401
from hubscan.sources import local as _local  # noqa: E402,F401
from hubscan.sources import listfile as _listfile  # noqa: E402,F401
