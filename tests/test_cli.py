"""The ``visionzoo`` command (issue 15): list, info, convert, bench.

Every test runs on one model per landed family (its contract model, reduced where a forward runs), discovered
through ``FAMILIES``; nothing names a family.
"""
from __future__ import annotations

import json
import sys

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode
from visionzoo.models import FAMILIES

from visionzoo import cli, kernels
from visionzoo.flops import attributed_ops, count_flops, op_flops

from .conftest import CONTRACT_MODELS, FAMILY_NAMES, meta_param_count, reduced_model


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------------------- FLOPs

@pytest.fixture
def chunked_routes(monkeypatch):
    """Switch off torch paths' dense shortcuts (a torch path may route small maps through a dense masked product
    that computes more than the op's formula by design, e.g. routing attention's DENSE_MAX_TOKENS), so the torch
    path computes exactly the formula's work and FlopCounterMode can check it."""
    for name, module in list(sys.modules.items()):
        if (name.startswith("visionzoo.kernels.") and name.endswith(".torch_path")
                and hasattr(module, "DENSE_MAX_TOKENS")):
            monkeypatch.setattr(module, "DENSE_MAX_TOKENS", 0)
    from visionzoo.kernels.window_attention import torch_path as window_torch_path
    monkeypatch.setattr(window_torch_path, "UNMASKED_SDPA", False)  # SDPA's CPU kernel is invisible to the counter


