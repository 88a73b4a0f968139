"""The CodeLlama loading path from a local directory: config, tokenizer files and sharded safetensors, as
CodeLlama ships them, on a tiny random Llama saved in that layout."""

import json

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from epverify import wrap_pretrained
from epverify.cli import main
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer


def _save_codellama_layout(path):
    words = get_task("boolean-expressions").vocabulary()
    tokenizer = build_word_tokenizer(words, add_bos=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, rope_theta=1_000_000.0,
                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, torch_dtype="bfloat16")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, max_shard_size="40KB")  # several shards + model.safetensors.index.json
    PreTrainedTokenizerFast.save_pretrained(tokenizer, path)
    return model


def test_sharded_bf16_checkpoint_loads_and_matches(tmp_path):
    model = _save_codellama_layout(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) >= 2
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2

    assert wrap_pretrained(tmp_path, device="cpu").adapter.dtype == torch.float32  # auto on the CPU: float32
    masked = wrap_pretrained(tmp_path, dtype="bfloat16", device="cpu")  # the checkpoint's own dtype, asked for
    assert masked.adapter.dtype == torch.bfloat16
    reference = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits.float()
    got = masked.run(ids).float()
    torch.testing.assert_close(got, expected, atol=3e-2, rtol=3e-2)  # bf16 arithmetic, two orderings


def test_prune_runs_on_the_codellama_layout(tmp_path):
    _save_codellama_layout(tmp_path / "ckpt")
    code = main(["prune", "--model", str(tmp_path / "ckpt"), "--task", "boolean-expressions", "--steps", "3",
                 "--batch-size", "4", "--examples", "8", "--out", str(tmp_path / "run")])
    assert code == 0
    assert (tmp_path / "run" / "circuit.json").is_file()
