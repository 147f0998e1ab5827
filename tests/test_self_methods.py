"""BYOT and CS-KD beside PS-KD: stages found, losses as their docstrings write them, branches never shipped,
partners of the same class, resume to the same weights, few labels, and the settings refused."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import SelfDistillConfig, SelfKDExperimentConfig, StudentConfig
from pipeline.errors import UsageError
from pipeline.experiments.selfkd import SELF_GRIDS, plan_tuning
from pipeline.models import count_params, create_student
from pipeline.settings import BRANCH_STUDENTS
from pipeline.student.byot import BranchedStudent, Heads, branch_students, byot_loss, stage_ends
from pipeline.student.cskd import ClassPartners, cskd_loss
from pipeline.student.self_distill import resume_dir, self_distill
from pipeline.training.checkpoint import load_checkpoint


def test_stages_are_found_where_the_resolution_halves():
    assert stage_ends(create_student("cnn-tiny")) == [2, 5]
    assert stage_ends(create_student("cnn-small")) == [3, 10, 14]
    assert stage_ends(create_student("mlp")) == []
    assert tuple(branch_students()) == BRANCH_STUDENTS      # Make's plan refuses by this list


@pytest.mark.parametrize("student", ["cnn-tiny", "cnn-small"])
def test_branches_leave_the_student_as_it_is(student):
    torch.manual_seed(0)
    backbone = create_student(student)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    net = BranchedStudent(backbone, (1, 28, 28), 10)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())   # the dry run moved no BN stat
    x = torch.rand(4, 1, 28, 28)
    net.eval()
    out = net.forward_all(x)
    assert torch.equal(out.logits, backbone(x)) and torch.equal(net(x), backbone(x))
    assert len(out.branch_logits) == len(stage_ends(backbone)) - 1
    assert all(z.shape == (4, 10) for z in out.branch_logits)
    assert count_params(net) > count_params(backbone)


def test_byot_loss_is_the_formula_of_its_docstring():
    torch.manual_seed(1)
    z_c, f_c = torch.randn(5, 3, requires_grad=True), torch.randn(5, 4)
    z_i, f_i = [torch.randn(5, 3, requires_grad=True) for _ in range(2)], [torch.randn(5, 4) for _ in range(2)]
    y = torch.tensor([0, 1, 2, 0, 1])
    alpha, beta, T = 0.3, 0.01, 3.0
    loss = byot_loss(Heads(z_c, f_c, z_i, f_i), y, alpha=alpha, beta=beta, T=T)
    p = F.softmax(z_c.detach() / T, 1)
    expected = (1 - alpha) * F.cross_entropy(z_c, y)
    for z, f in zip(z_i, f_i):
        kl = (p * (p.log() - F.log_softmax(z / T, 1))).sum(1).mean()
        expected = expected + (1 - alpha) * F.cross_entropy(z, y) + alpha * T * T * kl + beta * ((f - f_c) ** 2).sum()
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    # the deployed head learns only from the labels: its soft targets are detached
    torch.testing.assert_close(z_c.grad, torch.autograd.grad((1 - alpha) * F.cross_entropy(z_c, y), z_c)[0])


def test_cskd_loss_is_the_formula_of_its_docstring_and_the_partner_gets_no_gradient():
    torch.manual_seed(2)
    z, zp = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = cskd_loss(z, zp, y, lam=2.0, T=4.0)
    q = F.softmax(zp.detach() / 4, 1)
    kl = (q * (q.log() - F.log_softmax(z / 4, 1))).sum(1).mean()
    assert torch.allclose(loss, F.cross_entropy(z, y) + 2.0 * 16 * kl, atol=1e-6)
    loss.backward()
    assert zp.grad is None


def test_partners_share_the_class_and_come_only_from_the_training_rows():
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 6])          # rows 7..9 are held out or unlabelled
    partners = ClassPartners(labels, rows, 3)
    idx = torch.tensor([0, 1, 4, 2, 6, 3])
    draws = torch.stack([partners.draw(idx, torch.Generator().manual_seed(s)) for s in range(50)])
    assert torch.equal(labels[draws], labels[idx].expand_as(draws))
    assert set(draws.flatten().tolist()) <= set(rows.tolist())
    assert len(set(draws[:, 0].tolist())) == 3           # class 0 has three training rows: all are drawn
    again = partners.draw(idx, torch.Generator().manual_seed(7))
    assert torch.equal(again, draws[7])                  # the trainer's stream fixes them (resume)


def config(tmp_path, prepared, method, **kw):
    kw = {"student": "cnn-tiny", "epochs": 3, "batch_size": 16, "threads": 1, **kw}
    cfg = SelfDistillConfig(dataset=prepared, out_dir=tmp_path, method=method, **kw)
    return SelfDistillConfig(dataset=prepared, out_dir=tmp_path / "runs" / cfg.run_name, method=method, **kw)


@pytest.mark.parametrize("method", ["byot", "cskd"])
def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path, prepared, method):
    whole_cfg = config(tmp_path / "a", prepared, method, augment=True)
    whole = self_distill(whole_cfg, progress=False)

    def die_after_epoch_2(epoch, figures):
        if epoch == 2:
            raise KeyboardInterrupt
    cfg = config(tmp_path / "b", prepared, method, augment=True)
    with pytest.raises(KeyboardInterrupt):
        self_distill(cfg, progress=False, on_epoch=die_after_epoch_2)
    assert not cfg.out_dir.exists() and (resume_dir(cfg.out_dir) / "state.pt").is_file()
    resumed = self_distill(cfg, progress=False)
    assert resumed["resumed_from_epoch"] == 2 and resumed["test_acc"] == whole["test_acc"]
    a = load_checkpoint(whole_cfg.out_dir / "model.pt", "student", "student")[0].state_dict()
    b = load_checkpoint(cfg.out_dir / "model.pt", "student", "student")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_byot_saves_the_student_alone(tmp_path, prepared):
    cfg = config(tmp_path, prepared, "byot", student="cnn-small", epochs=1)
    m = self_distill(cfg, progress=False)
    model, record = load_checkpoint(cfg.out_dir / "model.pt", "student", "student")
    assert record["arch"] == "cnn-small" and count_params(model) == m["params"]
    assert m["params"] == count_params(create_student("cnn-small", in_shape=(1, 12, 12), num_classes=3))
    assert m["trained_params"] > m["params"] and m["method"] == "byot"
    assert not any("branch" in k or "head" in k for k in model.state_dict())


@pytest.mark.parametrize("method", ["pskd", "byot", "cskd"])
def test_few_labels_train_on_the_labelled_rows_only(tmp_path, prepared, method):
    cfg = config(tmp_path, prepared, method, labels=30, holdout=20, epochs=2)
    m = self_distill(cfg, progress=False)
    assert m["labels"] == 30 and m["train_rows"] == 30 and sum(m["labels_per_class"]) == 30
    assert m["holdout"] == 20 and 0 <= m["val_acc"] <= 1
    assert "-l30-ho20-" in cfg.run_name


def test_scratch_and_self_distilled_runs_share_the_labelled_rows(tmp_path, prepared, cache_file):
    """The same seed and LABELS pick the same rows in the student stage and in self-distillation."""
    from pipeline.student.distill import train_student
    scratch = train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "scratch",
                                          student="cnn-tiny", alpha=0.0, labels=30, epochs=1, batch_size=16,
                                          threads=1), progress=False)
    m = self_distill(config(tmp_path, prepared, "cskd", labels=30, epochs=1), progress=False)
    assert scratch["labelled_rows_digest"] == m["labelled_rows_digest"] and m["labels_per_class"] == [10, 10, 10]
    assert scratch["train_rows"] == m["train_rows"] == 30


@pytest.mark.parametrize("kw,match", [
    ({"method": "byot", "student": "mlp"}, "mlp has no stages to attach to"),
    ({"method": "dino"}, "METHOD must be one of pskd, byot, cskd"),
    ({"method": "byot", "byot_alpha": 0.0}, r"BYOT_ALPHA must be a number in \(0, 1\]"),
    ({"method": "byot", "byot_T": 0.0}, "BYOT_T must be a number"),
    ({"method": "cskd", "cskd_lambda": -1.0}, "CSKD_LAMBDA must be a number"),
    ({"method": "cskd", "cskd_T": 1000.0}, "CSKD_T must be a number"),
    ({"method": "cskd", "labels": 0}, "needs hard labels"),
])
def test_bad_method_settings_are_refused(tmp_path, prepared, kw, match):
    with pytest.raises(UsageError, match=match):
        self_distill(SelfDistillConfig(dataset=prepared, out_dir=tmp_path / "r", **kw), progress=False)
    assert not (tmp_path / "r").exists()


def test_cli_branch_method_on_the_mlp_is_one_line_exit_2(tmp_path, prepared):
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "self-distill", "--dataset", str(prepared),
                           "--out-dir", str(tmp_path / "r"), "--method", "byot", "--student", "mlp"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no stages to attach to" in proc.stderr and not (tmp_path / "r").exists()


def test_the_experiment_tunes_every_method_on_held_out_rows(tmp_path, prepared):
    shared = StudentConfig(cache=tmp_path / "c.h5", dataset=prepared, out_dir=tmp_path / "runs", epochs=2)
    cfg = SelfKDExperimentConfig(student=shared, runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "tuning",
                                 reports_dir=tmp_path / "reports", few_labels=30, few_epochs=7, Ts=(1.0,),
                                 alphas=(0.5,), seeds=(0, 1, 2), holdout=20)
    plan = plan_tuning(cfg)
    assert all(run.holdout == 20 and run.out_dir.parent == tmp_path / "tuning" for run in plan)
    methods = [run.method for run in plan if isinstance(run, SelfDistillConfig)]
    assert sorted(set(methods)) == sorted(SELF_GRIDS) and len(methods) == 2 * 2 * 2 * 3   # students x labels x values
    few = [run for run in plan if run.labels == 30]
    assert {run.epochs for run in few if isinstance(run, SelfDistillConfig)} == {7}
    assert {run.epochs for run in few if isinstance(run, StudentConfig)} == {2}       # the KD arm sees every row


def test_a_branch_trained_student_exports_as_the_built_in_student(tmp_path, prepared):
    """The ONNX file of a BYOT run holds exactly the weights of the same student trained from scratch (same
    initializer shapes and count), and passes the export's parity check."""
    import numpy as np
    import onnx

    from pipeline.config import ExportConfig
    from pipeline.results.export import export_run

    def onnx_weights(run_dir):
        report = export_run(ExportConfig(run_dir=run_dir, formats=("onnx",)), progress=False)
        graph = onnx.load(str(run_dir / "export" / "model.onnx")).graph
        return report, sorted(tuple(t.dims) for t in graph.initializer)

    byot = config(tmp_path / "b", prepared, "byot", student="cnn-small", epochs=1)
    plain = config(tmp_path / "p", prepared, "cskd", student="cnn-small", epochs=1)
    m = self_distill(byot, progress=False)
    self_distill(plain, progress=False)
    report, shapes = onnx_weights(byot.out_dir)
    assert shapes == onnx_weights(plain.out_dir)[1]
    assert sum(int(np.prod(s)) for s in shapes) <= m["params"] + 4 * 2 * 96   # BN may fold; no branch weights
    assert report["parity"]["onnx"]["argmax_agreement"] == 1.0


