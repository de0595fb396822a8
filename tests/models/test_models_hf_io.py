"""HF checkpoint import/export: sharded indexes, bf16, and clear errors for bad checkpoints."""

from __future__ import annotations

import json
import shutil

import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from hf_reference import hf_logits, make_hf_model, max_diff_at_real_tokens, padded_batch
from safetensors.numpy import load_file, save_file

from jaxalign.models import from_pretrained, logits, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4


def test_hf_sharded_checkpoint_loads(tmp_path):
    hf = make_hf_model("llama_gqa", seed=5)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (tmp_path / "model.safetensors.index.json").exists()
    tokens, mask = padded_batch(seed=4)
    model = from_pretrained(tmp_path)
    assert (
        max_diff_at_real_tokens(logits(model, tokens, mask), hf_logits(hf, tokens, mask), mask)
        <= TOL
    )


def test_save_pretrained_shards_with_index_and_both_sides_reload(hf_checkpoints, tmp_path):
    directory, hf = hf_checkpoints["qwen2_qkvbias_tied"]
    model = from_pretrained(directory)
    save_pretrained(model, tmp_path, max_shard_size=30_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) >= 3 and all((tmp_path / f).exists() for f in files)
    assert "lm_head.weight" not in index["weight_map"]  # tied: HF convention omits it
    tokens, mask = padded_batch(seed=5)
    reference = hf_logits(hf, tokens, mask)
    ours = logits(from_pretrained(tmp_path), tokens, mask)
    theirs = hf_logits(
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval(), tokens, mask
    )
    assert max_diff_at_real_tokens(ours, reference, mask) <= TOL
    assert max_diff_at_real_tokens(theirs, reference, mask) <= TOL
    # Saving again with one shard removes the stale shards of the earlier save.
    save_pretrained(model, tmp_path)
    assert [p.name for p in tmp_path.glob("model*.safetensors")] == ["model.safetensors"]
    assert not (tmp_path / "model.safetensors.index.json").exists()


def test_bf16_checkpoints_load_and_save(tmp_path):
    hf = make_hf_model("llama_gqa", seed=6).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf")
    tokens, mask = padded_batch(seed=6)
    # fp32 compute from bf16 weights: exact upcast, so parity with the upcast HF model.
    model32 = from_pretrained(tmp_path / "hf", dtype="float32")
    # (A fresh load, not hf.to(float32): .to(bfloat16) also rounded HF's RoPE buffer.)
    hf32 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert (
        max_diff_at_real_tokens(logits(model32, tokens, mask), hf_logits(hf32, tokens, mask), mask)
        <= TOL
    )
    model16 = from_pretrained(tmp_path / "hf", dtype="bfloat16")
    params = nnx.state(model16, nnx.Param)
    assert {v.get_value().dtype for _, v in nnx.to_flat_state(params)} == {
        np.dtype(ml_dtypes.bfloat16)
    }
    out16 = np.asarray(logits(model16, tokens, mask))
    assert np.isfinite(out16).all()
    assert max_diff_at_real_tokens(out16, logits(model32, tokens, mask), mask) < 0.5
    save_pretrained(model16, tmp_path / "ours")
    stored = load_file(str(tmp_path / "ours" / "model.safetensors"))
    assert stored["model.embed_tokens.weight"].dtype == ml_dtypes.bfloat16
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    assert reloaded.dtype == torch.bfloat16
    ref = hf.state_dict()["model.layers.0.self_attn.q_proj.weight"].float().numpy()
    got = reloaded.state_dict()["model.layers.0.self_attn.q_proj.weight"].float().numpy()
    np.testing.assert_array_equal(got, ref)  # bf16 → bf16 round trip is exact


@pytest.fixture
def good_checkpoint(hf_checkpoints, tmp_path):
    directory, _ = hf_checkpoints["llama_gqa"]
    target = tmp_path / "ckpt"
    shutil.copytree(directory, target)
    return target


def _edit_tensors(directory, edit):
    tensors = load_file(str(directory / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def test_missing_unexpected_and_misshapen_tensors_are_named_in_one_error(good_checkpoint):
    def edit(tensors):
        del tensors["model.layers.1.mlp.up_proj.weight"]
        tensors["model.layers.0.extra.weight"] = np.zeros(3, np.float32)
        tensors["model.norm.weight"] = np.ones(65, np.float32)

    _edit_tensors(good_checkpoint, edit)
    with pytest.raises(ValueError) as err:
        from_pretrained(good_checkpoint)
    message = str(err.value)
    assert "missing tensors ['model.layers.1.mlp.up_proj.weight']" in message
    assert "unexpected tensors ['model.layers.0.extra.weight']" in message
    assert "model.norm.weight: checkpoint (65,) vs expected (64,)" in message


def test_config_shape_disagreement_names_tensors(good_checkpoint):
    config = json.loads((good_checkpoint / "config.json").read_text())
    config["intermediate_size"] = 80
    (good_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"mlp\.down_proj\.weight: checkpoint \(64, 96\) vs expected \(64, 80\)"
    ):
        from_pretrained(good_checkpoint)


def test_unsupported_model_type_and_missing_files(good_checkpoint, tmp_path):
    config = json.loads((good_checkpoint / "config.json").read_text())
    (good_checkpoint / "config.json").write_text(json.dumps(dict(config, model_type="mistral")))
    with pytest.raises(ValueError, match="unsupported model_type='mistral'"):
        from_pretrained(good_checkpoint)
    (good_checkpoint / "config.json").write_text(json.dumps(config))
    (good_checkpoint / "model.safetensors").rename(good_checkpoint / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only safetensors"):
        from_pretrained(good_checkpoint)
    with pytest.raises(ValueError, match=r"config\.json not found"):
        from_pretrained(tmp_path / "nowhere")


def test_index_pointing_at_missing_shard_is_rejected(good_checkpoint):
    tensors = load_file(str(good_checkpoint / "model.safetensors"))
    (good_checkpoint / "model.safetensors").unlink()
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[:5]}, str(good_checkpoint / "a.safetensors"))
    weight_map = {n: ("a.safetensors" if i < 5 else "b.safetensors") for i, n in enumerate(names)}
    (good_checkpoint / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": weight_map})
    )
    with pytest.raises(ValueError, match=r"lists missing files: \['b.safetensors'\]"):
        from_pretrained(good_checkpoint)
