"""How close each idealized key is to its learned key, by the paper's residual measure and by correlation.

    python benchmarks/idealized_keys_table.py

Prints the Markdown table quoted in the README (section "The 8 universal keys"). For each key at 7x7:

- the paper's residual (Lindeberg, Babaiee, Kiasari, arXiv:2509.12746; ``keyfilterdiff`` in its public code): the L2
  norm of the idealized model in its own units (``idealized_keys(7, normalize=False)``: ``T`` sums to 1, a difference
  responds with 1 to a unit ramp) minus the learned filter scaled to the same units. Keys 1-6 are divided by their
  response to the ramp ``x - m_x`` (or ``y - m_y``), centred on the mean position ``m`` of the filter's absolute
  values; keys 7 and 8 first lose the paper's DC level ``C`` and are then divided by their sum. The response is a
  convolution at the centre, ``sum f(x, y) * (-x - m_x)``, with ``y`` pointing up;
- the same residual for key 7 as the repository's experiment script renders it (``key7="experiment-script"``), in its
  own units (``T`` summing to 1 is its only scale) and, to compare shapes alone, with its normalized key brought to
  the mean and L2 norm of the paper's model;
- the correlation of the normalized idealized key (mean 0, L2 norm 1) with the learned key (negative for keys 2 and 3,
  whose idealized models follow the sign convention of Gaussian derivatives).
"""

import numpy as np

from masterkey.keys import (
    IDEALIZED_SIGMAS,
    KEY7_ALPHA,
    KEY_NAMES,
    idealized_keys,
    key_correlation,
    learned_keys,
)

#: The paper's DC level of the learned keys 7 and 8 (``Chat`` in ``model-fitting/filteranal.py`` of
#: tonylindeberg/masterfiltmodel, CC BY 4.0): the level whose removal minimises the spread sqrt(det Var(|f - C|)),
#: found there on a grid with parabolic interpolation (``keyfilteranal.ipynb``).
DC_LEVEL = {6: -0.011775472973773075, 7: -0.0386329733224079}
#: Which coordinate each of keys 1-6 differentiates (0-based): the ramp its response is measured with.
RAMP_AXIS = {0: "y", 1: "x", 2: "y", 3: "x", 4: "x", 5: "y"}


def scaled_learned(k: int, learned: np.ndarray) -> np.ndarray:
    """The learned key ``k`` (0-based) in the units of its idealized model, as the paper scales it."""
    half = learned.shape[0] // 2
    n = np.arange(-half, half + 1)
    x, y = np.meshgrid(n, -n)  # row 0 is the top: y points up
    if k in DC_LEVEL:
        f = learned - DC_LEVEL[k]
        return f / f.sum()
    w = np.abs(learned)
    coordinate = x if RAMP_AXIS[k] == "x" else y
    centre = (coordinate * w).sum() / w.sum()
    return learned / (learned * (-coordinate - centre)).sum()


def main() -> None:
    learned = learned_keys().double().numpy()
    models = idealized_keys(7, normalize=False).double().numpy()
    script7 = idealized_keys(7, key7="experiment-script", normalize=False)[6].double().numpy()
    script_corr = float((idealized_keys(7, key7="experiment-script")[6] * learned_keys()[6]).sum())
    correlation = key_correlation()
    print("| # | name | sigma_x | sigma_y | paper's residual | correlation with the learned key |")
    print("|---|---|---|---|---|---|")
    for k in range(8):
        target = scaled_learned(k, learned[k])
        residual = np.linalg.norm(models[k] - target)
        sx, sy = IDEALIZED_SIGMAS[k]
        print(f"| {k + 1} | `{KEY_NAMES[k]}` | {sx:.4f} | {sy:.4f} | {residual:.3f} | {correlation[k]:+.3f} |")
        if k == 6:
            paper7 = models[6]
            shape = script7 - script7.mean()
            shape = shape / np.linalg.norm(shape) * np.linalg.norm(paper7 - paper7.mean()) + paper7.mean()
            print(f"| 7, experiment script | `T - 0.5 Lap T` | 0.675 | 0.675 | {np.linalg.norm(script7 - target):.3f} "
                  f"({np.linalg.norm(shape - target):.3f} at the paper model's mean and norm) | {script_corr:+.3f} |")
    print(f"\nkey 7: alpha = {KEY7_ALPHA:.4f}")


if __name__ == "__main__":
    main()