# Ops whose torch path computes exactly the work its formula counts (with dense shortcuts off, see chunked_routes):
# for these, the interception must change nothing. The others compute a different amount by design and their formula
# is checked against FlopCounterMode on the op alone in tests/kernels/test_<op>.py: neighbourhood attention and
# aggregation score whole tile halos (more than the k*k keys counted), sparse attention runs inside custom ops that
# FlopCounterMode does not see into (it counts 0 there), which is why ops are booked by their formulas at all.
EXACT_ON_TORCH_PATH = {"window_attention", "routing_attention", "channel_attention", "linear_attention"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("size", [(96, 128)])  # non-square; one size keeps the suite short
def test_flops_match_flop_counter_on_torch_path(family, size, chunked_routes):
    """One model per landed family (reduced, on CPU), against plain FlopCounterMode on the torch path:

    * the family's attention ran through intercepted ``visionzoo.kernels`` ops (only those it declares);
    * everything outside the ops is counted identically (exactly: the interception only re-books op calls);
    * for ops whose torch path computes exactly the formula's work (EXACT_ON_TORCH_PATH), the booked formula equals
      what FlopCounterMode saw inside the calls, exactly (both count 2 per multiply-add of the same matmuls, padded
      maps included), so a model on those ops gets the same total either way."""
    model = reduced_model(FAMILIES[family].contract_model).eval()
    with kernels.use_backend("torch"):
        ours, counts = count_flops(model, (3, *size), device="cpu")
        plain, _ = count_flops(model, (3, *size), device="cpu", attribute_ops=False)
    assert counts.calls and set(counts.calls) <= set(FAMILIES[family].kernels)
    assert ours - sum(counts.formula.values()) == plain - sum(counts.seen.values())
    for op, flops in counts.formula.items():
        assert flops > 0
        if op in EXACT_ON_TORCH_PATH:
            assert flops == counts.seen[op], op
    if set(counts.calls) <= EXACT_ON_TORCH_PATH:
        assert ours == plain


def test_op_formula_equals_flop_counter_for_one_call():
    """``op_flops`` maps a call's arguments onto the op's formula (here window attention, whose formula takes the
    shape, not the tensors), and booking it inside a FlopCounterMode replaces what the torch path computed: one call
    on a map that is not whole windows (the padded map is what the torch path computes and the formula counts)."""
    q, k, v = (torch.randn(2, 9, 10, 3, 6) for _ in range(3))
    with torch.no_grad(), kernels.use_backend("torch"), FlopCounterMode(display=False) as plain:
        kernels.window_attention(q, k, v, (4, 5), "grid")
    expected = 2 * 2 * 2 * 3 * (12 * 10) * 20 * 6
    assert plain.get_total_flops() == expected
    assert op_flops("window_attention", q, k, v, (4, 5), partition="grid") == expected
    # booked through the interception: a visionzoo module calling the op
    from visionzoo.layers import attention as layer_module
    assert layer_module.window_attention is kernels.window_attention
    with torch.no_grad(), kernels.use_backend("torch"), FlopCounterMode(display=False) as counter:
        with attributed_ops(counter) as counts:
            layer_module.window_attention(q, k, v, (4, 5), "grid")
    assert layer_module.window_attention is kernels.window_attention  # restored
    assert counts.calls == {"window_attention": 1} and counter.get_total_flops() == expected
    assert counter.get_flop_counts()["Global"] == {"visionzoo.window_attention": expected}
    # called through the package namespace too (``kernels.op(...)``)
    with torch.no_grad(), kernels.use_backend("torch"), FlopCounterMode(display=False) as counter:
        with attributed_ops(counter) as counts:
            kernels.window_attention(q, k, v, (4, 5), "grid")
            layer_module.window_attention(q, k, v, (4, 5), "grid")
    assert kernels.window_attention is layer_module.window_attention  # both restored
    assert counts.calls == {"window_attention": 2} and counter.get_total_flops() == 2 * expected


# -------------------------------------------------------------------------------------------------------- list

def test_list_json(capsys):
    """list --json of one model per family: meta parameter count, GFLOPs equal to count_flops on the meta model at
    its default size, tags, minimum input and kernels from the registry and the family."""
    name = CONTRACT_MODELS[0]
    rc, out, _ = run_cli(capsys, "list", name, "--json")
    assert rc == 0
    (row,) = json.loads(out)
    cfg = timm.get_pretrained_cfg(name).to_dict()
    assert row["model"] == name and row["params"] == meta_param_count(name)
    assert row["input_size"] == list(cfg["input_size"])
    assert row["pretrained_tags"] == [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
    assert row["kernels"] == list(FAMILIES[row["family"]].kernels)
    if cfg.get("min_input_size"):
        assert row["min_input_size"] == list(cfg["min_input_size"])
    assert set(row["attention_gflops"]) <= set(row["kernels"]) and row["attention_gflops"]
    assert 0 < sum(row["attention_gflops"].values()) < row["gflops"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_list_row_of_every_family(family):
    """``list``'s row for each family's contract model (reduced, at its default input size) has a FLOP count with
    the attention booked under ops the family declares: counted on the meta device, or on CPU tensors for a model
    that needs values (the fallback)."""
    fam = FAMILIES[family]
    row = cli.model_summary(fam.contract_model, **fam.reduced)
    assert row["gflops"] > 0 and row["attention_gflops"] and set(row["attention_gflops"]) <= set(fam.kernels)
    assert row["params"] == meta_param_count(fam.contract_model, **fam.reduced)


def test_list_table_pattern_and_unknown(capsys):
    rc, out, _ = run_cli(capsys, "list", "vz_*_tiny*", "--no-flops")
    assert rc == 0
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == timm.list_models("vz_*_tiny*") and listed
    rc, out, err = run_cli(capsys, "list", CONTRACT_MODELS[0] + "x")
    assert rc == 2 and "no registered model" in err and CONTRACT_MODELS[0] in err and not out


# -------------------------------------------------------------------------------------------------------- info

@pytest.mark.parametrize("name", CONTRACT_MODELS)
def test_info_json(name, capsys):
    """info --json of one model per family (reduced through --model-kwargs): the pretrained cfg, the constructor
    arguments (the reduced ones override the registration's), feature_info as the model reports it, and the eval
    transform timm resolves from the pretrained cfg (crop size, mean/std)."""
    family = FAMILIES[cli.family_of(name).name]
    rc, out, _ = run_cli(capsys, "info", name, "--json", "--model-kwargs", json.dumps(dict(family.reduced)))
    assert rc == 0
    info = json.loads(out)
    model = reduced_model(name)
    cfg = timm.get_pretrained_cfg(name).to_dict()
    assert info["pretrained_cfg"]["architecture"] == name
    assert info["pretrained_cfg"]["mean"] == list(cfg["mean"]) and info["pretrained_cfg"]["crop_pct"] == cfg["crop_pct"]
    for key, value in family.reduced.items():
        assert info["model_args"][key] == json.loads(json.dumps(value))  # tuples (nested too) as JSON lists
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert [f["num_chs"] for f in info["feature_info"]] == [f["num_chs"] for f in model.feature_info]
    assert [f["reduction"] for f in info["feature_info"]] == [f["reduction"] for f in model.feature_info]
    assert info["data_config"]["input_size"] == list(cfg["input_size"])
    crop = f"CenterCrop(size=({cfg['input_size'][1]}, {cfg['input_size'][2]}))"
    assert any(crop in t for t in info["eval_transform"])
    assert info["family"]["kernels"] == list(family.kernels)


def test_info_table_and_bad_names(capsys):
    name = CONTRACT_MODELS[0]
    tag = timm.list_pretrained(f"{name}.*")[0]
    rc, out, _ = run_cli(capsys, "info", tag)
    assert rc == 0 and "feature_info" in out and "eval transform" in out and "CenterCrop" in out
    rc, out, err = run_cli(capsys, "info", name[:-1] + "x")
    assert rc == 2 and "did you mean" in err and name in err and not out
    rc, out, err = run_cli(capsys, "info", name + ".no_such_tag")
    assert rc == 2 and "no pretrained tag" in err


# ----------------------------------------------------------------------------------------------------- convert

def _official_davit(tmp_path):
    """The DaViT parity fixture (official dingmyu/davit key layout, reduced configuration, randomised tensors; see
    tests/models/test_davit.py), wrapped as the official training script saves it (with an argparse Namespace,
    which only the project's safe reader accepts), and the official code's logits on the fixture's input."""
    import argparse

    from .models.test_davit import OFFICIAL_CFG, _fixture, _image

    path = tmp_path / "official.pth"
    torch.save({"state_dict": _fixture("official."), "epoch": 3, "args": argparse.Namespace(lr=1e-3)}, path)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in OFFICIAL_CFG.items()}
    return "vz_davit_tiny", path, dict(kwargs, num_classes=10), _image(224, 224), _fixture()["logits224"]


def _official_biformer(tmp_path):
    """The BiFormer parity fixture (official rayleizhu/BiFormer layout under "model", reduced configuration; see
    tests/models/test_biformer.py) and the official code's logits."""
    from .models.test_biformer import REDUCED, normalised, official_fixture

    checkpoint, expected = official_fixture("biformer_reduced.safetensors")
    path = tmp_path / "official.pth"
    torch.save(checkpoint, path)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in REDUCED.items()}
    return "vz_biformer_tiny", path, kwargs, normalised(1, 224, 224), expected["logits_224"]


# the parity fixtures in official layouts (two families, two wrappers: "state_dict" + args, "model")
OFFICIAL_CHECKPOINTS = {"davit": _official_davit, "biformer": _official_biformer}


@pytest.mark.parametrize("family", sorted(OFFICIAL_CHECKPOINTS))
def test_convert_official_checkpoint_to_hub_layout(family, tmp_path, capsys):
    """An official checkpoint through convert: the directory has timm's hub layout, the weights are in our key layout,
    config.json carries the pretrained cfg (eval transform, license, source) and the model args, and both timm routes
    (the pretrained-file overlay, and ``local-dir:``, which is what the HF hub serves) load it and reproduce the
    official code's logits (fp32, 1e-4: the parity tolerance of the family tests; same operations in another order)."""
    from safetensors.torch import load_file

    name, checkpoint, kwargs, image, expected = OFFICIAL_CHECKPOINTS[family](tmp_path)
    out = tmp_path / "hub"
    rc, stdout, err = run_cli(capsys, "convert", name, str(checkpoint), str(out), "--model-kwargs", json.dumps(kwargs),
                              "--size", "64x96", "--json")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert summary["max_abs_logit_diff"] == 0.0 and summary["input"] == [2, 3, 64, 96]
    config = json.loads((out / "config.json").read_text())
    cfg = timm.get_pretrained_cfg(name).to_dict()
    assert config["architecture"] == name and config["num_classes"] == 10
    assert {k: config["model_args"][k] for k in kwargs} == kwargs
    for key in ("mean", "std", "crop_pct", "interpolation", "license", "origin_url", "paper_ids"):
        assert config["pretrained_cfg"][key] == (list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key])
    ours = timm.create_model(name, **kwargs)
    assert set(load_file(str(out / "model.safetensors"))) == set(ours.state_dict())

    by_file = timm.create_model(name, pretrained=True, **kwargs, pretrained_cfg_overlay=dict(
        file=str(out / "model.safetensors"), num_classes=10)).eval()
    by_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        for model in (by_file, by_dir):
            assert (model(image) - expected).abs().max() < 1e-4
    assert expected.abs().max() > 1.0


