"""One error type per condition (hubscan/errors.py): raised where the condition arises, and callers
(survey statuses, missing shards) dispatch on the type, never on the message text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hubscan
from hubscan import errors
from hubscan.survey import error_status


def test_missing_path_and_empty_folder_are_different_types(tmp_path):
    with pytest.raises(errors.PathNotFoundError, match="no such file or folder") as info:
        hubscan.analyze(str(tmp_path / "absent.safetensors"))
    assert isinstance(info.value, errors.NoWeightsError) and isinstance(info.value, LookupError)
    assert error_status(info.value) == "failed"
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.NoWeightsError) as info:
        hubscan.analyze(str(tmp_path / "empty"))
    assert not isinstance(info.value, errors.PathNotFoundError)
    assert error_status(info.value) == "skipped"


def test_statuses_by_type_not_text():
    # the message says "no weight files", but the type says corrupt: failed
    assert error_status(errors.CorruptFileError("f", "no weight files here, header truncated")) == "failed"
    assert error_status(errors.NoWeightsError("m", "nothing analyzable")) == "skipped"
    assert error_status(errors.GatedModelError("hf:org/x", "gated")) == "skipped"
    assert error_status(errors.RemoteFileNotFoundError("hf:org/x/a.bin", "gone")) == "failed"


def test_missing_dataset_is_not_a_weights_error(tmp_path):
    from hubscan.store import Dataset
    with pytest.raises(errors.DatasetNotFoundError, match="no hubscan dataset") as info:
        Dataset(str(tmp_path / "nothing"), create=False).require()
    assert not isinstance(info.value, errors.NoWeightsError) and isinstance(info.value, LookupError)


def test_nonfinite_error_lives_in_errors():
    from hubscan.esd.eigen import compute_esd
    w = torch.from_numpy(np.ones((8, 4)))
    w[0, 0] = float("nan")
    with pytest.raises(errors.NonFiniteError):
        compute_esd(w[None])
    assert issubclass(errors.NonFiniteError, ValueError)


def test_hub_not_found_is_typed():
    from hubscan.hub import HubClient

    def absent():
        raise FileNotFoundError("a.bin")

    with pytest.raises(errors.RemoteFileNotFoundError) as info:
        HubClient(max_retries=0).call(absent, what="hf:org/x/a.bin")
    assert isinstance(info.value, errors.SourceError) and info.value.where == "hf:org/x/a.bin"
