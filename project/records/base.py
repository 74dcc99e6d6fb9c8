"""The machinery of the records: reading, writing, the format version and the one clear error.

A JSON record (Record) carries a `format` key; a CSV record (Table) a `format` column, the last one;
Stored is a JSON file checked like a record but without a format key (best_hyperparameters.json).
"""

import json
import math
from pathlib import Path
from typing import ClassVar, Literal, get_args, get_origin

import pandas as pd
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from project.artifacts import atomic_write, write_json
from project.errors import UserError

FORMAT = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ reading, writing, refusing


def refused(path, problem, command):
    return UserError(f"{path}: {problem}: rerun `{command}`")


def _where(loc):
    if len(loc) >= 3 and loc[0] == "rows" and isinstance(loc[1], int):
        return f"row {loc[1] + 1}, column `{loc[2]}`"
    return ".".join(str(part) for part in loc)


def problems(error: ValidationError):
    """A pydantic error in one line: missing and unknown keys first (together: a renamed key), then the rest."""
    missing, unknown, other = [], [], []
    for e in error.errors():
        where = _where(e["loc"])
        if e["type"] == "missing":
            missing.append(f"`{where}`")
        elif e["type"] == "extra_forbidden":
            unknown.append(f"`{where}`")
        else:
            other.append(f"{where}: {e['msg']}")
    parts = [f"missing key {', '.join(missing)}"] if missing else []
    if unknown:
        parts.append(f"unknown key {', '.join(unknown)}" + (" (renamed?)" if missing else ""))
    parts += other[:3] + ([f"and {len(other) - 3} more"] if len(other) > 3 else [])
    return "; ".join(parts)


def _validated(model, data, path, command):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise refused(path, problems(error), command) from None


def _check_format(found, path, command):
    """`found`: the format the file says, None when it says none (written before records had one: format 0)."""
    if found is None:
        raise refused(
            path, f"format 0 (it records none: written by older code), this code reads format {FORMAT}", command
        )
    if found != FORMAT:
        raise refused(path, f"format {found}, this code reads format {FORMAT}", command)


def _json(path, command):
    path = Path(path)
    if not path.is_file():
        raise refused(path, "missing", command)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise refused(path, f"not valid JSON ({error})", command) from None
    if not isinstance(data, dict):
        raise refused(path, f"not a JSON object but a {type(data).__name__}", command)
    return data


class Stored(Strict):
    """A JSON file of runs/: FILE (its name), COMMAND (what writes it); read refuses it in one UserError."""

    FILE: ClassVar[str]
    COMMAND: ClassVar[str]

    def dump(self):
        """The keys the writer gave (optional ones it left out stay out of the file)."""
        return self.model_dump(exclude_unset=True)

    def write(self, path):
        write_json(path, self.dump())

    @classmethod
    def read(cls, path, command=None):
        command = command or cls.COMMAND
        data = _json(path, command)
        cls._check(data, path, command)
        return _validated(cls, data, path, command)

    @classmethod
    def _check(cls, data, path, command):
        pass


class Record(Stored):
    """A JSON file of runs/ with its format version."""

    format: int = FORMAT

    def dump(self):
        return {**super().dump(), "format": self.format}

    @classmethod
    def _check(cls, data, path, command):
        _check_format(data["format"] if "format" in data else None, path, command)


def write_record(record, path):
    record.write(path)


def read_record(model, path, command=None):
    return model.read(path, command)


# ------------------------------------------------------------------ tables (CSV records)


def _text(field):
    """A column read as text (its blank cells are empty strings, not numbers)."""
    return field.annotation is str or get_origin(field.annotation) is Literal


def _cell(field, value):
    """A blank CSV cell (NaN) as the field takes it: '' for text, None where None is allowed."""
    if not (isinstance(value, float) and math.isnan(value)):
        return value
    if field.annotation is str:
        return ""
    return None if type(None) in get_args(field.annotation) else value


class Row(BaseModel):
    """One line of a CSV record; extra columns are the table's open ones (typed by __pydantic_extra__)."""

    model_config = ConfigDict(extra="allow")
    OPEN_BLANK_IS_NONE: ClassVar[bool] = False  # a blank open cell: None (no value) rather than NaN

    @model_validator(mode="before")
    @classmethod
    def _blank_cells(cls, data):
        if isinstance(data, dict):
            return {key: cls._blank(key, value) for key, value in data.items()}
        return data

    @classmethod
    def _blank(cls, key, value):
        if key in cls.model_fields:
            return _cell(cls.model_fields[key], value)
        blank = cls.OPEN_BLANK_IS_NONE and isinstance(value, float) and math.isnan(value)
        return None if blank else value


class Table(Record):
    """A CSV file of runs/: its rows, in the column order the writer gave, plus a `format` column."""

    rows: list[Row]
    _columns: list[str] = PrivateAttr(default_factory=list)

    def model_post_init(self, context):
        if not self._columns:
            self._columns = list(dict.fromkeys(key for row in self.rows for key in row.model_dump()))

    @classmethod
    def row_model(cls):
        return get_args(cls.model_fields["rows"].annotation)[0]

    @classmethod
    def column_problems(cls, columns):
        missing = [name for name, field in cls.row_model().model_fields.items() if name not in columns]
        return [f"missing column {', '.join(f'`{m}`' for m in missing)}"] if missing else []

    @classmethod
    def from_frame(cls, frame):
        """The writer's table (a DataFrame) as the record; a missing column is the writer's bug."""
        columns = [str(c) for c in frame.columns]
        if cls.column_problems(columns):
            raise ValueError(f"{cls.FILE}: {'; '.join(cls.column_problems(columns))}")
        table = cls(rows=frame.to_dict("records"))
        table._columns = columns
        return table

    @property
    def columns(self):
        return list(self._columns)

    def frame(self):
        return pd.DataFrame([row.model_dump() for row in self.rows], columns=self._columns)

    def write(self, path):
        atomic_write(path, self.frame().assign(format=self.format).to_csv(index=False))

    @classmethod
    def read(cls, path, command=None):
        command = command or cls.COMMAND
        path = Path(path)
        if not path.is_file():
            raise refused(path, "missing", command)
        text = [name for name, field in cls.row_model().model_fields.items() if _text(field)]
        try:
            frame = pd.read_csv(path, dtype=dict.fromkeys(text, str))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise refused(path, f"not a readable CSV table ({error})", command) from None
        _check_format(_table_format(frame), path, command)
        columns = [str(c) for c in frame.columns if c != "format"]
        if cls.column_problems(columns):
            raise refused(path, "; ".join(cls.column_problems(columns)), command)
        table = _validated(cls, {"rows": frame[columns].to_dict("records")}, path, command)
        table._columns = columns
        return table


def _table_format(frame):
    """The format column's one value (an empty table: the current format); None without the column."""
    if "format" not in frame.columns:
        return None
    found = sorted({str(v) for v in frame["format"]})
    return FORMAT if found in ([], [str(FORMAT)]) else " and ".join(found)
