"""``swiftformer info`` prints each variant's exact size and cost."""
from swiftformer.cli import main


def test_info_lists_variants(capsys):
    assert main(["info", "--model", "swiftformer_xs"]) == 0
    out = capsys.readouterr().out
    assert "swiftformer_xs" in out and "3,475,360" in out and "0.602" in out


def test_info_unknown_model_is_one_line_exit_2(capsys):
    assert main(["info", "--model", "swiftformer_m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'swiftformer_m'" in err[0]
