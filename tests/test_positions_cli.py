"""``longrecipe-positions`` end to end through the real Hydra config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from longrecipe.config import compose
from longrecipe.positions.report import run_position_stats
from longrecipe.tiny import synthetic_documents


def _by(result):
    return {(r["scheme"], r["target_length"]): r for r in result["results"]}


def test_synthetic_corpus_end_to_end(tmp_path, tiny_tokenizer_dir):
    out = tmp_path / "out"
    cfg = compose("positions", [f"output_dir={out}", f"tokenizer={tiny_tokenizer_dir}", "synthetic_docs=30",
                                "target_lengths=[4000,8000]", "num_samples=2"])
    result = run_position_stats(cfg)
    saved = json.loads((out / "stats.json").read_text())
    assert saved["results"] == result["results"]
    assert (out / "positions.png").stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert table.startswith("Definitions (paper Fig. 3") and "mean ± standard deviation over the samples" in table
    assert "| scheme | target length | sample length | samples | avg distance among tokens" in table
    assert table.count("\n") == 2 + 2 + 10  # definitions + blank, header, 5 schemes x 2 targets
    rows = _by(result)
    # FLT is full-length training: samples of the whole window (paper §5.1), distance (T + 1) / 3
    assert rows[("flt", 4000)]["sample_length"] == 4000 and rows[("rpes", 4000)]["sample_length"] == 1200
    assert rows[("flt", 4000)]["avg_distance"] == pytest.approx(4001 / 3)
    assert rows[("flt", 8000)]["max_position"] == 7999 and rows[("flt", 8000)]["avg_distance_std"] == 0.0
    assert rows[("flt", 8000)]["coverage"] == pytest.approx(1.0)
    assert rows[("pose_release", 8000)]["num_samples"] == 2
    for target in (4000, 8000):
        assert rows[("rpes", target)]["avg_segment_length"] < 1.6
        assert rows[("longrecipe", target)]["max_position_max"] < target
        assert 3 < rows[("longrecipe", target)]["avg_segment_length"] < 1200
    assert saved["corpus"]["source"] == "synthetic"
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run_position_stats(cfg)


def test_state_union_paper_settings(tmp_path, tiny_tokenizer_dir, state_union_dir):
    cfg = compose("positions", [f"output_dir={tmp_path}", f"tokenizer={tiny_tokenizer_dir}",
                                f"corpus={state_union_dir}", "num_samples=2"])
    result = run_position_stats(cfg)
    assert result["corpus"]["files_read"] == 65 and result["corpus"]["docs_read"] == 65
    assert result["corpus"]["bytes_replaced"] > 0  # the ISO-8859 speeches, decoded with errors="replace"
    rows = _by(result)
    assert rows[("rpes", 128000)]["sample_length"] == 38400
    for target in (80000, 128000):
        n = round(0.3 * target)
        assert rows[("flt", target)]["max_position"] == target - 1 and rows[("rpes", target)]["sample_length"] == n
        assert rows[("flt", target)]["coverage"] == pytest.approx(1.0)
        assert rows[("rpes", target)]["avg_segment_length"] < 1.5  # ~1/(1-0.3)
        assert rows[("rpes", target)]["coverage"] == 1.0
        assert rows[("longrecipe", target)]["coverage"] > rows[("pose", target)]["coverage"]
        assert 10 < rows[("longrecipe", target)]["avg_segment_length"] < 1000
    # paper Fig. 3: LongRecipe spreads tokens further apart than PoSE (measured ~1.4x at 128k here)
    assert rows[("longrecipe", 128000)]["avg_distance"] > 1.2 * rows[("pose", 128000)]["avg_distance"]


def test_console_entry_point(tmp_path, tiny_tokenizer_dir):
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "longrecipe.cli.positions", f"hydra.run.dir={tmp_path / 'run'}",
         f"tokenizer={tiny_tokenizer_dir}", "synthetic_docs=10", "target_lengths=[2000]", "num_samples=1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| longrecipe | 2,000 | 600 |" in proc.stderr
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"stats.json", "table.md", "positions.png"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("token_ratio=1.5", r"token_ratio must be in \(0, 1\], got 1.5"),
        ("num_samples=0", r"num_samples must be >= 1, got 0"),
        ("target_lengths=[100000000]", r"fewer than one sample of 30000000 tokens; use a larger corpus"),
        ("corpus=/nonexistent/folder", r"corpus must be a file or folder .* got '/nonexistent/folder' \(does not exist\)"),
    ],
)
def test_bad_config(tmp_path, tiny_tokenizer_dir, override, message):
    cfg = compose("positions", [f"output_dir={tmp_path}", f"tokenizer={tiny_tokenizer_dir}", "synthetic_docs=5",
                                "num_samples=1", override])
    with pytest.raises(ValueError, match=message):
        run_position_stats(cfg)


def test_output_dir_required_outside_hydra(tiny_tokenizer_dir):
    with pytest.raises(ValueError, match=r"output_dir must be set .* pass output_dir=<folder>"):
        run_position_stats(compose("positions"))


def test_text_folder_corpus_with_invalid_bytes(tmp_path, tiny_tokenizer_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(synthetic_documents(6, seed=5)):
        (corpus / f"{i}.txt").write_bytes(doc.encode() + b" caf\xe9.")  # one latin-1 byte per file
    cfg = compose("positions", [f"output_dir={tmp_path / 'out'}", f"tokenizer={tiny_tokenizer_dir}",
                                f"corpus={corpus}", "target_lengths=[3000]", "num_samples=1"])
    result = run_position_stats(cfg)
    assert result["corpus"]["source"] == str(corpus)
    assert result["corpus"]["files_read"] == 6 and result["corpus"]["bytes_replaced"] == 6
