"""The files of runs/ as typed records: one pydantic model per file, with its format version.

Writers build the model and write through it (`Model.model_validate(data).write(path)`, or
`Table.from_frame(frame).write(path)`), so a renamed or missing key fails where it is written;
readers get the model back (`Model.read(path, command)`), or ONE UserError that names the file, what
is wrong and the command that writes it again. No TensorFlow here.

    <run>/metrics.json                 Metrics        make train (baseline), make tune (tuned)
    <run>/history.csv                  History        its epochs, one row each
    sanity.json                        Sanity         make sanity
    tuning/trials.csv                  Trials         every trial of the search (make tune)
    tuning/summary.json                TuningSummary  spaces, budget, finalists, final round, warnings
    tuning/fine_space.json             FineSpace      the narrowed space of the fine stage
    tuned/best_hyperparameters.json    Candidate      the tuned run's trial (its content is the trial's: no format key)
    reports/<run>/comparison.json      Comparison     the report's before/after numbers (make report)
"""

from project.records.base import FORMAT, Record, Row, Stored, Table, problems, read_record, refused, write_record
from project.records.comparison import Comparison
from project.records.runs import History, Metrics, Sanity
from project.records.tuning import Candidate, FineSpace, Trials, TuningSummary

__all__ = [
    "FORMAT",
    "Candidate",
    "Comparison",
    "FineSpace",
    "History",
    "Metrics",
    "Record",
    "Row",
    "Sanity",
    "Stored",
    "Table",
    "Trials",
    "TuningSummary",
    "problems",
    "read_record",
    "refused",
    "write_record",
]