def test_the_experiment_runs_every_arm_and_writes_its_table(tmp_path, prepared, cache_file):
    import json

    from pipeline.experiments.selfkd import run_selfkd_experiment, selfkd_report
    shared = StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "runs", epochs=1, batch_size=16)
    cfg = SelfKDExperimentConfig(student=shared, runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "tuning",
                                 reports_dir=tmp_path / "reports", students=("cnn-tiny",), few_labels=30,
                                 few_epochs=2, Ts=(1.0,), alphas=(0.5,), seeds=(0, 1), holdout=20, threads=1)
    record = run_selfkd_experiment(cfg)
    arms = record["arms"]
    assert [(r["labels"], r["arm"]) for r in arms] == [(96, a) for a in ("scratch", "pskd", "byot", "cskd", "kd")] + \
        [(30, a) for a in ("scratch", "pskd", "byot", "cskd", "kd")]
    assert all(r["seeds"] == [0, 1] and r["curve"] for r in arms)
    assert all((r["vs_scratch"] is None) == (r["arm"] == "scratch") for r in arms)
    few = {r["arm"]: r for r in arms if r["labels"] == 30}
    assert few["scratch"]["epochs"] == few["cskd"]["epochs"] == 2 and few["kd"]["epochs"] == 1
    assert dict(few["byot"]["setting"])["alpha"] in SELF_GRIDS["byot"][1]
    table = selfkd_report(cfg.reports_dir).read_text()
    assert table.count("\n| cnn-tiny |") == 10 and "BYOT" in table and "CS-KD" in table and "selfkd-experiment.png" in table
    assert json.loads(selfkd_report(cfg.reports_dir, ".json").read_text())["few_labels"] == 30
    statuses = []
    again = run_selfkd_experiment(cfg, on_result=lambda r: statuses.append(r["status"]))
    assert set(statuses) == {"skipped"} and len(statuses) == 14 + 20    # resumed: nothing is trained again
    assert [r["test_acc"] for r in again["arms"]] == [r["test_acc"] for r in arms]


