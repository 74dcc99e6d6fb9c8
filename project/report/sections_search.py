"""The Search section: method, spaces, the trials (tuning/trials.csv), the final round and the time
the search took (tuning/summary.json), and the objective against each searched hyperparameter."""

from pathlib import Path

import pandas as pd

from project import figures
from project.config.schema import SEARCHABLE
from project.report.blocks import f4, figure, h3, p, plain, py, span, table, ul, warning
from project.report.search_insight import insight_blocks

TOP_TRIALS = 10
NO_TEST_SELECTION = (
    "The test subset was not used for any selection: trials were ranked, narrowed and early-stopped on the "
    "validation subset only, and the test subset was evaluated once per trained model."
)


def space_text(entry):
    """A card Param or a tuning space entry ({"type": float|int|choice|fixed, ...}) in words."""
    if entry.get("type") == "fixed":
        return f"fixed at {plain(entry['value'])}"
    if entry.get("choices") is not None:
        return "choice of " + ", ".join(plain(c) for c in entry["choices"])
    step = f", step {plain(entry['step'])}" if entry.get("step") else ""
    kind = "integer, " if entry.get("type") == "int" else ""
    return f"{kind}{entry['sampling']} in [{plain(entry['min'])}, {plain(entry['max'])}]{step}"


def normalise_trials(trials, space):
    """trials.csv (a records.Trials) as the view the section reads: trial, stage, objective, epochs,
    status, failed, and the value of each searched hyperparameter."""
    frame = trials.frame()
    view = pd.DataFrame(
        {
            "trial": frame["trial_id"].astype(str),
            "stage": frame["stage"].astype(str),
            "objective": pd.to_numeric(frame[f"best_{trials.objective}"], errors="coerce"),
            "epochs": pd.to_numeric(frame["epochs_run"], errors="coerce"),
            "status": frame["status"].astype(str),
        }
    )
    view["failed"] = view["status"] != "completed"
    for name in space:
        if name in frame:
            view[name] = frame[name]
    return view


def search_time_blocks(summary):
    """The time the trials took, what a budget bought, and the final round of finalists (a records.TuningSummary)."""
    blocks = [p(f"**Search time:** {summary.trial_seconds:.1f} s of trials (every trial's wall time, all workers).")]
    budget = summary.budget
    if budget is not None:
        blocks.append(
            p(
                f"**Budget:** {budget.budget_seconds:.0f} s. The first trial took {budget.first_trial_seconds:.1f} s "
                f"(epochs {budget.epoch_seconds:.2f} s each, {budget.fixed_seconds:.1f} s building and tracing), "
                f"which bought {budget.trials['coarse']} coarse and {budget.trials['fine']} fine trials."
            )
        )
    final, best = summary.final_round, summary.best
    if final is not None:
        rows = [
            [
                f.stage,
                f.trial_id,
                f4(f.search_score),
                f4(f.model_extra[final.metric]),
                "yes" if (f.stage, f.trial_id) == (best.stage, best.trial_id) else "",
            ]
            for f in final.finalists
        ]
        blocks += [
            h3("Final round"),
            p(
                f"The top {len(rows)} trials of the search, each trained for the card's full epochs like the baseline; "
                f"the best {final.metric} became the tuned run (short trials rank roughly)."
            ),
            table(["stage", "trial", f"search {summary.objective}", f"full-length {final.metric}", "chosen"], rows),
        ]
    return blocks


def rank_blocks(ranks):
    """What `make bench` measured of this card's short-trial ranking (load.rank_agreement), if it did."""
    if not ranks:
        return []
    return [
        p(
            f"**Rank agreement** (`make bench`, {ranks['created'][:10]}): Spearman rho = {ranks['rho']:.2f} between "
            f"the {ranks['epochs']['coarse']}-epoch and {ranks['epochs']['full']}-epoch scores of {ranks['configurations']} "
            f"configurations of this card's space: "
            + (
                "short trials rank the configurations much as full-length ones do."
                if ranks["rho"] >= 0.7
                else "short trials rank the configurations only roughly; the final round matters."
            )
        )
    ]


