"""Exception types of hubscan: one type per condition, so that callers dispatch on the type, never on
the message text.

Library code raises these; the CLI turns each :class:`HubscanError` into a one-line message of the
form ``hubscan: error: <file or model>: <reason>`` and a non-zero exit status. Where a standard
exception reads naturally as a second base (as huggingface_hub's ``errors.py`` does, e.g. its
``EntryNotFoundError``), it is one: a missing thing is also a ``LookupError``, a bad value also a
``ValueError``. Weight-reader errors (unsafe, corrupt, unsupported) keep ``HubscanError`` as their
only base so that a reader's ``except ValueError`` around a parser never swallows them.

:func:`storable` is the one rule for text that cannot be encoded (a name with bytes that are not UTF-8):
the messages, ids and rows that carry such a name carry it escaped (every room may import this module);
:func:`printable` the one rule for text written to a terminal.
"""

from __future__ import annotations

import os


def storable(text: str) -> str:
    """``text`` as valid UTF-8, for ids, metadata and the dataset's strings: bytes a file name could not
    decode (Python's surrogate escapes, :func:`os.fsdecode`) written ``\\xff``, other lone surrogates (a JSON
    header's ``"\\ud800"``) ``\\ud800``; valid text unchanged (ASCII at once)."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: object) -> str:
    """``text`` safe to write to a terminal: every character that is not printable written as its Python
    escape (``\\x1b``, ``\\n``, ``\\x00``, ``\\u202e``; ``\\udcff`` for a byte of a file name that is not
    UTF-8), so that a tensor name, path or reason read from a file can neither drive the terminal (ANSI
    escape sequences, a right-to-left override), break a line, nor stop the output. Printable text
    (letters of any script, emoji) is unchanged. The CLI's every printing path goes through it: tables,
    notes, errors, survey and log lines (the dataset keeps the real text)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def one_line(text, limit: int | None = None) -> str:
    """``text`` (or an exception's message) on one line — every run of whitespace one space — and, over
    ``limit`` characters, cut after its last whole word that fits, ``…`` marking the cut (a single word longer
    than ``limit`` is cut inside it). For a reason quoted from a library, whose text can be long."""
    text = " ".join(str(text).split())
    if limit is None or len(text) <= limit:
        return text
    head = text[:limit - 1]
    if text[limit - 1] != " " and " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:.") + "…"


class HubscanError(Exception):
    """Base class of every error hubscan raises on purpose.

    Parameters
    ----------
    where : str
        The file, model reference or layer the error is about (shown first in the message).
    reason : str
        One line saying what is wrong.
    """

    def __init__(self, where: str, reason: str):
        self.where = str(where)
        self.reason = " ".join(str(reason).split())  # one line, always
        super().__init__(f"{self.where}: {self.reason}")

    def __reduce__(self):  # picklable with its type (raised in a Ray actor, caught by type in the driver)
        return type(self), (self.where, self.reason)


# -- weight files ----------------------------------------------------------------------------------

class UnsafeFileError(HubscanError):
    """A weight file would need code execution (pickled globals outside the allow-list) to load."""


class CorruptFileError(HubscanError):
    """A weight file is malformed: bad header, offsets outside the file, overlapping tensors, truncated."""


class UnsupportedFormatError(HubscanError):
    """A file's format is not one hubscan can read safely."""


class NoWeightsError(HubscanError, LookupError):
    """A model holds no weight files, or its weight files hold no weight tensors (a survey records
    the model as skipped)."""


class UnreadFormatError(NoWeightsError):
    """A model's only weights are in a format hubscan recognises but does not read (OpenVINO IR, TensorFlow
    Lite, Core ML …; :data:`hubscan.weights.files.UNREAD_FORMATS`): the model is skipped, the reason naming
    the format."""


class PathNotFoundError(NoWeightsError):
    """A local model path (file or folder) does not exist, or cannot be opened by its name (a survey records
    the model as failed)."""


