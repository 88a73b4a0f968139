"""Train the two-layer attention-only induction model and write trained_models/induction/.

    python scripts/train_induction.py            # seeded; about a minute on 2 CPU cores
    python scripts/train_induction.py --out /tmp/induction --steps 500

The model is a LlamaForCausalLM (2 layers, 2 heads, d_model 64, rotary positions) whose MLPs are zero and
frozen (see `epverify/induction.py`). Training data is `epverify.trained.induction.sequences` with seed 0; the loss
is the cross-entropy at the second copy of x_1..x_{n-1}. After training the script measures, on held-out
data (seed 1):

- the loss and accuracy at those positions;
- every head's previous-token score (mean attention from a position to the one before it) and induction score
  (mean attention from the second copy of x_i to the first copy of x_{i+1});
- the previous-token head (layer 0, highest previous-token score) and the induction head (layer 1, highest
  induction score);
- with epverify's engine under interchange ablation: the accuracy with every edge, with the key edge
  (previous-token head -> induction head's key) removed, with no edge, and a small sufficient reference
  circuit (greedy removal, see `engine_checks`) with its accuracy with and without the key edge.

and writes them to induction.json beside the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from epverify.adapters import wrap  # noqa: E402
from epverify.core import engine  # noqa: E402
from epverify.trained.induction import META, ROOT, sequences, targets  # noqa: E402

RECIPE = {"vocab_size": 48, "min_len": 4, "max_len": 12}
REFERENCE_ACCURACY = 0.97


def build(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    v = RECIPE["vocab_size"]
    config = LlamaConfig(vocab_size=v + 2, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=4,
                         max_position_embeddings=1 + 2 * RECIPE["max_len"],
                         bos_token_id=v, eos_token_id=v, pad_token_id=v + 1, tie_word_embeddings=False,
                         attn_implementation="eager")
    model = LlamaForCausalLM(config)
    for layer in model.model.layers:  # attention-only: every MLP writes exactly 0 and never trains
        for p in layer.mlp.parameters():
            p.data.zero_()
            p.requires_grad_(False)
    return model


def batch(n: int, seed: int) -> dict:
    v = RECIPE["vocab_size"]
    return sequences(n, v, RECIPE["min_len"], RECIPE["max_len"], seed, bos_id=v, pad_id=v + 1)


def loss_and_accuracy(model, b) -> tuple[torch.Tensor, float]:
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    want = targets(b["input_ids"], b["loss_mask"])
    rows = logits[b["loss_mask"]]
    return F.cross_entropy(rows, want), float((rows.argmax(-1) == want).float().mean())


@torch.no_grad()
def head_scores(model, b) -> dict:
    """Previous-token and induction scores of every head, from attention patterns on held-out data."""
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_attentions=True)
    scores = {}
    for layer, att in enumerate(out.attentions):  # (B, H, T, T)
        for head in range(att.shape[1]):
            prev, induction, n_prev, n_ind = 0.0, 0.0, 0, 0
            for row, n in enumerate(b["lengths"].tolist()):
                a = att[row, head]
                for pos in range(1, 2 * n + 1):
                    prev += float(a[pos, pos - 1])
                    n_prev += 1
                for i in range(1, n):  # second copy of x_i is at n + i; the first x_{i+1} at i + 1
                    induction += float(a[n + i, i + 1])
                    n_ind += 1
            scores[f"a{layer}.h{head}"] = {"previous_token": prev / n_prev, "induction": induction / n_ind}
    return scores


@torch.no_grad()
def engine_checks(model, b, prev_head: str, induction_head: str) -> dict:
    """Interchange-ablation accuracies with epverify's engine, and a small sufficient reference circuit.

    The reference circuit is found greedily: starting from every edge, each edge in reverse edge order is
    removed when the circuit without it keeps the held-out accuracy at or above REFERENCE_ACCURACY. It is one
    sufficient circuit (the order decides between equivalent ones), not a unique ground truth.
    """
    masked = wrap(model)
    graph = masked.graph
    want = targets(b["input_ids"], b["loss_mask"])
    ablated = engine.ablated_record(masked.adapter, "interchange", b["input_ids"], b["attention_mask"],
                                    b["corrupted_ids"])

    def accuracy(edges) -> float:
        mask = torch.zeros(graph.num_edges)
        if edges:
            mask[graph.index_of(edges)] = 1
        logits = engine.masked_run(masked.adapter, b["input_ids"], ablated, mask, None, b["attention_mask"])
        return float((logits[b["loss_mask"]].argmax(-1) == want).float().mean())

    every = list(graph.edges)
    kept = list(every)
    for edge in reversed(every):
        trial = [e for e in kept if e != edge]
        if accuracy(trial) >= REFERENCE_ACCURACY:
            kept = trial
    key = (prev_head, f"{induction_head}.k")
    return {
        "accuracy": {"all_edges": accuracy(every),
                     "without_key_edge": accuracy([e for e in every if e != key]),
                     "reference_circuit": accuracy(kept),
                     "reference_without_key_edge": accuracy([e for e in kept if e != key]),
                     "no_edges": accuracy([])},
        "reference_circuit": [list(e) for e in kept],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = build(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    train = batch(args.steps * args.batch, seed=0)
    model.train()
    for step in range(args.steps):
        sl = slice(step * args.batch, (step + 1) * args.batch)
        b = {k: v[sl] for k, v in train.items()}
        loss, acc = loss_and_accuracy(model, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1:5d}  loss {loss.item():.4f}  acc {acc:.3f}", flush=True)
    model.eval()

    held_out = batch(512, seed=1)
    with torch.no_grad():
        loss, acc = loss_and_accuracy(model, held_out)
    scores = head_scores(model, held_out)
    prev_head = max((h for h in scores if h.startswith("a0.")), key=lambda h: scores[h]["previous_token"])
    induction_head = max((h for h in scores if h.startswith("a1.")), key=lambda h: scores[h]["induction"])
    checks = engine_checks(model, held_out, prev_head, induction_head)
    seconds = time.perf_counter() - start

    out = Path(args.out)
    model.save_pretrained(out)
    v = RECIPE["vocab_size"]
    meta = {
        "format": "epverify.induction/1",
        "description": "2-layer attention-only Llama (MLPs zero and frozen) trained on [BOS, x1..xn, x1..xn]",
        "previous_token_head": prev_head,
        "induction_heads": [h for h in scores if h.startswith("a1.") and scores[h]["induction"] > 0.5],
        "induction_head": induction_head,
        "key_edge": [prev_head, f"{induction_head}.k"],
        "reference_circuit": checks["reference_circuit"],
        "reference_rule": f"greedy removal in reverse edge order keeping held-out interchange accuracy"
                          f" >= {REFERENCE_ACCURACY}",
        "head_scores": scores,
        "held_out": {"examples": 512, "seed": 1, "loss": float(loss), "accuracy": acc,
                     "interchange_accuracy": checks["accuracy"]},
        "data": {**RECIPE, "bos_id": v, "pad_id": v + 1, "train_seed": 0},
        "training": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                     "seconds": round(seconds, 1), "command": "python scripts/train_induction.py"},
    }
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    shown = ("previous_token_head", "induction_head", "reference_circuit", "head_scores", "held_out")
    print(json.dumps({k: meta[k] for k in shown}, indent=1))
    print(f"wrote {out} in {seconds:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
