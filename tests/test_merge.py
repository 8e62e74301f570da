"""Model merging: exact numerics (fp32/bf16, all methods), streaming memory, validation, atomicity, Hydra."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from longrecipe.config import compose
from longrecipe.merging import build_spec, merge_from_config, merge_models
from longrecipe.merging import methods as M
from longrecipe.merging.checkpoint import parse_size, plan_shards, tensor_index, write_safetensors_streaming

REPO = Path(__file__).resolve().parents[1]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture()
def pair(tiny_model_dir):
    """(original, tuned): same architecture, different weights; tuned has an extended window + rope."""

    def make(dtype: torch.dtype = torch.float32):
        orig = tiny_model_dir("llama", seed=0)
        tuned = tiny_model_dir(
            "llama", seed=1, max_position_embeddings=1024,
            rope_parameters={"rope_type": "dynamic", "rope_theta": 10_000.0, "factor": 4.0},
        )
        if dtype != torch.float32:
            from transformers import AutoModelForCausalLM

            for d in (orig, tuned):
                m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
                m.to(dtype).save_pretrained(str(d))
        return orig, tuned

    return make


# ---------------------------------------------------------------- per-tensor rules, hand-checked
def test_linear_rule_exact():
    a, b = torch.tensor([1.0, 2.0, -4.0]), torch.tensor([3.0, 0.0, 4.0])
    assert torch.equal(M.linear([a, b], [0.25, 0.75]), torch.tensor([2.5, 0.5, 2.0]))


def test_slerp_rule_hand_values():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(M.slerp(a, b, 0.5), torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    torch.testing.assert_close(M.slerp(a, b, 1 / 3), torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    assert torch.equal(M.slerp(a, b, 0.0), a) and torch.allclose(M.slerp(a, b, 1.0), b)
    # colinear -> lerp fallback
    assert torch.equal(M.slerp(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]), 0.5), torch.tensor([1.5, 3.0]))
    # zero tensor -> lerp
    assert torch.equal(M.slerp(torch.zeros(2), torch.tensor([2.0, 4.0]), 0.25), torch.tensor([0.5, 1.0]))


def test_task_arithmetic_and_ties_hand_values():
    o = torch.zeros(4)
    t1, t2 = torch.tensor([1.0, -2.0, 3.0, 0.1]), torch.tensor([-1.5, -1.0, 2.0, 0.2])
    assert torch.equal(M.task_arithmetic(o + 1, [t1 + 1], [0.5]), torch.tensor([1.5, 0.0, 2.5, 1.05]))
    # trim(0.5): t1 -> [0,-2,3,0], t2 -> [-1.5,0,2,0]; elected sign [-,-,+,0]; disjoint mean:
    assert torch.equal(M.ties(o, [t1, t2], [1.0, 1.0], density=0.5), torch.tensor([-1.5, -2.0, 2.5, 0.0]))
    # one tuned model: TIES == task arithmetic on the trimmed task vector
    assert torch.equal(M.ties(o + 1, [t1 + 1], [0.5], density=0.5), torch.tensor([1.0, 0.0, 2.5, 1.0]))


# ---------------------------------------------------------------- whole models, exact
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method,lam", [("linear", 0.3), ("slerp", 0.4), ("task_arithmetic", 0.7), ("ties", 0.8)])
def test_merge_models_exact(pair, tmp_path, dtype, method, lam):
    orig, tuned = pair(dtype)
    out = tmp_path / "merged"
    merge_models(orig, tuned, out, method=method, lam=lam, density=0.5, progress=False)
    wo, wt, wm = _weights(orig), _weights(tuned), _weights(out)
    assert set(wm) == set(wt)
    for name, t in wt.items():
        o32, t32 = wo[name].float(), t.float()
        if method == "linear":
            expect = (1 - lam) * o32 + lam * t32
        elif method == "slerp":
            expect = M.slerp(o32, t32, lam)
        elif method == "task_arithmetic":
            expect = o32 + lam * (t32 - o32)
        else:
            expect = o32 + M.trim_to_density(lam * (t32 - o32), 0.5)
        assert wm[name].dtype == dtype, name
        assert torch.equal(wm[name], expect.to(dtype)), name
    # tuned model's config (extended window, rope) and tokenizer are kept; provenance written
    assert json.loads((out / "config.json").read_text()) == json.loads((tuned / "config.json").read_text())
    assert (out / "tokenizer.json").read_bytes() == (tuned / "tokenizer.json").read_bytes()
    prov = json.loads((out / "longrecipe.json").read_text())
    assert prov["method"] == method and prov["original"]["path"] == str(orig.resolve())


def test_linear_half_is_the_mean_and_loads_in_transformers(pair, tmp_path):
    from transformers import AutoModelForCausalLM

    orig, tuned = pair(torch.bfloat16)
    out = tmp_path / "merged"
    rec = merge_models(orig, tuned, out, lambdas=[0.5, 0.5], progress=False)
    assert rec["weights"] == [0.5, 0.5] and rec["dtype"] == "bfloat16"
    m = AutoModelForCausalLM.from_pretrained(str(out))
    assert m.dtype == torch.bfloat16 and m.config.max_position_embeddings == 1024
    assert m.config.rope_parameters["rope_type"] == "dynamic"
    w = m.model.layers[0].mlp.up_proj.weight
    a, b = _weights(orig), _weights(tuned)
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(w, ((a[key].float() + b[key].float()) / 2).to(torch.bfloat16))


def test_several_tuned_models_ties(pair, tiny_model_dir, tmp_path):
    orig, tuned = pair()
    tuned2 = tiny_model_dir("llama", seed=2)
    out = tmp_path / "ties"
    merge_models(orig, [tuned, tuned2], out, method="ties", lambdas=[1.0, 0.5], density=0.3, progress=False)
    wo, w1, w2, wm = _weights(orig), _weights(tuned), _weights(tuned2), _weights(out)
    for name in wo:
        expect = M.ties(wo[name], [w1[name], w2[name]], [1.0, 0.5], density=0.3)
        assert torch.equal(wm[name], expect), name


def test_sharded_output_equals_single_file(pair, tmp_path):
    orig, tuned = pair()
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    merge_models(orig, tuned, single, lam=0.25, progress=False)
    merge_models(orig, tuned, sharded, lam=0.25, max_shard_size="100KB", progress=False)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and all((sharded / f).is_file() for f in files)
    for f in files:  # every shard respects the cap unless a single tensor is bigger
        sizes = [v.nbytes for v in load_file(str(sharded / f)).values()]
        assert sum(sizes) <= 100_000 or len(sizes) == 1
    a, b = _weights(single), _weights(sharded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # sharded inputs are read too
    again = tmp_path / "from-sharded"
    merge_models(orig, sharded, again, lam=1.0, progress=False)
    c = _weights(again)
    assert all(torch.equal(c[k], b[k]) for k in b)


# ---------------------------------------------------------------- streaming writer / planner
def test_streaming_writer_roundtrip(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
               "c": torch.ones(3, dtype=torch.bfloat16) / 3, "d": torch.tensor(True)}
    specs = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    write_safetensors_streaming(tmp_path / "x.safetensors", specs, iter(tensors.items()))
    back = load_file(str(tmp_path / "x.safetensors"))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with pytest.raises(ValueError, match="does not match the planned"):
        write_safetensors_streaming(tmp_path / "y.safetensors", specs, iter([("a", torch.zeros(3))]))


def test_plan_shards_and_sizes():
    f = torch.float32
    assert plan_shards([("a", f, (10,)), ("b", f, (10,)), ("c", f, (30,)), ("d", f, (1,))], 80) == [["a", "b"], ["c"], ["d"]]
    assert parse_size("5GB") == 5_000_000_000 and parse_size("2KiB") == 2048 and parse_size(7) == 7
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size("lots")


# ---------------------------------------------------------------- validation, atomicity
def test_lambda_validation_messages():
    with pytest.raises(ValueError, match=r"merge.lambdas must not all be 0"):
        build_spec("linear", 1, lambdas=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"merge.lambda must be finite"):
        build_spec("linear", 1, lam=float("nan"))
    with pytest.raises(ValueError, match=r"merge.method must be one of \['linear', 'slerp', 'task_arithmetic', 'ties'\]"):
        build_spec("average", 1, lam=0.5)
    with pytest.raises(ValueError, match=r"merge.lambdas for linear needs 2 values"):
        build_spec("linear", 1, lambdas=[1.0])
    with pytest.raises(ValueError, match=r"slerp's t must be in \[0, 1\]"):
        build_spec("slerp", 1, lam=1.5)
    with pytest.raises(ValueError, match=r"merge.density must be in \(0, 1\]"):
        build_spec("ties", 1, lam=1.0, density=0.0)
    with pytest.warns(UserWarning, match="sum to 1.2, not 1"):
        spec = build_spec("linear", 1, lambdas=[0.6, 0.6])
    assert spec.weights == (0.6, 0.6)
    assert build_spec("linear", 1, lam=0.3).weights == (0.7, 0.3)
    assert build_spec("slerp", 1, lambdas=[1.0, 3.0]).weights == (0.75,)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(arch="mistral"), "different architectures: model_type is 'llama'"),
        (dict(vocab_size=600), "different vocab sizes: vocab_size is 512"),
        (dict(num_hidden_layers=3), "tensor names differ"),
        (dict(intermediate_size=128), r"tensor 'model.layers.0.mlp.down_proj.weight' has shape \[64, 256\]"),
    ],
)
def test_mismatch_refused_before_writing(tiny_model_dir, tmp_path, kwargs, match):
    orig = tiny_model_dir("llama", seed=0)
    arch = kwargs.pop("arch", "llama")
    other = tiny_model_dir(arch, seed=5, **kwargs)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        merge_models(orig, other, out, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_failed_merge_leaves_nothing(pair, tmp_path, monkeypatch):
    import longrecipe.merging.merge as mm

    orig, tuned = pair()
    calls = {"n": 0}
    real = mm.merge_tensor

    def flaky(spec, o, ts):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("disk on fire")
        return real(spec, o, ts)

    monkeypatch.setattr(mm, "merge_tensor", flaky)
    out = tmp_path / "merged"
    with pytest.raises(RuntimeError, match="disk on fire"):
        merge_models(orig, tuned, out, max_shard_size="50KB", progress=False)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted([orig.name, tuned.name])
    # existing output is never replaced silently
    out.mkdir()
    monkeypatch.setattr(mm, "merge_tensor", real)
    with pytest.raises(FileExistsError, match="pass overwrite=true"):
        merge_models(orig, tuned, out, progress=False)
    merge_models(orig, tuned, out, overwrite=True, progress=False)
    assert (out / "model.safetensors").is_file()


# ---------------------------------------------------------------- memory
def test_peak_memory_bounded_for_many_tensors(tmp_path):
    """200 tensors x 1 MB per model: the merge's anonymous-memory peak stays a few tensors, far below 2x model."""
    n, numel = 200, 256 * 1024  # 1 MiB fp32 each -> 200 MiB per model
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 8}
    for name, val in (("orig", 1.0), ("tuned", 3.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        half = n // 2
        for part, rng in ((1, range(half)), (2, range(half, n))):
            save_file({f"w{i:03d}": torch.full((numel,), val + i) for i in rng},
                      str(d / f"model-0000{part}-of-00002.safetensors"))
        wm = {f"w{i:03d}": f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i in range(n)}
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    script = textwrap.dedent(f"""
        import json, threading, time
        from longrecipe.merging import merge_models

        def anon_kb():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])

        base = anon_kb(); peak = [base]; done = threading.Event()
        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], anon_kb()); time.sleep(0.0005)
        th = threading.Thread(target=watch); th.start()
        merge_models({str(tmp_path / 'orig')!r}, {str(tmp_path / 'tuned')!r}, {str(tmp_path / 'out')!r},
                     lam=0.5, max_shard_size="64MB", progress=False)
        done.set(); th.join()
        print(json.dumps({{"base_kb": base, "peak_delta_mb": (peak[0] - base) / 1024}}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    model_mb = n * numel * 4 / 2**20
    assert stats["peak_delta_mb"] < 0.1 * model_mb, stats  # 2x model would be 400 MiB
    idx = tensor_index(tmp_path / "out")
    assert len(idx) == n and len({i.file for i in idx.values()}) == 4
    w = load_file(str(idx["w123"].file))["w123"]
    assert torch.equal(w, torch.full((numel,), 0.5 * (1 + 123) + 0.5 * (3 + 123)))


# ---------------------------------------------------------------- Hydra entry point
def test_merge_config_composes_and_runs(pair, tmp_path):
    orig, tuned = pair()
    cfg = compose("merge", [f"original={orig}", f"tuned={tuned}", f"output_root={tmp_path}", "merge=slerp",
                            "merge.lambda=0.25", "progress=false"])
    assert cfg.output == f"{tmp_path}/slerp-lambda0.25"
    rec = merge_from_config(cfg)
    assert rec["method"] == "slerp" and rec["weights"] == [0.25]
    assert (tmp_path / "slerp-lambda0.25" / "model.safetensors").is_file()
    cfg2 = compose("merge", [f"original={orig}", f"tuned={tuned}", f"output_root={tmp_path}", "merge.lambdas=[0,0]"])
    with pytest.raises(ValueError, match="must not all be 0"):
        merge_from_config(cfg2)


def test_lambda_multirun_sweep_cli(pair, tmp_path):
    orig, tuned = pair()
    res = subprocess.run(
        [sys.executable, "-m", "longrecipe.cli.merge", "-m", f"original={orig}", f"tuned={tuned}",
         f"output_root={tmp_path}", "merge.lambda=0.3,0.7", "progress=false"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    wo, wt = _weights(orig), _weights(tuned)
    key = "lm_head.weight"
    for lam in (0.3, 0.7):
        wm = _weights(tmp_path / f"linear-lambda{lam}")
        assert torch.equal(wm[key], (1 - lam) * wo[key] + lam * wt[key])