def search_section(runs, root, tuning, best, cmd, figs, ranks=None):
    """tuning: load.Tuning; best: the tuned run's trial (records.Candidate) or None."""
    search = runs["baseline"][0]["config"]["paper"]["search"]
    if not search:
        return [warning("The paper card has no `search` section, so nothing was searched.")]
    space = search["space"]
    fine = tuning.fine.space if tuning.fine is not None else None
    blocks = [
        p(
            f"**Method:** Keras Tuner random search in two stages, coarse → fine. The coarse stage samples the card's "
            f"ranges below with few epochs per trial; the fine stage narrows every numeric range around the top "
            f"{search['top_k']} coarse trials (in log space for log-sampled ones), keeps only the choices found among "
            f"them, and trains each trial for more epochs. The best trial's values are then retrained with the card's "
            f"full epoch budget (the tuned run)."
        ),
        p(
            f"**Objective:** {search['objective']} ({search['direction']}imise), on the validation subset"
            + (
                f", the mean over the first {search['folds']} cross-validation folds (search.folds) for every trial "
                f"and finalist"
                if search.get("folds")
                else ", fold 1's under cross-validation"
                if runs["baseline"][0]["metrics"].fold
                else ""
            )
            + f". **Search seed:** {search['seed']}."
        ),
        p(f"**{NO_TEST_SELECTION}**"),
        h3("Search space"),
    ]
    space_rows = [
        [name, SEARCHABLE[name], space_text(param), space_text(fine[name]) if fine and name in fine else "—"]
        for name, param in space.items()
    ]
    blocks.append(table(["hyperparameter", "card key", "coarse", "fine"], space_rows))
    if tuning.fine is None:
        blocks.append(p("The fine column is empty: the fine stage has not started (no tuning/fine_space.json)."))
    elif tuning.fine.top_k:
        blocks.append(p(f"The fine space was narrowed around coarse trials {', '.join(tuning.fine.top_k)}."))
    if tuning.trials is None:
        blocks.append(
            warning(
                f"No search results in runs/ yet ({Path(root) / 'tuning' / 'trials.csv'} is missing): run `{cmd['tune']}`."
            )
        )
        return blocks
    view = normalise_trials(tuning.trials, space)
    blocks += [h3("Trials per stage"), stage_table(view, search)]
    warnings_ = tuning.summary.warnings if tuning.summary is not None else []
    blocks.append(h3("Edge-of-range warnings"))
    blocks.append(ul(warnings_) if warnings_ else p("None: no best value lies in the outer 10% of its range."))
    blocks += [h3(f"Top {TOP_TRIALS} trials"), top_table(view, space, search)]
    if best and best.hyperparameters:
        blocks.append(
            p(
                f"**Best trial:** {best.stage} trial {best.trial_id}, {best.objective} {f4(best.score)}; values: "
                + ", ".join(f"{k} = {plain(v)}" for k, v in sorted(best.hyperparameters.items()))
            )
        )
    blocks += (search_time_blocks(tuning.summary) if tuning.summary is not None else []) + rank_blocks(ranks)
    blocks += [h3("Every trial, and what mattered")] + insight_blocks(view, space, search["objective"], figs)
    blocks += [h3("Objective against each hyperparameter")]
    for name, param in space.items():
        if name not in view or not _numeric(param):
            continue
        values = view[[name, "objective", "stage", "failed"]].copy()
        values[name] = pd.to_numeric(values[name], errors="coerce")
        file = f"trials_{name}.png"
        bounds = (param["min"], param["max"]) if param["choices"] is None else None
        figs[file] = figures.trial_scatter(values, name, search["objective"], param["sampling"] == "log", bounds)
        blocks.append(
            figure(file, f"val objective against {name} (dotted: the card's range); failed trials as red crosses")
        )
    return blocks


def _numeric(param):
    if param["choices"] is not None:
        return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in param["choices"])
    return True


def stage_table(view, search):
    rows = []
    for stage, group in view.groupby("stage", sort=False):
        planned = search[stage]
        status = group["status"]
        epochs = group["epochs"]
        rows.append(
            [
                stage,
                str(len(group)),
                str(planned["trials"]),
                str(int((status == "completed").sum())),
                str(int((status == "failed").sum())),
                str(int((status == "exploded").sum())),
                str(planned["epochs"]),
                "—" if epochs.isna().all() else span(epochs.min(), epochs.max()),
            ]
        )
    return table(
        [
            "stage",
            "trials run",
            "trials in card",
            "completed",
            "failed",
            "exploded",
            "epochs per stage of a trial (card)",
            "epochs run",
        ],
        rows,
    )


def top_table(view, space, search):
    ascending = search["direction"] == "min"
    ranked = view.assign(_key=view["objective"]).sort_values(
        ["_key", "trial"], ascending=[ascending, True], na_position="last", kind="stable"
    )
    names = [n for n in space if n in view]
    rows = []
    for rank, (_, row) in enumerate(ranked.head(TOP_TRIALS).iterrows(), 1):
        rows.append(
            [str(rank), row["trial"], row["stage"]]
            + [plain(py(row[n])) for n in names]
            + [f4(row["objective"]) if pd.notna(row["objective"]) else "—", plain(py(row["epochs"])), row["status"]]
        )
    return table(["rank", "trial", "stage", *names, search["objective"], "epochs", "status"], rows)
