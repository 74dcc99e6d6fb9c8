"""The README's card reference: generated from the schema, so a key added without regenerating
it (`make card-reference`) or without a description fails here."""

import json
import shutil
from pathlib import Path

from pydantic import Field, create_model

from project.commands import card_reference
from project.commands.cli import main
from project.config.schema import Dataset, Paper

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_holds_the_reference_the_schema_generates_now(tmp_path):
    copy = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", copy)
    assert not card_reference.write(copy), (
        "README.md's card reference is out of date with project/config/schema.py: run `make card-reference`"
    )
    assert copy.read_text() == (ROOT / "README.md").read_text()


def test_every_key_and_adapter_option_has_a_description():
    assert card_reference.undocumented() == [], (
        "add description= to these keys in project/config/schema.py (adapter options: ADAPTER_OPTIONS in "
        "project/commands/card_reference.py), then run `make card-reference`"
    )


def test_a_new_key_changes_the_reference_until_it_is_regenerated(tmp_path):
    text = (ROOT / "README.md").read_text()
    current = card_reference.section(text, "README.md")
    assert current == card_reference.reference()
    training = create_model(
        "Training", __base__=Paper.model_fields["training"].annotation, accumulation_steps=(int, Field(default=0, ge=0))
    )
    paper = create_model("Paper", __base__=Paper, training=(training, Field(default=training(), description="r")))
    changed = card_reference.reference(paper=paper)
    assert changed != current and "| `training.accumulation_steps` | integer; 0 <= value | `0` |  |" in changed
    assert card_reference.undocumented(paper=paper) == ["training.accumulation_steps"]
    dataset = create_model("Dataset", __base__=Dataset, group_by=(str | None, Field(default=None, description="x")))
    assert "| `group_by` | text or `null` | `null` | x |" in card_reference.reference(dataset=dataset)


def test_the_tables_say_type_range_default_and_meaning():
    text = card_reference.reference()
    assert "| `training.batch_size` | integer; 1 <= value <= 65536 | `32` | images per training step |" in text
    assert "| `model.head.pooling` | `avg`, `max`, `flatten` | `avg` |" in text
    assert "| `training.stages[].unfreeze` | integer or text | `all` |" in text
    assert "| `search.space.<name>.sampling` | `linear`, `log` | `linear` |" in text
    assert "| `label_map[].max` | number | required |" in text
    assert "| `folder` | `options.subsets` | `null` |" in text and "| `csv` | `options.manifests` | `null` |" in text
    for model in (Paper, Dataset):
        keys = [key for key, *_ in card_reference.rows(model)]
        assert len(keys) == len(set(keys)) and f"`{keys[-1]}`" in text


def test_the_command_writes_the_readme_and_refuses_one_without_markers(tmp_path, project_env, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Fork\n\n{card_reference.START}\nold table\n{card_reference.END}\n\nmore text\n")
    code = (
        "import json, sys\n"
        "from project.commands.cli import main\n"
        f"status = main(['card-reference', '--output', {str(readme)!r}])\n"
        "print('RESULT', json.dumps([status, 'tensorflow' in sys.modules]))\n"
    )
    result = project_env.python(code, timeout=120)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    assert json.loads(line[7:]) == [0, False], result.stderr
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{card_reference.END}\n\nmore text\n")
    assert card_reference.section(text, readme) == card_reference.reference()
    readme.write_text("# Fork without the markers\n")
    assert main(["card-reference", "--output", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {readme}: needs one {card_reference.START} line") and "\n" not in err
    assert readme.read_text() == "# Fork without the markers\n", "nothing written"
