"""Writes markov-reference.json: P(conversion), removal effects and weights of random channel
paths as the `marketing-attribution-models` package (2.1.1, its `MarkovModel`, which
`mam.MAM.run_markov` runs) computes them, for
tests/unit/models/attribution/test_markov.py to check `markov_attribution` against.

The package is not a dependency of scorestream: run this with a Python that has it
(`pip install marketing-attribution-models==2.1.1` in a venv of its own):

    python tests/data/markov_reference.py > tests/data/markov-reference.json

Paths of 1 to 6 touches over 3 to 6 channels, 40 to 200 paths per case (each written
as its channels joined by " > "), fixed seeds. The
package keeps moves from a channel to itself when asked (`transition_to_same_state=True`),
as `TransitionCounts` counts them.
"""

from __future__ import annotations

import json
import random
import sys

import pandas as pd
from mam.models.markov import MarkovModel
from mam.preprocessing import MAMPipeline


def paths(seed: int) -> list[tuple[list[str], bool]]:
    rng = random.Random(seed)
    channels = [f"ch{i}" for i in range(rng.randrange(3, 7))]
    lift = {c: rng.uniform(0.0, 0.5) for c in channels}
    out = []
    for _ in range(rng.randrange(40, 201)):
        path = [rng.choice(channels) for _ in range(rng.randrange(1, 7))]
        p = min(0.95, 0.05 + sum(lift[c] for c in set(path)) / 2)
        out.append((path, rng.random() < p))
    return out


def main() -> None:
    cases = []
    for seed in range(8):
        case = paths(seed)
        df = pd.DataFrame({"journey_id": [str(i) for i in range(len(case))],
                           "channels": [" > ".join(p) for p, _ in case],
                           "time_till_end": [" > ".join("0" * len(p)) for p, _ in case],
                           "converted": [c for _, c in case]})
        unified = MAMPipeline.preprocess(df, "journey", "channels", "converted")
        model = MarkovModel(transition_to_same_state=True)
        weights = model._compute_markov(unified)
        matrix, _channels, _names = model._build_transition_matrix(unified)
        effects = model.removal_effect_df["removal_effect"].to_dict()
        cases.append({"seed": seed, "paths": [(" > ".join(p), c) for p, c in case],
                      "conversion_probability": float(model._calc_total_conversion(matrix)),
                      "removal_effects": {k: float(v) for k, v in effects.items()},
                      "weights": {k: float(v) for k, v in weights.items()}})
    json.dump({"package": "marketing-attribution-models 2.1.1", "cases": cases}, sys.stdout,
              sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
