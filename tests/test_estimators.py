"""The transferability estimators against their reference code, on fixed inputs.

REFERENCE was computed with the code each estimator's ``reference`` names, at the commits below, by
``scripts/estimator_references.py`` (its docstring says how to get the code):
thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07 (LogME, LEEP, NCE),
thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4 (H-score with and without shrinkage),
Long-Kai/TransRate@247d41a82037e9ca8a41ce1318ac11cc7b1cd885 (TransRate, the authors' code), and
scikit-learn's KNeighborsClassifier and NearestCentroid with LeaveOneOut (kNN, nearest centroid; scikit-learn
1.9.1).
"""

import numpy as np
import pytest
from estimator_inputs import CASES, fixed_inputs

from transfer_core.estimators import ESTIMATORS, EstimatorInputs

REFERENCE = {
    "tall": {
        "logme": -0.3493238677821163,
        "leep": -1.3708367483727488,
        "nce": -1.302862706290934,
        "hscore": 1.3950289394199644,
        "hscore_unshrunk": 1.7906502009338634,
        "transrate": 0.19805422998754185,
        "knn": 65.33333333333333,
        "centroid": 72.0,
    },
    "wide": {
        "logme": 1.8508842157361303,
        "leep": -1.116811222267446,
        "nce": -1.1216662052526052,
        "hscore": 2.4073719623055068,
        "hscore_unshrunk": 2.9999999999999982,
        "transrate": 1.6238972286288518,
        "knn": 92.5,
        "centroid": 97.5,
    },
}


def inputs(case: str) -> EstimatorInputs:
    features, labels, probs = fixed_inputs(case)
    return EstimatorInputs(features, labels, probs)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["logme", "leep", "nce", "hscore", "hscore_unshrunk", "transrate", "knn", "centroid"])
def test_each_estimator_matches_its_reference_code_on_fixed_inputs(name, case):
    if name == "hscore_unshrunk":
        cls = ESTIMATORS.get("hscore")
        estimator = cls(cls.Options(shrinkage=False))
    else:
        estimator = ESTIMATORS.get(name)()
    assert estimator.score(inputs(case)) == pytest.approx(REFERENCE[case][name], rel=1e-7, abs=1e-9)


def test_every_registered_estimator_is_checked_against_a_reference_and_describes_itself():
    assert set(ESTIMATORS.names()) <= {name.split("_")[0] for name in REFERENCE["tall"]}
    for name in ESTIMATORS.names():
        described = ESTIMATORS.get(name).describe()
        assert described["paper"] and described["reference"] and described["features"], name


def test_scores_that_should_not_see_a_relabelling_or_a_rescaling_do_not():
    features, labels, probs = fixed_inputs("tall")
    permutation = np.random.RandomState(0).permutation(labels.max() + 1)
    base = {name: ESTIMATORS.get(name)().score(EstimatorInputs(features, labels, probs)) for name in ESTIMATORS.names()}
    renamed = EstimatorInputs(features, permutation[labels], probs[:, ::-1].copy())  # target and source classes renamed
    for name in set(ESTIMATORS.names()) - {"knn"}:  # kNN breaks a tied vote by class index, as scikit-learn does
        assert ESTIMATORS.get(name)().score(renamed) == pytest.approx(base[name], rel=1e-9), name
    scaled = EstimatorInputs(features * 7.0, labels, probs)
    for name in (
        "hscore",
        "transrate",
        "knn",
        "centroid",
        "leep",
        "nce",
    ):  # LogME's evidence depends on the scale, by design
        assert ESTIMATORS.get(name)().score(scaled) == pytest.approx(base[name], rel=1e-6), name


def test_features_that_carry_the_labels_outscore_features_that_do_not():
    features, labels, probs = fixed_inputs("tall")
    noise = np.abs(np.random.RandomState(1).normal(size=features.shape))
    for name in ("logme", "hscore", "transrate", "knn", "centroid"):
        estimator = ESTIMATORS.get(name)()
        informative = estimator.score(EstimatorInputs(features, labels, probs))
        assert informative > estimator.score(EstimatorInputs(noise, labels, probs)), name
    one_hot_source = np.eye(labels.max() + 1)[labels] * 0.9 + 0.02  # a source head that names the target class
    for name in ("leep", "nce"):
        estimator = ESTIMATORS.get(name)()
        assert estimator.score(EstimatorInputs(features, labels, one_hot_source)) > estimator.score(
            EstimatorInputs(features, labels, probs)
        ), name
