"""Exception types of hubscan.

Library code raises these; the CLI turns each into a one-line message of the form
``hubscan: error: <file or model>: <reason>`` and a non-zero exit status.
"""

from __future__ import annotations


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


class UnsafeFileError(HubscanError):
    """A weight file would need code execution (pickled globals outside the allow-list) to load."""


class CorruptFileError(HubscanError):
    """A weight file is malformed: bad header, offsets outside the file, overlapping tensors, truncated."""


class NoWeightsError(HubscanError):
    """A path or model holds no weight files, or its weight files hold no weight tensors."""


class UnsupportedFormatError(HubscanError):
    """A file's format is not one hubscan can read safely."""


class SourceError(HubscanError):
    """A model source (hub, timm, local folder) could not list or fetch a model."""


class GatedModelError(SourceError):
    """A gated or private model the token does not give access to (a survey records it as skipped)."""


class SkippedTensor(HubscanError):
    """Raised by a tensor's loader when, once read, the tensor is not to be analyzed (e.g. it is a tied copy
    of another): its row is ``skipped`` with this reason, not ``failed``."""
