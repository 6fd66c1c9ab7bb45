"""The tiny model nbkit ships: copied once into the cache (never written in the package), and its suggested
settings applied only where the user left RunConfig's defaults."""
import json

from nbkit.loading import tiny
from nbkit.planning.config import RunConfig
from nbkit.resources import TINY_CHAT_PATH, TINY_MODEL


def test_the_copy_is_made_once_and_holds_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NBKIT_CACHE", str(tmp_path))
    folder = tiny.ensure_tiny_model()
    assert folder == tmp_path / f"tiny-llama-v{tiny.RECIPE_VERSION}"  # the version is in the name
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in TINY_CHAT_PATH.iterdir())
    assert json.loads((folder / "config.json").read_text()) == json.loads((TINY_CHAT_PATH / "config.json").read_text())
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert tiny.ensure_tiny_model() == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temp folder left beside it


def test_suggested_settings_fill_only_what_the_user_left_at_the_default(capsys):
    tuned = tiny.with_suggested(RunConfig(model=TINY_MODEL))
    assert (tuned.learning_rate, tuned.warmup_steps) == (2e-3, 1)
    assert "learning_rate=0.002" in capsys.readouterr().out  # it says what it set
    mine = tiny.with_suggested(RunConfig(model=TINY_MODEL, learning_rate=5e-4), given=["learning_rate"])
    assert mine.learning_rate == 5e-4 and mine.warmup_steps == 1
    other = RunConfig(model="unsloth/Qwen3-8B")
    assert tiny.with_suggested(other) is other
