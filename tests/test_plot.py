"""Figures as PNG bytes: what is drawn is what was given (read back from the pixels, by the lines' colours)."""
import io

import numpy as np
from matplotlib.image import imread

from nbkit.ui.plot import bars_png, loss_curve_png, loss_curves_png

BLUE, RED = (0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)


def pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return (imread(io.BytesIO(png))[..., :3] * 255).round().astype(int)


def count(image: np.ndarray, rgb) -> int:
    return int((np.abs(image - np.array(rgb)).sum(axis=-1) <= 12).sum())


def test_the_train_curve_is_drawn_and_the_eval_curve_only_when_there_is_one():
    train = [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.8)]
    alone = pixels(loss_curve_png(train))
    both = pixels(loss_curve_png(train, eval_losses=[(2, 2.7), (4, 2.1)]))
    assert count(alone, BLUE) > 50 and count(alone, RED) == 0
    assert count(both, RED) > 20


def test_an_empty_run_still_renders_axes():
    image = pixels(loss_curve_png([]))
    assert image.shape[0] > 100 and count(image, BLUE) == 0


def test_several_runs_share_one_plot_each_in_its_own_colour():
    one = pixels(loss_curves_png({"1: a": [(1, 2.0), (2, 1.0)]}))
    two = pixels(loss_curves_png({"1: a": [(1, 2.0), (2, 1.0)], "2: b": [(1, 2.5), (2, 1.5)], "3: empty": []}))
    orange = (0xFF, 0x7F, 0x0E)  # matplotlib's second colour
    assert count(one, BLUE) > 5 and count(one, orange) == 0
    assert count(two, orange) > 5


def test_bars_draw_one_bar_per_value():
    image = pixels(bars_png(["bf16", "fp8"], [1000.0, 1500.0], "tokens/s", "Speed"))
    assert count(image, BLUE) > 200 and count(image, (0xFF, 0x7F, 0x0E)) > count(image, BLUE)  # the taller bar
