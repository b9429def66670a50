"""Eigenvector localization (option ``vectors``, ``--vectors``): WeightWatcher's ``vectors=True`` metrics of
the bulk and the tail of the ESD (:func:`hubscan.esd.vectors.vector_metrics`), twelve columns
``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}``. One more eigendecomposition per layer."""

from __future__ import annotations

from hubscan.esd.registry import Spectrum, register_metric, register_option

register_option("vectors", bool, False, "eigenvector localization metrics of bulk and tail (WW vectors=True): 12 "
                "columns; one more eigendecomposition per layer")

_QUANTITIES = {"vec_entropy": "eigenvector entropy",
               "loc_ratio": "eigenvector localization ratio |v|_1/|v|_inf",
               "part_ratio": "eigenvector participation ratio |v|_2/|v|_4"}


def _vectors(s: Spectrum) -> dict | None:
    from hubscan.esd.vectors import vector_metrics

    return s.memo("vectors", lambda: vector_metrics(s.slices, s.fit.num_pl_spikes) if s.fit.status == "success"
                  else None)


def _column(name: str):
    def compute(s: Spectrum):
        got = _vectors(s)
        return got[name] if got else None
    compute.__name__ = name
    return compute


for _region in ("bulk", "tail"):
    for _stat in ("mean", "var"):
        for _q, _what in _QUANTITIES.items():
            _name = f"{_region}_{_stat}_{_q}"
            register_metric(_name, "float64", f"{_stat} of the {_what} over the {_region} (WW vectors=True; --vectors)",
                            option="vectors")(_column(_name))
