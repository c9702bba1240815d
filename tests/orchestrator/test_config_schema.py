"""The schema is the documentation: `schema --json` checks every example as an editor would, and
`schema --markdown` is the committed docs/config-reference.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from orchestrator.config_docs import json_schema, markdown

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict:
    out = subprocess.run([sys.executable, "-m", "orchestrator", "schema", "--json"], capture_output=True, text=True,
                         check=True, cwd=REPO)
    printed = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(printed)
    return printed


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_against_the_printed_json_schema(schema, example):
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(example.read_text())))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("path, value", [
    ("searcher.algoritm", "tpe"),  # a typo of a section key
    ("search.kd_method", {"choice": ["none", "attn"]}),  # not a KD method
    ("search.kd_factor", {"loguniform": [0.1]}),  # a range needs two bounds
    ("fixed.img_size", 100),  # not a multiple of 32
    ("training.lr_schedule", "step"),
    ("data.val_subset", "500"),  # a string is not an integer
    ("board", {"name": "a", "names": ["a"]}),
])
def test_the_schema_refuses_what_the_config_check_refuses(schema, path, value):
    data = yaml.safe_load((REPO / "examples" / "kd.yaml").read_text())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data)), f"{path}: {value!r} passed the schema"


def test_the_schema_names_every_knob_and_every_section(schema):
    from orchestrator._knobs import knob_table

    assert set(schema["properties"]["fixed"]["properties"]) == set(knob_table())
    assert {"data", "training", "board", "searcher", "mlflow", "search", "fixed"} <= set(schema["properties"])


def test_committed_reference_is_what_schema_markdown_prints():
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == markdown(), ("docs/config-reference.md is stale: run "
                                     "`python -m orchestrator schema --markdown > docs/config-reference.md`")


def test_reference_documents_every_key_and_knob():
    from orchestrator._knobs import DISTRIBUTIONS, knob_table

    reference = markdown()
    keys = set(knob_table()) | set(DISTRIBUTIONS)

    def walk(node: dict) -> None:
        for key, sub in node.get("properties", {}).items():
            keys.add(key)
            walk(sub)
        for sub in node.get("$defs", {}).values():
            walk(sub)

    walk(json_schema())
    missing = sorted(k for k in keys if f"`{k}`" not in reference)
    assert not missing, f"the reference does not mention {missing}"
