import pytest

from core.errors import DistillError
from prompts.rows import PromptRow
from synth.recorded import import_recorded, teacher_name

pytest.importorskip("champ_dataset")


def _champ_rows(n=6):
    from prompts.champ import load_champ
    return load_champ()[:n]


def test_champ_recorded_chats_become_requests_and_traces_once(store):
    rows = _champ_rows()
    store.add_prompts(rows, "champ")
    out = import_recorded(store, "champ", "ri", settings=["0-Shot", "5-Shot"])
    assert out["imported"] == len(rows) * 4 * 2  # 4 recorded models x 2 settings
    assert set(out["by_teacher"]) == {"recorded:gpt-3.5", "recorded:gpt-4", "recorded:gpt-4-turbo",
                                      "recorded:palm-2-medium"}
    joined = store.query("SELECT count(*) AS n FROM samples s JOIN requests r ON r.key = s.request_key "
                         "JOIN prompts p ON p.id = s.prompt_id WHERE r.purpose = 'import'")[0]["n"]
    assert joined == out["imported"]
    again = import_recorded(store, "champ", "ri2", settings=["0-Shot", "5-Shot"])
    assert again["imported"] == 0 and store.count("samples") == out["imported"]
    truncated = store.query("SELECT count(*) AS n FROM samples WHERE parse_error LIKE 'truncated%'")[0]["n"]
    answered = store.query("SELECT count(*) AS n FROM samples WHERE answer IS NOT NULL")[0]["n"]
    assert answered + truncated + store.count("samples", "parse_error = 'no final answer recorded'") == out["imported"]


def test_pool_without_recordings_is_a_clear_error(store):
    store.add_prompts([PromptRow(id="a", source="t", task="t", input="q", gold="1", split="train")], "plain")
    with pytest.raises(DistillError, match="no recorded teacher outputs"):
        import_recorded(store, "plain", "r")


def test_teacher_names():
    assert teacher_name("GPT-4 Turbo") == "recorded:gpt-4-turbo"