def test_convert_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    """A checkpoint of another architecture, a classifier of another size, an unknown model, a missing file, a
    non-empty output: a one-line error (exit 2) and nothing written."""
    _, checkpoint, kwargs, _, _ = _official_davit(tmp_path)
    out = tmp_path / "new" / "out"
    other = next(n for n in CONTRACT_MODELS if n != "vz_davit_tiny")
    cases = [
        ((other, str(checkpoint), str(out)), "does not fit"),
        (("vz_davit_tiny", str(checkpoint), str(out), "--model-kwargs",
          json.dumps({k: v for k, v in kwargs.items() if k != "num_classes"})), "pass num_classes"),
        (("vz_davit_tinyy", str(checkpoint), str(out)), "did you mean vz_davit_tiny"),
        (("vz_davit_tiny", str(tmp_path / "missing.pth"), str(out)), "is not a file"),
    ]
    for argv, message in cases:
        rc, stdout, err = run_cli(capsys, "convert", *argv)
        assert rc == 2 and message in err and not stdout, (argv, err)
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir()] == ["official.pth"]  # no staging folder left either
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("x")
    rc, _, err = run_cli(capsys, "convert", "vz_davit_tiny", str(checkpoint), str(out))
    assert rc == 2 and "not empty" in err and [p.name for p in out.iterdir()] == ["keep.txt"]


