"""The `bert4k` command: `bert4k masks --plot out.png` writes a picture; without --plot the masks are printed."""
import subprocess
import sys

import numpy as np
import pytest

from bert4k import cli
from bert4k.plotting import example_tokens, plot_application_masks
from tests.conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path)


def test_masks_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "masks.png"
    assert cli.main(["masks", "--plot", str(out)]) == 0
    image = read_png(out)
    assert image.shape[0] > 500 and image.shape[1] > 800
    assert image[..., :3].std() > 0.1  # not a blank canvas
    assert str(out) in capsys.readouterr().out


def test_masks_plot_with_text_target_and_token_count(tmp_path):
    assert cli.main(["masks", "--plot", str(tmp_path / "a.png"), "--text", "床前明月光", "--target", "疑是地上霜"]) == 0
    read_png(tmp_path / "a.png")
    path = plot_application_masks(5, tmp_path / "b.png", num_pad=0)
    assert path == str(tmp_path / "b.png")
    read_png(tmp_path / "b.png")


def test_masks_printed_as_text(capsys):
    assert cli.main(["masks", "--tokens", "3", "--pad", "1"]) == 0
    out = capsys.readouterr().out
    # tokens 0 1 2 + [PAD]; lm: j ≤ i and never the padding key.
    lm = out.split("\nlm ")[1].split("\n\n")[0].splitlines()[1:]
    assert lm == ["# . . .", "# # . .", "# # # .", "# # # ."]
    encoder = out.split("\nencoder ")[1].split("\n\n")[0].splitlines()[1:]
    assert encoder == ["# # # ."] * 4
    assert "\nplm " in out and "\nunilm " in out


def test_example_tokens():
    tokens, segments = example_tokens("北京 欢迎", num_pad=1)
    assert tokens == ["[CLS]", "北", "京", "欢", "迎", "[SEP]", "[PAD]"]
    np.testing.assert_array_equal(segments, [0, 0, 0, 1, 1, 1, 0])
    tokens, segments = example_tokens("问", target="答", num_pad=0)
    assert tokens == ["[CLS]", "问", "[SEP]", "答", "[SEP]"]
    np.testing.assert_array_equal(segments, [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="token count"):
        example_tokens(0)


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "masks" in capsys.readouterr().out


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "bert4k.cli", "masks", "--help"], cwd=REPO, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--plot" in result.stdout
