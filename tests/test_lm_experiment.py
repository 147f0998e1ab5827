"""experiment-lm on a tiny corpus: T and ALPHA chosen on validation, scratch and distilled over every seed at
equal steps, the sparsity arm read from one cache, a report with the difference against 2·SE, and a rerun
that trains nothing new."""

from __future__ import annotations

import json

from pipeline.config import LMExperimentConfig, LMStudentConfig
from pipeline.experiments.lm import lm_report, plan_tuning, run_lm_experiment
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)
from tests.test_token_dataset import token_cache  # noqa: F401  (the fixture)
from tests.test_token_pass import lm_teacher  # noqa: F401  (the fixture)


def test_the_experiment_chooses_on_validation_and_reports_every_seed(tmp_path, token_cache, text_file):  # noqa: F811
    student = LMStudentConfig(cache=token_cache, text=text_file, out_dir=tmp_path / "runs", steps=6, batch_size=4,
                              eval_every=3, eval_windows=4, threads=1)
    cfg = LMExperimentConfig(student=student, runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "tuning",
                             reports_dir=tmp_path / "reports", students=("lm-tiny",), Ts=(1.0, 2.0), alphas=(0.5,),
                             seeds=(0, 1), topks=(1, 4), jobs=1, threads=1)
    assert [r.out_dir.parent for r in plan_tuning(cfg)] == [tmp_path / "tuning"] * 2
    seen = []
    record = run_lm_experiment(cfg, on_result=seen.append)
    assert len(seen) == 2 + 4 + 4                       # tuning, scratch and distilled x 2 seeds, k = 1 and 4 x 2 seeds
    row = record["rows"][0]
    assert row["T"] in (1.0, 2.0) and row["alpha"] == 0.5 and len(row["curves"]["scratch"]) == 2
    assert row["scratch"][0] > 0 and row["distilled"][0] > 0 and row["two_se"] >= 0
    assert [s["k"] for s in record["sparsity"]] == [1, 4, 8]
    assert record["sparsity"][0]["bytes_per_position"] < record["sparsity"][2]["bytes_per_position"]
    text = lm_report(cfg.reports_dir).read_text()
    assert "| lm-tiny |" in text and "The price of sparsity" in text and "2·SE" in text
    assert json.loads(lm_report(cfg.reports_dir, ".json").read_text())["choice"]["lm-tiny"]["alpha"] == 0.5
    again = []
    run_lm_experiment(cfg, on_result=again.append)
    assert {r["status"] for r in again} == {"skipped"}