# ------------------------------------------------------------------------------------------------------- bench

def test_bench_against_anchor_json(capsys):
    """A reduced zoo model and a tiny timm anchor, interleaved in one process, eval mode with channels_last: one row
    each with positive timings and peak memory, and the ratios are ours / the anchor's.
    (Nothing about speed is asserted: this machine is shared.)"""
    name = CONTRACT_MODELS[0]
    kwargs = dict(FAMILIES[cli.family_of(name).name].reduced)
    rc, out, err = run_cli(capsys, "bench", name, "--anchor", "test_resnet", "--batch", "2", "--size", "48x64",
                           "--mode", "eval", "--channels-last", "--repeats", "2", "--warmup", "1",
                           "--model-kwargs", json.dumps(kwargs), "--json")
    assert rc == 0, err
    result = json.loads(out)
    ours, anchor = result["rows"]
    assert (ours["model"], ours["role"], anchor["model"], anchor["role"]) == (name, "model", "test_resnet", "anchor")
    assert ours["params"] == sum(p.numel() for p in reduced_model(name).parameters())
    for row in (ours, anchor):
        assert row["mode"] == "eval" and row["size"] == "48x64" and row["channels_last"] and row["batch"] == 2
        assert row["ms_per_step"] > 0 and row["peak_mb"] > 0 and row["vs"] == "test_resnet"
        assert row["images_per_s"] == pytest.approx(2e3 / row["ms_per_step"], rel=1e-3)
    assert anchor["images_per_s_ratio"] == 1.0 and anchor["peak_mb_ratio"] == 1.0
    assert ours["images_per_s_ratio"] == pytest.approx(ours["images_per_s"] / anchor["images_per_s"], rel=1e-2)
    assert ours["peak_mb_ratio"] == pytest.approx(ours["peak_mb"] / anchor["peak_mb"], rel=1e-2)
    assert "threads" in result["machine"] or "cuda" in ours["device"]


def test_bench_csv_bf16_and_bad_input(capsys):
    name = CONTRACT_MODELS[-1]
    kwargs = json.dumps(dict(FAMILIES[cli.family_of(name).name].reduced))
    rc, out, err = run_cli(capsys, "bench", name, "--size", "48", "--mode", "train", "--dtype", "bf16",
                           "--repeats", "1", "--warmup", "0", "--no-memory", "--model-kwargs", kwargs, "--csv")
    assert rc == 0, err
    header, row, *rest = out.strip().splitlines()
    assert not rest and header.startswith("model,role,") and row.startswith(f"{name},model,")
    assert ",train,bf16," in row  # forward + backward under bf16 autocast
    min_size = timm.get_pretrained_cfg(name).to_dict().get("min_input_size")
    cases = [((name, "--anchor", "resnet5o"), "unknown anchor"), ((name + "x",), "did you mean"),
             ((name, "--size", "0x64"), "positive integers"),
             ((name, "--anchor", "maxvit_tiny_tf_224", "--size", "256"), "takes only 224x224")]
    if min_size:
        cases.append(((name, "--size", f"{min_size[1] - 1}x{min_size[2]}"), "at least"))
    for argv, message in cases:
        rc, out, err = run_cli(capsys, "bench", *argv)
        assert rc == 2 and message in err and not out, (argv, err)