def undecodable_path(path: str) -> PathNotFoundError | None:
    """The error of a local path whose name, or the name of a folder on it, is not valid UTF-8 (bytes
    :func:`os.fsdecode` escaped), named with them escaped (:func:`storable`); None for any other path.
    Such a file is not read: torch's storage mapping and ``safetensors`` open paths given as UTF-8 only."""
    if storable(path) == path:
        return None
    name = os.path.basename(path.rstrip(os.sep))
    whose = "its name" if storable(name) != name else "the name of a folder on its path"
    return PathNotFoundError(storable(path), f"{whose} is not valid UTF-8 (shown with its bytes escaped): "
                                             "rename it to analyze it")


class SeveralModelsError(HubscanError, ValueError):
    """A local path given as one model is a folder of several (as a survey of it would enumerate them):
    analyzing them as one would mix their layers into one summary."""


class InvalidInputError(HubscanError, ValueError):
    """An input file hubscan refuses for its content (an accuracy CSV whose value is not a finite number …):
    the file named, with the reason."""


class SkippedTensor(HubscanError):
    """Raised by a tensor's loader when, once read, the tensor is not to be analyzed (e.g. it is a tied copy
    of another): its row is ``skipped`` with this reason, not ``failed``."""


class SameContentError(HubscanError):
    """Raised by a survey's content check (:attr:`hubscan.hub.HubClient.content_check`) when a model's weight
    files are byte-identical to a model already analyzed under the same settings: its reading stops before any
    tensor byte, and the survey gives it that model's rows. ``model_key``: the model analyzed."""

    def __init__(self, where: str, model_key: str):
        super().__init__(where, f"same content as {model_key}")
        self.model_key = model_key


class NonFiniteError(ValueError):
    """The weights hold NaN or ±inf values (raised by :mod:`hubscan.esd.eigen` and, for ΔW = W − W_base, by
    :mod:`hubscan.weights.delta` before any decomposition; the layer's row is failed with this message).

    Parameters
    ----------
    whose : str
        What holds them, ending the message ``non-finite values (NaN or inf) in <whose>``.
    """

    def __init__(self, whose: str = "the weights"):
        super().__init__(f"non-finite values (NaN or inf) in {whose}")


# -- sources ---------------------------------------------------------------------------------------

class SourceError(HubscanError):
    """A model source (hub, timm, local folder) could not list or fetch a model."""


class GatedModelError(SourceError):
    """A gated or private model the token does not give access to (a survey records it as skipped)."""


class RepositoryNotFoundError(SourceError, LookupError):
    """The hub has no such repository (or it is private and no token gives access)."""


class RevisionNotFoundError(SourceError, LookupError):
    """The repository has no such revision (branch, tag or commit)."""


class RemoteFileNotFoundError(SourceError, LookupError):
    """A file is absent from the repository at the pinned revision (HTTP 404 on a file, e.g. a shard
    its index names)."""


class HubUnreachableError(SourceError, ConnectionError):
    """The Hub cannot be reached at all (name resolution failed, connection refused): not retried."""


# -- the cluster -----------------------------------------------------------------------------------

class ClusterUnreachableError(HubscanError, ConnectionError):
    """The Ray cluster a survey was pointed at (``--address``, ``RAY_ADDRESS``) does not answer: nothing
    listens there (connection refused), the host cannot be resolved, or no answer came in time."""


# -- the dataset -----------------------------------------------------------------------------------

class DatasetNotFoundError(HubscanError, LookupError):
    """No hubscan dataset at a location (no table holds a file): ``Dataset.require``."""


class SurveyNotFoundError(HubscanError, LookupError):
    """A dataset has no survey of that id (``hubscan sql --as-of``)."""


class SchemaMismatchError(HubscanError, ValueError):
    """A producer emitted a column that its table's schema lacks (a typo, or a metric that was never
    registered): raised by :func:`hubscan.schema.rows_to_table` instead of dropping the value."""


class DatasetBusyError(HubscanError):
    """Another process holds the dataset's lease (one writing survey at a time per dataset,
    :class:`hubscan.store.Lease`), or a holder lost its lease to another."""


class DatasetWriteError(HubscanError):
    """The dataset cannot be written (read-only, permission denied, a storage error): checked before a
    survey starts; raised during one, it stops the survey."""


class DatasetCorruptError(HubscanError):
    """A table of the dataset cannot be read because a file of its ``_delta_log`` is damaged (``where``
    names the file; ``hubscan doctor`` says how to recover)."""
