"""xlt.eval.offtarget: the share of texts py3langid does not label as the requested language."""

from __future__ import annotations

import pytest

pytest.importorskip("py3langid")

from xlt.errors import XltError  # noqa: E402
from xlt.eval.offtarget import EMPTY, off_target_rate, py3langid_label  # noqa: E402

EN = ["The children walked along the river until the sun went down behind the hills.",
      "She opened the window because the kitchen was too warm after dinner.",
      "Our train was delayed for two hours, so we missed the first part of the concert.",
      "He wrote a long letter to his grandmother and posted it on Monday morning.",
      "The library will be closed next week while the roof is being repaired.",
      "Farmers in the valley are worried that the summer will be dry again this year.",
      "Please remember to bring your own water and a warm jacket for the walk.",
      "The committee decided to postpone the meeting until everyone had read the report.",
      "Many people believe that reading every day makes them calmer and happier.",
      "After the storm, the neighbours helped each other clear the fallen trees from the road."]
FR = ["Les enfants ont marché le long de la rivière jusqu'au coucher du soleil derrière les collines.",
      "Elle a ouvert la fenêtre parce que la cuisine était trop chaude après le dîner.",
      "Notre train avait deux heures de retard, alors nous avons manqué le début du concert.",
      "Il a écrit une longue lettre à sa grand-mère et l'a postée lundi matin.",
      "La bibliothèque sera fermée la semaine prochaine pendant la réparation du toit.",
      "Les agriculteurs de la vallée craignent que l'été soit encore sec cette année.",
      "N'oubliez pas d'apporter votre propre eau et une veste chaude pour la promenade.",
      "Le comité a décidé de reporter la réunion jusqu'à ce que tout le monde ait lu le rapport.",
      "Beaucoup de gens pensent que lire chaque jour les rend plus calmes et plus heureux.",
      "Après la tempête, les voisins se sont aidés à dégager les arbres tombés sur la route."]


def test_other_language_is_all_off_target_and_floor_is_zero():
    r = off_target_rate(FR, "eng", references=EN)
    assert (r.rate, r.off_target, r.n, r.labels, r.floor) == (1.0, 10, 10, {"fr": 10}, 0.0)
    assert (r.lang, r.label) == ("eng", "en")
    assert r.signature.startswith("off_target|lang:eng|label:en|lid:py3langid-0.4.0|n:10|xlt:")


def test_half_and_half_is_fifty_percent():
    for code in ("en", "eng"):  # ISO 639-1 and 639-3 give the same
        r = off_target_rate(EN[:5] + FR[:5], code)
        assert (r.rate, r.off_target, r.labels) == (0.5, 5, {"en": 5, "fr": 5})
    assert off_target_rate(EN[:5] + FR[:5], "fra").rate == 0.5


def test_empty_output_is_off_target():
    r = off_target_rate(EN[:3] + ["", "   "], "en")
    assert (r.off_target, r.n, r.labels[EMPTY]) == (2, 5, 2)


def test_labels_for_iso_639_3_and_macrolanguages():
    assert [py3langid_label(c) for c in ("swh", "sw", "arb", "cmn", "nob", "zsm", "pes", "fil", "ary")] == \
        ["sw", "sw", "ar", "zh", "no", "ms", "fa", "tl", "ary"]


def test_custom_identifier_labels_resolve_to_the_language():
    r = off_target_rate(["a", "b", "c", "d"], "swh", lid=lambda t: ("swa", 1.0) if t in "ab" else "eng")
    assert (r.rate, r.labels) == (0.5, {"eng": 2, "swa": 2})
    assert "lid:<lambda>" in r.signature


def test_unsupported_language_says_so():
    with pytest.raises(XltError) as e:
        off_target_rate(EN, "nya")
    assert "py3langid has no model for Chichewa (nya)" in e.value.problem
    assert "sn" in e.value.fix.split(", ") and "lid=" in e.value.fix


@pytest.mark.parametrize("texts,lang,needle", [([], "en", "empty"), ("some text", "en", "list of strings"),
                                                ([EN[0], None], "en", "not a string"), (EN, "xx", "unknown language")])
def test_bad_input_raises_xlt_error(texts, lang, needle):
    with pytest.raises(XltError) as e:
        off_target_rate(texts, lang)
    assert needle in e.value.problem and e.value.fix
