"""The reference values of tests/test_estimators.py: each estimator's score on the fixed inputs of
tests/estimator_inputs.py, computed with its reference code (the code each estimator's ``reference`` names).

    git clone https://github.com/thuml/LogME && git -C LogME checkout 56551ca
    git clone https://github.com/thuml/Transfer-Learning-Library && git -C Transfer-Learning-Library checkout c4aa59e
    git clone https://github.com/Long-Kai/TransRate && git -C TransRate checkout 247d41a
    pip install numba  # LogME.py compiles its helpers with it
    python scripts/estimator_references.py --logme LogME --tllib Transfer-Learning-Library --transrate TransRate

prints the values as the test holds them. Nothing of the reference code is copied into this repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from estimator_inputs import CASES, fixed_inputs  # noqa: E402


def module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # the authors' files import their siblings
    spec.loader.exec_module(loaded)
    return loaded


def official_transrate(repo: Path, features: np.ndarray, labels: np.ndarray, eps: float = 1e-4) -> float:
    """The authors' pipeline: centred features -> transrate_eig (eigenvalues, pickled) -> process_transrate_logs."""
    generate = module(repo / "generate_transrate" / "transrate.py")
    results = module(repo / "extract_result_utils.py")
    with tempfile.TemporaryDirectory() as folder:
        generate.transrate_eig(features - features.mean(axis=0, keepdims=True), labels.copy(), folder)
        rz, rzc = results.process_transrate_logs(f"{folder}/Z_centralized.pkl", eps=eps)
    return float(rz - rzc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logme", type=Path, required=True, help="a checkout of thuml/LogME at 56551ca")
    parser.add_argument("--tllib", type=Path, required=True, help="thuml/Transfer-Learning-Library at c4aa59e")
    parser.add_argument("--transrate", type=Path, required=True, help="Long-Kai/TransRate at 247d41a")
    args = parser.parse_args()
    logme, leep, nce = (module(args.logme / f"{name}.py") for name in ("LogME", "LEEP", "NCE"))
    hscore = module(args.tllib / "tllib" / "ranking" / "hscore.py")
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

    values = {}
    for case in CASES:
        features, labels, probs = fixed_inputs(case)
        knn = KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")
        predicted = cross_val_predict(knn, features, labels, cv=LeaveOneOut())
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        nearest_mean = cross_val_predict(NearestCentroid(), unit, labels, cv=LeaveOneOut())
        values[case] = {
            "logme": float(logme.LogME(regression=False).fit(features, labels)),
            "leep": float(leep.LEEP(probs, labels)),
            "nce": float(nce.NCE(probs.argmax(axis=1), labels)),
            "hscore": float(hscore.regularized_h_score(features, labels)),
            "hscore_unshrunk": float(hscore.h_score(features, labels)),
            "transrate": official_transrate(args.transrate, features, labels),
            "knn": float(100.0 * (predicted == labels).mean()),
            "centroid": float(100.0 * (nearest_mean == labels).mean()),
        }
    print("REFERENCE = {")
    for case, scores in values.items():
        print(f"    {case!r}: {{")
        for name, value in scores.items():
            print(f"        {name!r}: {value!r},")
        print("    },")
    print("}")


if __name__ == "__main__":
    main()
