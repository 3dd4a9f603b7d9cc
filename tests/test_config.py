"""One settings object: every TWINSIGHT_* variable parsed and validated in indexer.config, and the README's table
of them is the one the code documents."""
import dataclasses
import re
from pathlib import Path

import pytest

from indexer.config import PREFIX, Settings, markdown_table, settings
from indexer.errors import ConfigError, UserInputError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_when_nothing_is_set():
    s = Settings.from_environ({})
    assert (s.model, s.ef, s.heads, s.trace, s.face_timeout, s.max_pixels) == ("auto", None, (), True, 60.0, 64_000_000)


def test_values_are_parsed_by_type():
    s = Settings.from_environ({"TWINSIGHT_HEADS": " a, b,, ", "TWINSIGHT_TRACE": "off", "TWINSIGHT_EF": "1_000",
                               "TWINSIGHT_PRECISION": "FP32", "TWINSIGHT_FACE_TIMEOUT": "2.5", "TWINSIGHT_FACE_WORKER": "0",
                               "TWINSIGHT_TRUST_REMOTE_CODE": "yes", "TWINSIGHT_MODEL": "  "})
    assert s.heads == ("a", "b") and s.trace is False and s.ef == 1000 and s.precision == "fp32"
    assert s.face_timeout == 2.5 and s.face_worker is False and s.trust_remote_code is True
    assert s.model == "auto"  # blank is unset


@pytest.mark.parametrize("name, value, wanted", [
    ("TWINSIGHT_EF", "0", "a whole number of at least 1"),
    ("TWINSIGHT_EF", "ten", "a whole number of at least 1"),
    ("TWINSIGHT_TRACE", "maybe", "one of 1/true/yes/on or 0/false/no/off"),
    ("TWINSIGHT_PRECISION", "int4", "one of auto, fp32, bf16, fp16, int8"),
    ("TWINSIGHT_FACE_TIMEOUT", "nan", "a positive number"),
    ("TWINSIGHT_FACE_TIMEOUT", "-3", "a positive number"),
])
def test_a_bad_value_names_the_variable_the_value_and_the_fix(name, value, wanted):
    with pytest.raises(ConfigError) as error:
        Settings.from_environ({name: value})
    message = str(error.value)
    assert message.startswith(f"{name}={value!r} is not valid: set it to {wanted}, or unset it")
    assert isinstance(error.value, UserInputError) and isinstance(error.value, ValueError)


def test_settings_follow_changes_of_the_environment(monkeypatch):
    monkeypatch.setenv("TWINSIGHT_EF", "40")
    first = settings()
    assert first.ef == 40 and settings() is first  # parsed once while nothing changes
    monkeypatch.setenv("TWINSIGHT_EF", "50")
    assert settings().ef == 50


def test_every_field_reads_its_own_variable():
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(set(names)) == len(names) and all(n.startswith(PREFIX) for n in names)


def test_readme_table_lists_every_variable_as_the_code_does():
    text = README.read_text(encoding="utf-8")
    assert markdown_table() in text, "README's settings table differs: paste indexer.config.markdown_table()"
    documented = set(re.findall(r"`(TWINSIGHT_[A-Z_]+)`", text))
    assert documented >= {f.metadata["env"] for f in dataclasses.fields(Settings)}


def test_the_code_reads_no_variable_that_settings_does_not_declare():
    root = README.parent
    declared = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    used = set()
    for path in [root / "app.py", *(root / "indexer").rglob("*.py"), *(root / "demo").rglob("*.py")]:
        used |= set(re.findall(r"TWINSIGHT_[A-Z_]*[A-Z]", path.read_text(encoding="utf-8")))
    assert used - declared == set()
