"""hubscan: Heavy-Tailed Self-Regularization spectra of whole model hubs.

Public API::

    import hubscan
    result = hubscan.analyze("path/to/model")        # AnalysisResult
    result.to_pandas(); result.summary
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("hubscan")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"


def __getattr__(name):  # lazy: `import hubscan` stays light (no torch import until used)
    if name in ("analyze", "AnalyzeOptions", "AnalysisResult"):
        from hubscan import analysis as _analyze_mod
        return getattr(_analyze_mod, name)
    raise AttributeError(name)


__all__ = ["analyze", "AnalyzeOptions", "AnalysisResult", "__version__"]
