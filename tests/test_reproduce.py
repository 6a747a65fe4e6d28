"""``sdkd reproduce ns --budget smoke`` end to end: stages, table, figures, reuse and the feature-KD config path."""

import csv
import json

import pytest
import torch

from sdkd.cli import main
from sdkd.reproduce import ABLATION_STAGES, MAIN_STAGES, stage_configs
from sdkd.train import ConfigError, build_config, load_checkpoint
from sdkd.train.run import build_datasets, load_model


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run shared by the tests: (output folder, data folder). Single-threaded: these
    tiny models run faster that way, above all on a busy machine."""
    root = tmp_path_factory.mktemp("repro")
    out, data = root / "out", root / "data"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["reproduce", "ns", "--budget", "smoke", "--out", str(out), "--data", str(data)]) == 0
        yield out, data
    finally:
        torch.set_num_threads(threads)


def test_smoke_writes_every_stage_table_and_figures(smoke):
    out, _ = smoke
    for stage in MAIN_STAGES:
        assert (out / stage / "best.pt").is_file(), stage
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert list(rows) == list(MAIN_STAGES)
    assert rows["student"]["improvement_pct"] == 0.0
    for stage, row in rows.items():
        assert row["mse"] > 0 and row["latency_ms"] > 0 and row["params"] > 0 and row["val_mse"] > 0, stage
        assert row["low_err"] + row["high_err"] == pytest.approx(row["mse"], rel=1e-4)
        if stage not in ("t1", "t2"):
            want = 100 * (rows["student"]["mse"] - row["mse"]) / rows["student"]["mse"]
            assert row["improvement_pct"] == pytest.approx(want) and row["improvement_se"] >= 0
    # the table's MSE is the model's real test MSE
    ck = load_checkpoint(out / "spectralkd" / "best.pt")
    test = build_datasets(ck["config"]["data"])["test"]
    model, _ = load_model(out / "spectralkd" / "best.pt")
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.stack([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        assert rows["spectralkd"]["mse"] == pytest.approx(torch.mean((model(x) - y) ** 2).item(), rel=1e-4)
    md = (out / "results.md").read_text()
    assert "| T1: ST-AlterNet |" in md and "| S: U-Net |" in md and "| +CA-MKD (w SpectralKD) |" in md
    for label in ("+SpectralKD latent (T1)", "+A2D/AEKD (w latent SpectralKD)", "+AT (T1 attention maps)"):
        assert f"| {label} |" in md
    assert "torch" in md and "command:" in md
    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["stage"] for r in table] == list(MAIN_STAGES) and "improvement_pct" in table[0]
    assert all(int(r["epochs"]) == 1 and float(r["train_s"]) > 0 for r in table)
    for name in ("spectral_error.png", "improvement.png", "speed.png", "figure2.png"):
        assert (out / name).stat().st_size > 1000, name


def test_smoke_stages_use_the_paper_strategies(smoke):
    out, _ = smoke
    cfg = {s: load_checkpoint(out / s / "last.pt")["config"] for s in MAIN_STAGES}
    assert cfg["t1"]["model"]["name"] == "st_alternet" and cfg["t2"]["model"]["name"] == "simvp"
    # Table 5's "single teacher (VAN)": SimVP with the VAN translator, otherwise T2's config
    assert cfg["t_van"]["model"] == {"name": "simvp", "cfg": {**cfg["t2"]["model"]["cfg"], "translator": "van"}}
    d = {s: c["distill"] for s, c in cfg.items() if c["stage"] == "distill"}
    assert {s: v["strategy"] for s, v in d.items()} == {
        "spectralkd": "single",
        "spectralkd_latent": "single",
        "at": "single",
        "aver": "aver",
        "a2d_mse": "a2d",
        "a2d_ab": "a2d",
        "a2d_spectralkd": "a2d",
        "a2d_spectralkd_latent": "a2d",
        "camkd": "camkd",
        "single_van": "single",
    }
    single = ("spectralkd", "spectralkd_latent", "at", "single_van")
    assert all(len(v["teachers"]) == 1 for k, v in d.items() if k in single)
    assert all(len(v["teachers"]) == 2 for k, v in d.items() if k not in single)
    assert (
        d["single_van"]["teachers"] == [str(out / "t_van" / "best.pt")] and d["single_van"]["kd"]["type"] == "spectral"
    )
    assert d["a2d_mse"]["kd"]["type"] == "mse" and d["camkd"]["kd"]["type"] == "spectral"
    ab = d["a2d_ab"]
    assert ab["kd"]["type"] == "none" and ab["feature_loss"] == "ab" and ab["features"][0] == {"enc": "block0"}
    # the AB feature term was trained (logged per teacher), and its connector was optimised with the student
    logged = json.loads((out / "a2d_ab" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["train_feat/0"] > 0 and logged["train_feat/1"] > 0 and logged["train_kd/0"] == 0
    # latent SpectralKD: T1's bands from its own branches, T2's (no branches) from its last block; the main
    # rows' SpectralKD setting; no prediction KD (task loss + latent term only)
    branches = {"low": "block0.low", "high": "block0.high"}
    for stage, taps in (("spectralkd_latent", [branches]), ("a2d_spectralkd_latent", [branches, "block0"])):
        v = d[stage]
        assert v["feature_loss"] == "spectral" and v["kd"] == {"type": "none"} and v["feature_lam"] == 1.0
        assert [f["enc"] for f in v["features"]] == taps and v["feature_cfg"]["alpha"] == 2.0
        logged = json.loads((out / stage / "metrics.jsonl").read_text().splitlines()[0])
        assert all(logged[f"train_feat/{m}"] > 0 for m in range(len(taps))) and logged["train_kd/0"] == 0
    # attention transfer from T1's attention branch
    assert d["at"]["feature_loss"] == "at" and d["at"]["features"] == [{"enc": "block0.low"}]
    assert json.loads((out / "at" / "metrics.jsonl").read_text().splitlines()[0])["train_feat/0"] > 0


def test_rerun_reuses_finished_stages(smoke):
    out, data = smoke
    mtimes = {s: (out / s / "last.pt").stat().st_mtime for s in MAIN_STAGES}
    before = json.loads((out / "results.json").read_text())["rows"]
    assert main(["reproduce", "ns", "--budget", "smoke", "--out", str(out), "--data", str(data), "--no-figures"]) == 0
    assert {s: (out / s / "last.pt").stat().st_mtime for s in MAIN_STAGES} == mtimes
    rows = json.loads((out / "results.json").read_text())["rows"]
    for s in MAIN_STAGES:
        assert rows[s]["mse"] == pytest.approx(before[s]["mse"], rel=1e-6)


def test_evaluates_and_times_on_the_training_device(smoke, monkeypatch):
    """--device reaches the evaluation (it used to evaluate and time on the CPU whatever the device)."""
    import sdkd.reproduce as R

    out, data = smoke
    seen = []

    class Evaluated(Exception):
        pass

    def spy(*args, **kwargs):  # record the device and stop: the finished stages were reused, nothing else runs
        seen.append(kwargs.get("device"))
        raise Evaluated

    monkeypatch.setattr(R, "evaluate_stages", spy)
    for device in ("cpu", None):
        with pytest.raises(Evaluated):
            R.run_reproduce("ns", "smoke", out, data_path=str(data), device=device, figures=False, log=lambda _m: None)
    assert seen == ["cpu", "cuda" if torch.cuda.is_available() else "cpu"]


def test_openstl_metrics_columns(smoke, tmp_path):
    out, data = smoke
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert "mse_openstl" not in rows["student"]
    argv = ["reproduce", "ns", "--budget", "smoke", "--out", str(out), "--data", str(data)]
    assert main([*argv, "--no-figures", "--openstl-metrics"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    ck = load_checkpoint(out / "student" / "best.pt")
    T, C, H, W = ck["model_spec"]["in_shape"]
    for row in rows.values():  # OpenSTL: per-frame sum over C, H, W = per-pixel mean * C * H * W
        assert row["mse_openstl"] == pytest.approx(row["mse"] * C * H * W, rel=1e-5)
        assert row["mse_openstl_phys"] == pytest.approx(row["mse_phys"] * C * H * W, rel=1e-5)
    assert "| mse_openstl | mae_openstl |" in (out / "results.md").read_text()


def test_a_stage_stored_before_a_new_config_key_is_reused(smoke, tmp_path):
    # a finished stage written before distill.feature_cfg existed keeps its weights on a rerun
    import shutil

    from sdkd.train.checkpoint import save_checkpoint
    from sdkd.train.demo import run_or_reuse

    out, _ = smoke
    stage = tmp_path / "spectralkd"
    shutil.copytree(out / "spectralkd", stage)
    ck = load_checkpoint(stage / "last.pt")
    cfg = build_config(base={**ck["config"], "out_dir": str(stage)})
    del ck["config"]["distill"]["feature_cfg"]
    ck["config"]["out_dir"] = str(stage)
    save_checkpoint(stage / "last.pt", ck)
    before = (stage / "last.pt").stat().st_mtime
    datasets = build_datasets(cfg["data"])
    assert run_or_reuse(cfg, datasets, "cpu", lambda _m: None) == stage / "best.pt"
    assert (stage / "last.pt").stat().st_mtime == before and "feature_cfg" not in load_checkpoint(stage / "last.pt")[
        "config"
    ]["distill"]


def test_teachers_from_another_run_train_only_the_new_student(smoke, tmp_path, capsys):
    # the README's "one set of teachers, several students": --teachers-from copies t1/t2/t_van and reuses them
    out, data = smoke
    mine = tmp_path / "resnet"
    args = ["reproduce", "ns", "--budget", "smoke", "--student", "resnet", "--data", str(data), "--no-figures"]
    assert main([*args, "--out", str(mine), "--teachers-from", str(out)]) == 0
    log = capsys.readouterr().out
    assert "copied 3 teacher stage(s)" in log
    for t in ("t1", "t2", "t_van"):
        assert f"{mine / t}: finished with these settings; reused" in log
        assert (mine / t / "best.pt").read_bytes() == (out / t / "best.pt").read_bytes()
    rows = json.loads((mine / "results.json").read_text())["rows"]
    assert rows["t1"]["mse"] == pytest.approx(json.loads((out / "results.json").read_text())["rows"]["t1"]["mse"])
    assert load_checkpoint(mine / "student" / "best.pt")["model_spec"]["name"] == "resnet"


def test_copy_teachers_never_overwrites_and_says_what_is_missing(tmp_path):
    from sdkd.errors import SdkdError
    from sdkd.reproduce import copy_teachers

    src, dst = tmp_path / "src", tmp_path / "dst"
    for stage in ("t1", "t2"):  # no t_van in the source
        (src / stage).mkdir(parents=True)
        (src / stage / "last.pt").write_bytes(b"theirs " + stage.encode())
        (src / stage / "notes.txt").write_text("not sdkd's")
    (dst / "t2").mkdir(parents=True)
    (dst / "t2" / "last.pt").write_bytes(b"mine")
    logs = []
    assert copy_teachers(src, dst, 1, logs.append) == [dst / "t1"]
    assert (dst / "t1" / "last.pt").read_bytes() == b"theirs t1" and not (dst / "t1" / "notes.txt").exists()
    assert (dst / "t2" / "last.pt").read_bytes() == b"mine"  # left alone
    assert any("t_van" in m and "no finished teacher" in m for m in logs)
    assert not list(dst.rglob("*.copying"))
    with pytest.raises(SdkdError, match="not a folder"):
        copy_teachers(tmp_path / "nowhere", dst, 1)
    with pytest.raises(SdkdError, match="itself"):
        copy_teachers(dst, dst, 1)
    fresh = tmp_path / "fresh"  # a wrong --teachers-from is refused before --out is made
    with pytest.raises(SdkdError, match="not a folder"):
        main(["reproduce", "ns", "--teachers-from", str(tmp_path / "nowhere"), "--out", str(fresh)])
    assert not fresh.exists()


def test_figure2_draws_the_main_rows_only():
    from sdkd.reproduce import figure2_rows

    rows = [*MAIN_STAGES, *ABLATION_STAGES]
    assert figure2_rows(rows) == list(MAIN_STAGES)  # 14 bars, not 26: the ablation is in results.md


def test_ablation_adds_single_teacher_spectralkd_variants(tmp_path):
    main_cfgs = stage_configs("ns", "smoke", tmp_path)
    cfgs = stage_configs("ns", "smoke", tmp_path, ablation=True)
    assert list(cfgs) == [*MAIN_STAGES, *ABLATION_STAGES]
    assert all(cfgs[s] == main_cfgs[s] for s in MAIN_STAGES)  # so an --ablation run reuses the main stages
    kd = {s: cfgs[s]["distill"]["kd"] for s in ABLATION_STAGES}
    assert kd["abl_mse"] == {"type": "mse"}
    assert kd["abl_ad_cut0.125"]["cutoffs"] == 0.125 and kd["abl_ad_cut0.375"]["cutoffs"] == 0.375
    assert kd["abl_ad_alpha2"]["alpha"] == 2.0 and kd["abl_ad_band_mean"]["reduction"] == "band_mean"
    assert kd["abl_ad_cut0.125"]["weighting"] == "adaptive"
    assert kd["abl_fx_alpha0.5_cut0.375"] == {**kd["abl_ad_cut0.375"], "weighting": "fixed", "alpha": 0.5}
    # fixed weighting, alpha 1 and reduction "mean" would just repeat abl_mse: not in the grid
    fixed = [k for k in kd.values() if k.get("weighting") == "fixed"]
    assert fixed and all(k["alpha"] != 1.0 or k["reduction"] != "mean" for k in fixed)
    assert all(cfgs[s]["distill"]["strategy"] == "single" for s in ABLATION_STAGES)


@pytest.mark.parametrize("dataset", ["rbc", "weatherbench", "taxibj"])
def test_feature_rows_on_every_dataset(dataset, tmp_path):
    cfgs = stage_configs(dataset, "smoke", tmp_path, data_path=str(tmp_path / "data"))
    for stage in ("spectralkd_latent", "a2d_spectralkd_latent", "at"):
        assert stage in cfgs and cfgs[stage]["distill"]["features"][0]["enc"], stage
    assert cfgs["spectralkd_latent"]["distill"]["features"][0]["enc"] == {"low": "block0.low", "high": "block0.high"}


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="needs --data"):
        stage_configs("taxibj", "smoke", tmp_path)
    with pytest.raises(ValueError, match="budget"):
        stage_configs("ns", "huge", tmp_path)
    with pytest.raises(ValueError, match="student"):
        stage_configs("ns", "smoke", tmp_path, student="vit")
    with pytest.raises(SystemExit):
        main(["reproduce", "mnist"])


def test_feature_kd_config_needs_a_positive_weight(smoke, tmp_path):
    out, _ = smoke
    cfg = build_config(base=load_checkpoint(out / "a2d_ab" / "last.pt")["config"])
    cfg["out_dir"] = str(tmp_path / "x")
    cfg["distill"]["feature_lam"] = 0.0
    from sdkd.train.run import run_stage

    with pytest.raises(ConfigError, match="feature_lam"):
        run_stage(cfg, device="cpu", log=lambda _m: None)
    cfg["distill"]["feature_lam"] = 1.0
    cfg["distill"]["feature_loss"] = "cosine"
    with pytest.raises(ConfigError, match="feature_loss"):
        run_stage(cfg, device="cpu", log=lambda _m: None)
    # feature MSE (with adapters) on top of output MSE, one teacher: trains and logs both terms
    cfg["distill"].update(feature_loss="mse", kd={"type": "mse"}, strategy="single")
    cfg["distill"]["teachers"] = cfg["distill"]["teachers"][:1]
    cfg["distill"]["features"] = cfg["distill"]["features"][:1]
    run_stage(cfg, device="cpu", log=lambda _m: None)
    logged = json.loads((tmp_path / "x" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["train_feat/0"] > 0 and logged["train_kd/0"] > 0


# Last in this file: it turns the shared smoke run into a two-seed run (replicate 1 reused, replicate 2 trained).
@pytest.mark.slow
def test_seeds_2_reuses_seed_1_and_reports_mean_and_std(smoke):
    import statistics

    out, data = smoke
    mtimes = {s: (out / s / "last.pt").stat().st_mtime for s in MAIN_STAGES}
    argv = ["reproduce", "ns", "--budget", "smoke", "--out", str(out), "--data", str(data), "--seeds", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    # replicate 1 is the single-seed run, untouched; replicate 2 has every stage, with its own teachers
    assert {s: (out / s / "last.pt").stat().st_mtime for s in MAIN_STAGES} == mtimes
    for stage in MAIN_STAGES:
        cfg = load_checkpoint(out / "seed2" / stage / "last.pt")["config"]
        assert cfg["seed"] == 43 and cfg["out_dir"] == str(out / "seed2" / stage)
        for teacher in cfg.get("distill", {}).get("teachers", []):
            assert teacher.startswith(str(out / "seed2")), teacher
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [42, 43] and list(res["per_seed"]) == ["42", "43"]
    runs = [res["per_seed"]["42"], res["per_seed"]["43"]]
    assert runs[0]["t1"]["mse"] != runs[1]["t1"]["mse"]  # another seed, another teacher
    for stage in MAIN_STAGES:
        for col in ("mse", "mae", "ssim", "latency_ms", "improvement_pct"):
            values = [r[stage][col] for r in runs]
            assert res["rows"][stage][col] == pytest.approx(statistics.mean(values)), (stage, col)
            assert res["std"][stage][col] == pytest.approx(statistics.stdev(values), abs=1e-12), (stage, col)
        mse = [r[stage]["mse"] for r in runs]
        s_mse = [r["student"]["mse"] for r in runs]
        if MAIN_STAGES[stage][1] != "distill":  # teachers and the student alone are not judged
            assert res["better"][stage] is None
        else:  # the documented rule, on the replicates' own numbers
            gap = statistics.mean(s_mse) - statistics.mean(mse)
            assert res["better"][stage] == (gap > max(statistics.stdev(s_mse), statistics.stdev(mse)))
    md = (out / "results.md").read_text()
    assert "--seeds 2" in md and "| better |" in md and "sample std (N-1) over 2 seeds (42, 43)" in md
    assert all(" ± " in line for line in md.splitlines() if line.startswith("| S: U-Net |"))
    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["seed"] for r in table if r["stage"] == "spectralkd"] == ["42", "43", "mean", "std"]
    assert float(next(r for r in table if r["stage"] == "t1" and r["seed"] == "43")["mse"]) == pytest.approx(
        runs[1]["t1"]["mse"], rel=1e-5
    )
    for name in ("spectral_error.png", "improvement.png", "speed.png", "figure2.png"):
        assert (out / name).stat().st_size > 1000, name
