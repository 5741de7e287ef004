"""The command line turns bad paths and inputs into one logged line and exit code 2, never a traceback."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from cstf_edge._io import write_image
from cstf_edge.cli import main
from cstf_edge.data import ImageLabels
from cstf_edge.data.dota import write_dota_labels


def errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_split_into_a_file_exits_2_naming_the_path(tmp_path, caplog):
    src = tmp_path / "src"
    write_image(src / "images" / "S.png", np.zeros((64, 64), np.uint8))
    write_dota_labels(src / "labelTxt" / "S.txt", ImageLabels.empty("S"))
    out = tmp_path / "fileout"
    out.write_text("")
    assert main(["split", str(src), str(out), "--subsize", "64", "--gap", "0"]) == 2
    assert len(errors(caplog)) == 1 and str(out) in errors(caplog)[0]


def test_os_error_backstop_logs_filename_and_reason(tmp_path, caplog, monkeypatch):
    from cstf_edge.cli import synth

    def fail(args):
        raise FileExistsError(17, "File exists", str(tmp_path / "fileout"))

    monkeypatch.setattr(synth, "run", fail)
    assert main(["synth", str(tmp_path / "fileout")]) == 2
    assert errors(caplog) == [f"{tmp_path / 'fileout'}: File exists"]


def test_eval_dota_on_the_dataset_root_suggests_labeltxt(tmp_path, caplog):
    root = tmp_path / "DOTA"
    write_dota_labels(root / "labelTxt" / "P1.txt", ImageLabels.empty("P1"))
    (tmp_path / "results").mkdir()
    assert main(["eval-dota", "--results", str(tmp_path / "results"), "--labels", str(root)]) == 2
    assert len(errors(caplog)) == 1 and f"did you mean {root / 'labelTxt'}?" in errors(caplog)[0]


@pytest.mark.parametrize("command", [["synth"], ["split", "src"]])
def test_missing_arguments_still_exit_2(command):
    with pytest.raises(SystemExit) as info:
        main(command)
    assert info.value.code == 2
