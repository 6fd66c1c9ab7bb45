"""The session's runs side by side: one row per run, oldest first, in plain HTML a saved notebook keeps."""
import base64
import re
from types import SimpleNamespace

from nbkit.planning.config import RunConfig
from nbkit.training.results import TrainResult
from nbkit.ui.session_runs import runs_table_html


def report(folder: str, state: str, losses, lora_r: int = 8) -> SimpleNamespace:
    config = RunConfig(lora_r=lora_r, output_dir=f"/runs/{folder}")
    train = TrainResult(steps=len(losses), losses=losses, train_seconds=2.0, tokens=200, state=state, total=4)
    return SimpleNamespace(config=config, train=train)


def test_one_run_needs_no_table():
    assert runs_table_html([]) == "" and runs_table_html([report("a", "finished", [(1, 2.0)])]) == ""


def test_each_run_is_a_row_oldest_first_with_how_it_ended_and_its_curve():
    html = runs_table_html([report("first", "finished", [(1, 2.0), (4, 1.25)]),
                            report("second", "<stopped>", [], lora_r=16)])
    rows = re.findall(r"<tr><td>(\d)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>"
                      r"<td><code>(.*?)</code></td></tr>", html)
    assert [(r[0], r[5]) for r in rows] == [("1", "first"), ("2", "second")]
    assert rows[0][1] == "finished 2/4" and rows[0][3] == "1.2500" and rows[0][4] == "100"
    assert rows[1][1] == "&lt;stopped&gt; 0/4" and rows[1][3] == "–" and "r=16" in rows[1][2]  # escaped, no loss
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)'", html).group(1))
    assert png.startswith(b"\x89PNG")
