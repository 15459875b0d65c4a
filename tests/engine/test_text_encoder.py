"""umT5 encoder: checkpoint layout vs the upstream schema, masking, bucket math, strict .pth loading, and
equivalence with transformers' independent UMT5EncoderModel."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ovi_engine.text_encoder import (
    TEXT_ENCODER_PRESETS,
    ByteTokenizer,
    TextEncoder,
    TokenizerError,
    build_text_encoder,
    clean_prompt,
    load_text_encoder,
    load_tokenizer,
    relative_position_bucket,
    warm_up_kernels,
)
from ovi_engine.weights import CheckpointError, load_into, read_state

SCHEMA = json.loads((Path(__file__).parents[1] / "reference" / "umt5_xxl_encoder.schema.json").read_text())
TINY = TEXT_ENCODER_PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny32():
    return build_text_encoder("tiny", device="cpu", dtype=torch.float32, seed=3)


def test_full_layout_equals_upstream_schema():
    model = build_text_encoder("full")  # meta: no memory
    state = model.state_dict()
    expected = {name: tuple(shape) for name, shape, _ in SCHEMA["tensors"]}
    assert len(state) == SCHEMA["num_tensors"] == len(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(p.numel() for p in model.parameters()) == SCHEMA["params"]
    assert all(v.dtype == torch.bfloat16 and v.is_meta for v in state.values())


def test_full_config_matches_schema_config():
    full, cfg = TEXT_ENCODER_PRESETS["full"], SCHEMA["config"]
    assert (full.vocab_size, full.dim, full.dim_attn, full.dim_ffn, full.num_heads) == (
        cfg["vocab_size"],
        cfg["dim"],
        cfg["dim_attn"],
        cfg["dim_ffn"],
        cfg["num_heads"],
    )
    assert (full.num_layers, full.num_buckets, full.text_len) == (
        cfg["encoder_layers"],
        cfg["num_buckets"],
        cfg["text_len"],
    )


def _bucket_by_formula(rel: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """T5's bidirectional bucket, written from the paper's description with plain Python floats."""
    half = num_buckets // 2
    offset = half if rel > 0 else 0
    n = abs(rel)
    max_exact = half // 2
    if n < max_exact:
        return offset + n
    log_bucket = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    )
    return offset + min(log_bucket, half - 1)


def test_relative_position_bucket_matches_formula():
    rel = torch.arange(-700, 701)
    got = relative_position_bucket(rel, 32, 128).tolist()
    assert got == [_bucket_by_formula(r) for r in rel.tolist()]
    # rel 0 takes bucket 0, so bucket 16 ("after, distance 0") is never used; all others are
    assert set(got) == set(range(32)) - {16}
    assert relative_position_bucket(
        torch.tensor([0, -1, 1, -7, -8, 8, -127, -128, 5000]), 32, 128
    ).tolist() == [0, 1, 17, 7, 8, 24, 15, 15, 31]


def test_tiny_encode_shapes_and_zero_padding(tiny32):
    encoder = TextEncoder(tiny32, ByteTokenizer(TINY.vocab_size), text_len=TINY.text_len)
    prompts = ["a cat plays piano", "", "x" * 2000]
    emb, lengths = encoder.encode(prompts)
    assert emb.shape == (3, TINY.text_len, TINY.dim) and emb.dtype == torch.float32
    assert lengths.tolist() == [len(prompts[0]) + 1, 1, TINY.text_len]  # bytes + EOS, truncated at text_len
    for row, n in enumerate(lengths.tolist()):
        assert torch.all(emb[row, n:] == 0)
        assert torch.all(emb[row, :n].norm(dim=-1) > 0)
    assert torch.isfinite(emb).all()


def test_padding_does_not_change_real_tokens(tiny32):
    n, text_len = 9, 40
    ids, mask = ByteTokenizer(TINY.vocab_size).tokenize(["hello bob"], text_len)
    assert mask.sum() == n + 1
    alone = tiny32(ids[:, : n + 1], torch.ones(1, n + 1, dtype=torch.long))
    padded = tiny32(ids, mask)
    # other token ids in the padded slots must not matter either
    garbage = ids.clone()
    garbage[:, n + 1 :] = torch.randint(3, TINY.vocab_size, (1, text_len - n - 1))
    noisy = tiny32(garbage, mask)
    torch.testing.assert_close(padded[:, : n + 1], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(noisy[:, : n + 1], alone, rtol=1e-5, atol=1e-5)


def test_batch_neighbours_do_not_leak(tiny32):
    encoder = TextEncoder(tiny32, ByteTokenizer(TINY.vocab_size), text_len=64)
    single, _ = encoder.encode(["short one"])
    batch, _ = encoder.encode(["a much longer neighbouring prompt here", "short one"])
    torch.testing.assert_close(batch[1], single[0], rtol=1e-5, atol=1e-5)


def test_synthetic_weights_deterministic_and_finite_in_bf16_at_full_depth():
    deep = replace(TINY, num_layers=24)  # full depth, tiny width: checks the synthetic scales stay finite
    a = build_text_encoder(deep, device="cpu", dtype=torch.bfloat16, seed=7)
    b = build_text_encoder(deep, device="cpu", dtype=torch.bfloat16, seed=7)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    emb, _ = TextEncoder(a, ByteTokenizer(deep.vocab_size), text_len=128).encode(["finite please", "x"])
    assert torch.isfinite(emb).all()
    assert 0.5 < emb[0, :14].float().pow(2).mean().sqrt() < 2  # final RMSNorm with unit scale


def test_build_on_meta_or_without_seed_stays_empty():
    assert all(t.is_meta for t in build_text_encoder("tiny", device="cpu", seed=None).state_dict().values())
    with pytest.raises(ValueError, match="unknown text encoder preset"):
        build_text_encoder("huge")


def test_tiny_pth_loads_strictly(tmp_path, tiny32):
    path = tmp_path / "tiny_t5.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny32.state_dict().items()}, path)
    loaded = load_text_encoder(path, "tiny", device="cpu", dtype=torch.float32)
    for k, v in tiny32.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.to(torch.bfloat16).float())
    # the generic path is the same thing
    meta = build_text_encoder("tiny", dtype=torch.float32)
    load_into(meta, read_state(path), device="cpu", dtype=torch.float32, source=str(path))
    ids, mask = ByteTokenizer(TINY.vocab_size).tokenize(["same"], 16)
    torch.testing.assert_close(meta(ids, mask), loaded(ids, mask))


def test_bad_pth_names_every_problem(tmp_path, tiny32):
    state = dict(tiny32.state_dict())
    del state["blocks.1.attn.k.weight"]
    state["blocks.0.attn.extra.weight"] = torch.zeros(2, 2)
    state["blocks.0.pos_embedding.embedding.weight"] = torch.zeros(16, TINY.num_heads)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_text_encoder(path, "tiny", device="cpu", dtype=torch.float32)
    message = str(err.value)
    for name in (
        "blocks.1.attn.k.weight",
        "blocks.0.attn.extra.weight",
        "blocks.0.pos_embedding.embedding.weight",
    ):
        assert name in message
    assert "bad.pth" in message


def test_tokenizers(tmp_path):
    ids, mask = ByteTokenizer(300).tokenize(["ab", "é"], 6)
    assert ids.tolist() == [[3 + 97, 3 + 98, 1, 0, 0, 0], [3 + 0xC3, 3 + 0xA9, 1, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0]] * 2
    small, _ = ByteTokenizer(10).tokenize(["\xff"], 4)
    assert int(small.max()) < 10
    assert clean_prompt("  a&amp;amp;b \n\t c ") == "a&b c"
    with pytest.raises(TokenizerError, match="no such tokenizer directory"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="tokenizer has"):
        TextEncoder(build_text_encoder("tiny"), ByteTokenizer(TINY.vocab_size + 1))


def _to_transformers_keys(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    mapped = {
        "shared.weight": state["token_embedding.weight"],
        "encoder.embed_tokens.weight": state["token_embedding.weight"],
        "encoder.final_layer_norm.weight": state["norm.weight"],
    }
    for i in range(num_layers):
        ours, hf = f"blocks.{i}.", f"encoder.block.{i}.layer."
        mapped[hf + "0.layer_norm.weight"] = state[ours + "norm1.weight"]
        for p in "qkvo":
            mapped[hf + f"0.SelfAttention.{p}.weight"] = state[ours + f"attn.{p}.weight"]
        mapped[hf + "0.SelfAttention.relative_attention_bias.weight"] = state[
            ours + "pos_embedding.embedding.weight"
        ]
        mapped[hf + "1.layer_norm.weight"] = state[ours + "norm2.weight"]
        mapped[hf + "1.DenseReluDense.wi_0.weight"] = state[ours + "ffn.gate.0.weight"]  # GELU branch
        mapped[hf + "1.DenseReluDense.wi_1.weight"] = state[ours + "ffn.fc1.weight"]  # linear branch
        mapped[hf + "1.DenseReluDense.wo.weight"] = state[ours + "ffn.fc2.weight"]
    return mapped


def test_matches_transformers_umt5(tiny32):
    transformers = pytest.importorskip("transformers")
    c = TINY
    hf_config = transformers.UMT5Config(
        vocab_size=c.vocab_size,
        d_model=c.dim,
        d_kv=c.head_dim,
        d_ff=c.dim_ffn,
        num_layers=c.num_layers,
        num_heads=c.num_heads,
        relative_attention_num_buckets=c.num_buckets,
        relative_attention_max_distance=c.max_distance,
        dropout_rate=0.0,
        layer_norm_epsilon=c.eps,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    hf = transformers.UMT5EncoderModel(hf_config).eval()
    hf.load_state_dict(_to_transformers_keys(tiny32.state_dict(), c.num_layers), strict=True)
    ids, mask = ByteTokenizer(c.vocab_size).tokenize(["the quick brown fox", "jumps"], 160)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = tiny32(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-4)


def test_load_tokenizer_pads_and_truncates_like_wan(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.vocab_size == 6
    ids, mask = tokenizer.tokenize(["a b", "c c c c c c"], 5)
    assert ids.tolist() == [[3, 4, 1, 0, 0], [5, 5, 5, 5, 1]]  # right padding; truncation keeps the EOS
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def _shapes_called(monkeypatch, run) -> set[tuple]:
    """The (M, K, N) of every matmul and the q, mask shapes of every attention that run() makes."""
    functional = torch.nn.functional
    linear, attention, seen = functional.linear, functional.scaled_dot_product_attention, set()

    def recorded_linear(x, weight, bias=None):
        seen.add(("linear", x.numel() // x.shape[-1], *weight.shape[::-1]))
        return linear(x, weight, bias)

    def recorded_attention(q, k, v, attn_mask=None, **kwargs):
        seen.add(("attention", tuple(q.shape), tuple(attn_mask.shape), q.dtype))
        return attention(q, k, v, attn_mask=attn_mask, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(functional, "linear", recorded_linear)
        patch.setattr(functional, "scaled_dot_product_attention", recorded_attention)
        run()
    return seen


def test_warm_up_runs_the_shapes_of_a_prompt_and_its_negative(monkeypatch):
    """warm_up_kernels makes the same matmul and attention calls as encoding two prompts, and no other; an
    attention width unlike the model's keeps the q/k/v and o projections apart."""
    config = replace(TINY, dim_attn=48, num_heads=3)
    model = build_text_encoder(config, device="cpu", dtype=torch.float32, seed=0)
    encoder = TextEncoder(model, ByteTokenizer(config.vocab_size), text_len=config.text_len)
    encoding = _shapes_called(monkeypatch, lambda: encoder.encode(["a prompt", "its negative"]))
    warm = _shapes_called(monkeypatch, lambda: warm_up_kernels(config, torch.device("cpu"), torch.float32))
    assert warm == encoding and len(warm) == 5  # q/k/v, o, gate/fc1, fc2, the attention
