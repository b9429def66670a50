"""Model sources: where models come from, as a registry (as timm registers models).

A source is one module with one class that implements :class:`Source` and is decorated with
:func:`register_source`; importing it (one line at the bottom of this file, or in user code) is all the
wiring there is. The registry gives:

* :func:`parse_spec` / :func:`source_specs` — what ``hubscan survey --source`` accepts (``hf``, ``timm``,
  ``local:DIR``, ``list:FILE``, and any registered source); the CLI's help is derived from it;
* :func:`enumerate_models` — a spec's models as ``(ModelRef, metadata)``;
* :func:`resolve` — pin a reference (commit sha, or a local content fingerprint) and choose its files;
* :func:`open_model` — the one way to a model's weights (:class:`~hubscan.weights.base.WeightSet`): pinned,
  read through the readers of :mod:`hubscan.weights`, a PEFT adapter as ΔW = s·B·A, with a base as ΔW
  (:func:`open_shared`: a base opened once for a batch of models).

Built in: ``hf`` (the Hugging Face Hub; the Hub client is its business), ``timm`` (timm's pretrained
names, weights from the Hub), ``local`` (files and folders), ``list`` (a file of references, one per
line, each owned by the source its scheme names).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

from hubscan.errors import SourceError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef, parse_ref, register_scheme
from hubscan.registry import Registry, load_plugins, plugin_modules

if TYPE_CHECKING:  # torch-free at import: the CLI lists the sources before anything is analyzed
    from hubscan.weights.base import WeightSet
    from hubscan.weights.shared import SharedReads

__all__ = ["SOURCES", "plugin_modules", "load_plugins", "Source", "register_source", "get_source", "sources",
           "source_specs", "parse_spec",
           "enumerate_models", "resolve", "Opened", "open_model", "open_shared", "PAIR_WINDOW"]


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

    # Optional: ``adapter_config(ref, client) -> LoraConfig | None`` — the PEFT adapter config when the pinned
    # ref is a LoRA adapter (:func:`open_model` then reads it as ΔW = s·B·A); ``open_model(ref, client) ->
    # (WeightSet, pinned ref, metadata)`` — open first and pin after (the local source: a reader's error then
    # names the file).


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


#: Tensors a model's own analysis and its delta may be apart (:func:`open_model` with ``own=True``): a tensor
#: read for one is kept this many further reads for the other (the window of
#: :class:`hubscan.weights.shared.SharedReads`).
PAIR_WINDOW = 8


@dataclasses.dataclass
class Opened:
    """A model opened by :func:`open_model`.

    Attributes
    ----------
    weights : WeightSet
        What to analyze: the model's weights (a LoRA adapter's as ΔW = s·B·A per module), or, with a base,
        ΔW = W − W_base per matched tensor (an adapter: s·B·A and W + ΔW). ``weights.kind`` says which.
    ref : ModelRef or None
        The pinned reference (None for a WeightSet handed in).
    meta : dict
        What the source knows of the model (empty when the reference came pinned).
    own : WeightSet or None
        With a base and ``own=True``: the model's own weights, as :func:`open_model` without a base opens
        them, reading each stored tensor once for both ``own`` and ``weights``.
    """

    weights: WeightSet
    ref: ModelRef | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    own: WeightSet | None = None

    @property
    def name(self) -> str:
        """What results name as analyzed: the reference, or the files of a WeightSet handed in."""
        return str(self.ref) if self.ref is not None else ",".join(self.weights.files)


def _open(model, client: HubClient) -> tuple[WeightSet, ModelRef | None, dict, object]:
    """(weights as stored, pinned ref, metadata, LoRA config when the source says it is a PEFT adapter)."""
    from hubscan.weights.base import WeightSet
    from hubscan.weights.memory import ACCEPTED, in_memory, module_device, open_object

    if isinstance(model, WeightSet):
        return model, None, {}, None
    if in_memory(model):  # a module, state dict, safetensors bytes or Keras model: read where it is
        device = module_device(model)
        return open_object(model), None, {"device": device} if device else {}, None
    if not isinstance(model, (str, os.PathLike, ModelRef)):
        name = type(model).__name__
        raise TypeError(f"hubscan cannot analyze a{'n' if name[:1].lower() in 'aeiou' else ''} {name}: expected a "
                        "path or reference (str, "
                        f"os.PathLike, ModelRef), a WeightSet, or {ACCEPTED}")
    ref = _as_ref(model)
    source = get_source(ref.source)
    if hasattr(source, "open_model"):
        ws, pinned, meta = source.open_model(ref, client)
    else:
        pinned, meta = (ref, {}) if ref.revision and ref.files else source.resolve(ref, client)
        ws = source.open(pinned, client)
    try:
        config = source.adapter_config(pinned, client) if hasattr(source, "adapter_config") else None
    except BaseException:
        ws.close()
        raise
    return ws, pinned, meta, config


def open_model(model: ModelRef | str | os.PathLike | WeightSet, client: HubClient | None = None, *, base=None,
               shared: SharedReads | None = None, own: bool = False) -> Opened:
    """Open a model for analysis: the one way from a reference to a :class:`~hubscan.weights.base.WeightSet`.

    The model's source pins it (unless the reference is pinned already: revision and files, as a hub
    listing gives them), opens its files through the readers of :mod:`hubscan.weights`, and says whether
    it is a PEFT adapter (``Source.adapter_config``: a model whose chosen weight files are ``adapter_model.*``,
    :func:`hubscan.weights.peft.is_adapter`, with its ``adapter_config.json``), which is then read as ΔW = s·B·A
    per module (:func:`hubscan.weights.peft.open_adapter`).

    Parameters
    ----------
    model : str, path, ModelRef, WeightSet or a model in memory
        ``hf:ORG/NAME[@REV]``, ``timm:ARCH.TAG``, a path, any registered source's reference, an opened set, or
        a torch module, state dict, safetensors bytes or Keras 3 model (:mod:`hubscan.weights.memory`; its
        ``meta`` then says the module's ``device`` when not the CPU).
    client : HubClient, optional
        Hub settings (endpoint, token, retries); default from the environment.
    base : str, path, ModelRef or WeightSet, optional
        A base model (any source): the result reads ΔW = W − W_base per matched tensor
        (:func:`hubscan.weights.delta.open_delta`; an adapter: s·B·A plus W + ΔW).
    shared : SharedReads, optional
        The base, opened once for several models (:func:`open_shared`): this model's delta reads a view of
        it, so a batch of children reads their parent's tensors once. Stands for ``base``.
    own : bool
        With a base: also open the model's own weights (:attr:`Opened.own`), each stored tensor read once
        for both (:class:`~hubscan.weights.shared.SharedReads`, :data:`PAIR_WINDOW`). The two sets close
        the model when both are closed.

    Returns
    -------
    Opened

    Raises
    ------
    hubscan.errors.HubscanError
        The model or the base cannot be found, pinned or opened (nothing is left open then).
    TypeError
        ``model`` or ``base`` is none of these (one line naming what is accepted).
    """
    from hubscan.weights.delta import open_delta
    from hubscan.weights.peft import open_adapter
    from hubscan.weights.shared import SharedReads

    client = client or HubClient()
    ws, ref, meta, config = _open(model, client)
    if base is None and shared is None:
        return Opened(open_adapter(ws, config) if config else ws, ref, meta)
    try:
        bws = shared.view() if shared is not None else _open(base, client)[0]
    except BaseException:
        ws.close()
        raise
    mine = None
    if own:
        mine, ws = SharedReads(ws, readers=2, window=PAIR_WINDOW).views(2)
        mine = open_adapter(mine, config) if config else mine
    return Opened(open_adapter(ws, config, bws) if config else open_delta(ws, bws), ref, meta, own=mine)


def open_shared(model: ModelRef | str | os.PathLike, client: HubClient | None = None, *,
                readers: int) -> SharedReads:
    """Open a model once for several readers (a parent for a batch of its children: :func:`open_model`
    ``shared=``): each of its stored tensors is read once and held until ``readers`` loads took it.
    Close it when the batch is done.

    Raises
    ------
    hubscan.errors.HubscanError
        The model cannot be found, pinned or opened.
    """
    from hubscan.weights.shared import SharedReads

    return SharedReads(_open(model, client or HubClient())[0], readers=readers)


# Sources register themselves on import; a new source is one more module and one more line here.
from hubscan.sources import hf as _hf  # noqa: E402,F401
from hubscan.sources import timm as _timm  # noqa: E402,F401
from hubscan.sources import local as _local  # noqa: E402,F401
from hubscan.sources import listfile as _listfile  # noqa: E402,F401
