"""``xlt predict``: rank source languages for a new target language from the user's own transfer results.

:mod:`xlt.predict.distances` gives URIEL+ typological distances of every pair of languages (urielplus 1.3.2's
``new_distance``, vectorised; :func:`uriel_distances` here) and the typology-overlap pair features of Zubillaga et
al. (2024). The function is exported as ``uriel_distances``, not ``distances``, so that it does not hide the
submodule ``xlt.predict.distances``.
"""

from xlt.predict.distances import ALL_KINDS, Distances, typology_overlaps, uriel_code
from xlt.predict.distances import distances as uriel_distances

__all__ = ["ALL_KINDS", "Distances", "typology_overlaps", "uriel_code", "uriel_distances"]