@pytest.mark.slow
def test_a_self_distilled_student_through_make_exports_and_reports(tmp_path, method="byot"):
    """Real Fashion-MNIST (500 rows), no teacher: make self-distill, then export and report as for any run (BYOT,
    whose run holds branches that must not ship; the Make rule is the same for every METHOD)."""
    import json

    from tests.test_make import make
    common = ["LIMIT=500", "EPOCHS=2", f"DATA_DIR={tmp_path}", "STUDENT=cnn-tiny", f"METHOD={method}", "THREADS=1",
              "LOG=tensorboard"]
    make("self-distill", *common)
    knobs = "a0.1-b1e-06-T3" if method == "byot" else "w1-T4"
    run = f"cnn-tiny-{method}-{knobs}-s0-e2-on-fashion-mnist-n500"
    metrics = json.loads((tmp_path / "runs" / run / "metrics.json").read_text())
    assert metrics["params"] == count_params(create_student("cnn-tiny")) and len(metrics["history"]) == 2
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert "self-distill --dataset" not in make("-n", "self-distill", *common).stdout   # finished: not run again
    make("export", *common, f"RUN={run}", "FORMATS=onnx")
    export = json.loads((tmp_path / "runs" / run / "export" / "export.json").read_text())
    assert export["parity"]["onnx"]["argmax_agreement"] == 1.0
    report = make("report", *common).stdout
    assert ("BYOT" if method == "byot" else "CS-KD") in report


def test_on_text_make_self_distill_is_pskd_through_the_lm_student_stage(tmp_path):
    from tests.test_make import make
    dry = make("-n", "self-distill", "DATASET=stdlib", f"DATA_DIR={tmp_path}", "ALPHA_T=0.6", "STEPS=40").stdout
    assert "runs/lm-small-pskd-a0.6-s0-st40-on-stdlib" in dry and "--alpha '0'" in dry
    assert "--self-alpha-T '0.6'" in dry and "lm-student" in dry
    refused = make("-n", "self-distill", "DATASET=stdlib", f"DATA_DIR={tmp_path}", "METHOD=byot", check=False)
    assert refused.returncode == 2 and "a language model self-distills with METHOD=pskd" in refused.stderr
    assert not any(tmp_path.iterdir())
