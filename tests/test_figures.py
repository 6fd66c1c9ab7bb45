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
    for name in ("qlora8b_vs_hf_speed", "first_nbkit_s", "first_raw_s", "display_on_tps", "parity4_raw_pct",
                 "import_form_s"):
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
