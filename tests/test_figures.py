"""Every measured figure in the README and docs/ is the one its result file in bench/results/ gives."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("figures", ROOT / "scripts" / "figures.py")
figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figures)


def test_every_marked_figure_matches_its_result_file():
    assert figures.problems() == []


def test_the_readme_quotes_its_headline_figures_through_markers():
    readme = (ROOT / "README.md").read_text()
    quoted = {m.group(1) for m in figures.MARKER.finditer(readme)}
    for name in ("qlora8b_vs_hf_speed", "qlora8b_repeats", "first_nbkit_s", "first_raw_s", "display_on_tps",
                 "parity4_raw_pct", "import_form_s", "ddp_scaling", "ddp_scaling_low", "ddp_scaling_high",
                 "fp8_1b_8k", "fp8_1b_32k", "fp8_8b_8k", "fp8_8b_32k", "fp8_14b_8k", "fp8_14b_32k"):
        assert name in quoted


def test_a_figure_edited_by_hand_or_a_result_remeasured_is_caught(tmp_path):
    doc = tmp_path / "README.md"
    right = figures.value("first_nbkit_s")
    doc.write_text(f"first step <!--fig:first_nbkit_s-->{right}<!--/fig--> and <!--fig:no_such-->1<!--/fig-->")
    found = figures.problems([doc])
    assert found == ["README.md: unknown figure 'no_such'"]
    doc.write_text("first step <!--fig:first_nbkit_s-->1.00 s<!--/fig-->")
    assert figures.problems([doc]) == [f"README.md: first_nbkit_s reads '1.00 s', its result file gives '{right}'"]
    assert figures.rewrite([doc]) == 1
    assert figures.problems([doc]) == [] and right in doc.read_text()


def test_the_ddp_scaling_claimed_is_larger_than_its_spread_and_follows_from_its_runs():
    """The README claims a scaling only where even the most pessimistic pairing of step times leaves a gain, and
    the stored scaling is what bench/ddp_scaling.py computes from the stored runs."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import ddp_scaling

    data = json.loads((ROOT / "bench/results" / figures.DDP).read_text())
    good = [r for r in data["rows"] if "tokens_per_s" in r]
    summary = ddp_scaling.summarise(good)
    assert summary == data["summary"] and ddp_scaling.scaling_of(good, summary)["scaling"] == data["scaling"]
    low, high = data["scaling_p10_p90"]
    assert low <= min(data["scaling_per_repeat"]) <= max(data["scaling_per_repeat"]) <= high
    assert high - low < data["scaling"] - 1  # the spread is smaller than the gain claimed
    assert len(data["scaling_per_repeat"]) >= 3 and all(r["steady_steps"] >= 30 for r in good)
