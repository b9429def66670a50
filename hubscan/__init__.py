"""hubscan: Heavy-Tailed Self-Regularization spectra of whole model hubs.

Public API::

    import hubscan
    result = hubscan.analyze("path/to/model")        # AnalysisResult
    result.to_pandas(); result.summary
    hubscan.analyze(model)                           # a torch / Keras model or state dict in memory
    details = hubscan.WeightWatcher(model=model).analyze()   # WeightWatcher 0.7.7's interface
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("hubscan")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"


def analyze(model, options=None, *, client=None, base=None, **kwargs):
    """Analyze every weight matrix of one model.

    Opens the model with :func:`hubscan.sources.open_model` (the one way to a model's weights) and analyzes
    them with :func:`hubscan.analysis.analyze`.

    Parameters
    ----------
    model : str, path, ModelRef, WeightSet, or a model in memory
        ``hf:ORG/NAME[@REV]`` (hub, read by HTTP range requests), ``timm:ARCH.TAG``, a local
        safetensors / torch / ONNX / GGUF file or Hugging Face layout folder (sharded or not), any
        registered source's reference, an opened :class:`~hubscan.weights.base.WeightSet`; or, in memory
        (:mod:`hubscan.weights.memory`, nothing copied but the matrix being decomposed): a
        ``torch.nn.Module`` (torchvision, timm, transformers, peft …; each tensor typed by its owning module,
        parametrizations read as the effective weight), a state dict (``Mapping[str, Tensor | ndarray]``),
        safetensors ``bytes``, or a Keras 3 model (extra ``hubscan[keras]``).
    options : AnalyzeOptions, optional
        Analysis settings; keyword arguments override them (``analyze(p, device="cuda", alpha_ci=0.95)``).
        A module on an accelerator is analyzed on its device unless ``options`` or ``device=`` say otherwise.
    client : HubClient, optional
        Hub endpoint, token, retries (defaults from ``HF_ENDPOINT``, ``HF_TOKEN`` …). hubscan leaves the
        process's ``huggingface_hub`` HTTP client as it finds it (entry points install hubscan's:
        :func:`hubscan.hub.install_http_client`).
    base : str, path, ModelRef or WeightSet, optional
        A base model (any source): each row is then the ESD of ΔW = W − W_base of a matched tensor,
        with the distance columns (:mod:`hubscan.weights.delta`). A local LoRA adapter folder
        (``adapter_config.json``) or hub adapter repository (weights ``adapter_model.*``) is always read
        as ΔW = s·B·A per module, plus W + ΔW when ``base`` is given (:mod:`hubscan.weights.peft`).

    Returns
    -------
    AnalysisResult
        ``.rows`` / ``.to_arrow()`` / ``.to_pandas()`` per matrix and ``.summary`` for the model.

    Raises
    ------
    hubscan.errors.HubscanError
        The files cannot be opened safely (unsafe pickle, corrupt header, no weights …); the
        message names the file and the reason. Problems of single layers do not raise.
    TypeError
        ``model`` is none of the above (one line naming what is accepted).
    """
    import dataclasses

    import os

    from hubscan.analysis import AnalyzeOptions, analyze as analyze_weights
    from hubscan.refs import ModelRef
    from hubscan.sources import open_model

    given = options is not None or "device" in kwargs
    options = dataclasses.replace(options or AnalyzeOptions(), **kwargs)  # a bad option fails before any read
    opened = open_model(model, client, base=base)
    if not given and opened.meta.get("device"):  # a module on an accelerator is analyzed there
        options = dataclasses.replace(options, device=opened.meta["device"])
    named = isinstance(model, (str, os.PathLike, ModelRef))
    return analyze_weights(opened.weights, options, source=str(model) if named else None,
                           ref=opened.ref, meta=opened.meta)


def __getattr__(name):  # lazy: `import hubscan` stays light (no torch import until used)
    if name in ("AnalyzeOptions", "AnalysisResult"):
        from hubscan import analysis as _analyze_mod
        return getattr(_analyze_mod, name)
    if name == "WeightWatcher":  # WeightWatcher 0.7.7's interface (hubscan/ww.py)
        from hubscan.ww import WeightWatcher
        return WeightWatcher
    raise AttributeError(name)


__all__ = ["analyze", "AnalyzeOptions", "AnalysisResult", "WeightWatcher", "__version__"]
