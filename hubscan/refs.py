"""Model references: which model, from which source, at which exact revision, from which files.

Strings accepted (:func:`parse_ref`):

* ``hf:ORG/NAME`` or ``hf:ORG/NAME@REVISION`` — a Hugging Face Hub model repo (revision: branch,
  tag or commit sha; pinned to the commit sha when resolved);
* ``timm:ARCH.TAG`` (or ``timm:ARCH``, timm's default tag) — a timm pretrained model, fetched
  from the hub repo its pretrained config names (mostly ``timm/ARCH.TAG``);
* ``local:PATH`` or a plain path — a weight file or a Hugging Face layout folder;
* ``NAME:BODY`` for any other registered source (:func:`hubscan.sources.register_source`).

Each source parses its own part after the colon (``Source.parse``, registered here with
:func:`register_scheme`); a string with no registered scheme is a local path. Only the standard library
(and the registry type) here: every other module may import this one.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import posixpath
import stat

from hubscan.registry import Registry


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """One model to analyze.

    Attributes
    ----------
    source : str
        The registered source that owns the reference (``hf``, ``timm``, ``local`` …;
        :func:`hubscan.sources.register_source`).
    id : str
        Hub repo id (``hf``), timm ``arch.tag`` name (``timm``; the key that joins timm's results
        CSVs), or the path (``local``): relative to the surveyed folder, or to the current directory
        for a single path (see :mod:`hubscan.sources.local`).
    revision : str or None
        Requested (unresolved) or pinned revision: the commit sha for the hub, a content
        fingerprint (size + mtime hash) for local files. None until resolved.
    files : tuple of str
        The weight files chosen (paths in the repo, or local paths relative to ``root``); empty until
        resolved.
    repo_id : str or None
        The hub repo holding the weights (``timm/ARCH.TAG`` for most timm models; ``id`` for hf).
    root : str or None
        Local models: the folder ``id`` is relative to (not part of the model's identity, never stored).
    """

    source: str
    id: str
    revision: str | None = None
    files: tuple = ()
    repo_id: str | None = None
    root: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.is_path:
            return self.id
        return f"{self.source}:{self.id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def is_path(self) -> bool:
        """Whether the reference is written as a plain path (its source owns references without a scheme)."""
        return self.source == plain_scheme()

    @property
    def path(self) -> str:
        """Local models: where the files are (``root``/``id``)."""
        return os.path.join(self.root, self.id) if self.root else self.id


#: Reference schemes: name -> parser of the part after the colon (filled by
#: :func:`hubscan.sources.register_source`).
SCHEMES: Registry = Registry("reference scheme")
_PLAIN: list = []  # the scheme of references written without one (paths), when a source registered it


def register_scheme(name: str, parse, module: str | None = None, *, plain: bool = False) -> None:
    """Make ``NAME:BODY`` parse as ``parse(BODY) -> ModelRef`` in :func:`parse_ref` (``module``: who
    registers it); with ``plain``, also a reference with no registered scheme (a path)."""
    SCHEMES.register(name, parse, module=module)
    if plain:
        _PLAIN[:] = [name]


def plain_scheme() -> str | None:
    """The scheme of references written without one (the source of paths), or None before it registered."""
    return _PLAIN[0] if _PLAIN else None


def parse_ref(text: str | os.PathLike) -> ModelRef:
    """Parse a model reference string.

    Parameters
    ----------
    text : str or path
        ``SCHEME:BODY`` for a registered source (``hf:ORG/NAME[@REV]``, ``timm:NAME`` …), ``local:PATH``
        or a path. The sources register their schemes when :mod:`hubscan.sources` is imported.

    Returns
    -------
    ModelRef
        Unresolved (no pinned revision or files unless the string gives a revision).

    Raises
    ------
    ValueError
        Malformed reference (the source's parser says why: e.g. a repo id with characters the hub
        does not allow, ``..``), or empty; a path before :mod:`hubscan.sources` registered its source.
    """
    text = os.fspath(text)
    scheme, colon, body = text.partition(":")
    if colon and scheme in SCHEMES:
        return SCHEMES[scheme](body)
    if not text:
        raise ValueError("empty model reference")
    if plain_scheme() is None:
        raise ValueError(f"{text}: no source reads plain paths (import hubscan.sources)")
    return SCHEMES[plain_scheme()](text)


def not_found_reason(path: str | os.PathLike) -> str:
    """Why a path given as a model reference cannot be opened: "no such file or folder", naming the
    registered schemes when it reads as ``SCHEME:…`` with a scheme no source has (``hff:org/x``), the target
    of a dangling symbolic link, or what the path is when it is there but neither a file nor a folder (a
    named pipe, a socket, a device)."""
    text = os.fspath(path)
    if os.path.islink(text) and not os.path.exists(text):
        try:
            os.stat(text)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"a link to {os.readlink(text)}: a loop of symbolic links"
        return f"a link to {os.readlink(text)}, which does not exist"
    try:
        mode = os.stat(text).st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # there, but nothing to read
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        return f"is {kind}, not a file or folder hubscan reads"
    here = os.path.relpath(text) if os.path.isabs(text) else text
    scheme, colon, _ = here.partition(":")
    if colon and len(scheme) > 1 and scheme.replace("-", "").replace("_", "").replace(".", "").isalnum() \
            and scheme not in SCHEMES:
        return (f"no such file or folder, and {scheme}: is not a model reference scheme "
                f"({', '.join(f'{s}:' for s in sorted(SCHEMES))})")
    return "no such file or folder"


def check_repo_path(path: str, repo: str) -> str:
    """Refuse a repository file path that could leave the repository or the download folder.

    Parameters
    ----------
    path : str
        A path inside a repository, as a listing or a shard index names it.
    repo : str
        The repository, for messages.

    Returns
    -------
    str
        ``path`` unchanged.

    Raises
    ------
    hubscan.errors.UnsafeFileError
        Empty, absolute, with ``..`` or backslashes, or with a URL scheme / drive in its first part.
    """
    norm = posixpath.normpath(path) if path else ""
    if (not path or path.startswith(("/", "\\")) or "\\" in path or norm.startswith("..")
            or any(part == ".." for part in path.split("/")) or ":" in path.split("/")[0]):
        from hubscan.errors import UnsafeFileError
        raise UnsafeFileError(f"{repo}/{path}", "repository file path leaves the repository")
    return path


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
