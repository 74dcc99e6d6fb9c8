"""What the search saw, in two figures: every trial across every searched hyperparameter
(parallel coordinates) and a rough importance of each hyperparameter on the objective."""

import numpy as np
import pandas as pd

from project import figures
from project.report.blocks import figure, p, plain, table

MIN_TRIALS_FOR_IMPORTANCE = 4


def axis_values(values, param):
    """A hyperparameter's trial values placed on [0, 1] between its card range (log10 when
    log-sampled; choices evenly spaced), with the labels of the axis's ends or choices."""
    if param.get("choices") is not None:
        choices = [plain(c) for c in param["choices"]]
        spacing = max(len(choices) - 1, 1)
        position = {c: (i / spacing if len(choices) > 1 else 0.5) for i, c in enumerate(choices)}
        placed = np.array([position.get(plain(v), np.nan) if pd.notna(v) else np.nan for v in values], dtype=float)
        return placed, {position[c]: c for c in choices}
    log = param.get("sampling") == "log"
    low, high = float(param["min"]), float(param["max"])
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    scale = np.log10 if log else (lambda x: x)
    with np.errstate(invalid="ignore", divide="ignore"):
        placed = (scale(numbers) - scale(low)) / ((scale(high) - scale(low)) or 1.0)
    return placed, {0.0: plain(low), 1.0: plain(high)}


def importance(view, space):
    """|Spearman rho| and random-forest importance (fixed seed) of each hyperparameter on the
    objective, over the completed trials; None when fewer than MIN_TRIALS_FOR_IMPORTANCE."""
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestRegressor

    done = view[~view["failed"] & view["objective"].notna()]
    names = [n for n in space if n in done]
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or not names:
        return None
    x = np.column_stack([axis_values(done[n].tolist(), space[n])[0] for n in names])
    with np.errstate(all="ignore"):
        x = np.nan_to_num(np.where(np.isnan(x), np.nanmedian(x, axis=0), x), nan=0.5)  # a trial without the value
    y = done["objective"].to_numpy(dtype=float)
    rho = []
    for column in x.T:
        value = spearmanr(column, y).statistic if np.ptp(column) > 0 and np.ptp(y) > 0 else 0.0
        rho.append(float(np.nan_to_num(value)))
    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(x, y).feature_importances_
    return pd.DataFrame({"hyperparameter": names, "spearman": rho, "forest": forest})


def insight_blocks(view, space, objective, figs):
    names = [n for n in space if n in view]
    axes = [(n, *axis_values(view[n].tolist(), space[n])) for n in names]
    label = f"val {objective}" if not objective.startswith("val") else objective
    figs["trials_parallel.png"] = figures.parallel_coordinates(
        axes, view["objective"].to_numpy(dtype=float), view["failed"].to_numpy(), label
    )
    blocks = [
        figure(
            "trials_parallel.png",
            "every trial across every searched hyperparameter (log axes for log-sampled ones), coloured by the "
            "objective; failed and exploded trials dashed red",
        )
    ]
    scores = importance(view, space)
    if scores is None:
        return blocks + [p(f"No importance figure: it needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials.")]
    figs["trials_importance.png"] = figures.importance_bars(
        scores["hyperparameter"].tolist(), scores["spearman"].to_numpy(), scores["forest"].to_numpy()
    )
    rows = [[r.hyperparameter, f"{r.spearman:+.2f}", f"{r.forest:.2f}"] for r in scores.itertuples()]
    return blocks + [
        figure("trials_importance.png", "importance of each hyperparameter on the objective"),
        table(["hyperparameter", "Spearman rho with the objective", "random-forest importance"], rows),
        p(
            f"Importance over {int((~view['failed'] & view['objective'].notna()).sum())} completed trials: with so few "
            "trials these are rough, and a hyperparameter the fine stage narrowed looks less important than it is."
        ),
    ]
