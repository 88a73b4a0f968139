"""Strict interchange-intervention training (SIIT; Gupta et al. 2024, InterpBench) of a Hugging Face model to carry
the circuit of a compiled program.

The high-level model H is a compiled Tracr program (compiled causal); the low-level model L is a small GPT-2 or
Llama at random init, with as many layers as H and more heads, each of H's heads and MLPs aligned to one of L's
(`Spec.head_of`). Every step draws base inputs b and sources s of the same length and trains L, by cross-entropy
on L's next-token logits at every position after BOS against H's output there, on one batched run
(`runner.mixed_run`) of six kinds of row:

1. output matching: L(b) against H(b);
2. interchange on an aligned node: L(b, node n's output from s) against H(b, n from s), n drawn per row;
3. strictness: L(b, an unaligned head's output from s) against H(b): what is not aligned must change nothing;
4. interchange on a circuit edge: L(b, edge e from s) against H(b, e from s), e drawn from H's interchange circuit;
5. and 6. the circuits alone: L with every edge outside the mapped circuit ablated (from s under interchange,
   zeroed under zero ablation), each other edge kept back with a probability drawn per row, against H(b), plus the
   KL of those runs to L(b), so that the circuit's distribution, not only its decision, is the model's.

Rows 4-6 hold L's edges to H's, which node interventions alone do not: a dense model can carry information on
edges its aligned nodes do not need. Whether the circuit holds on the weights is then checked, not assumed
(`epverify.trained.verify`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tracr.data import clean_inputs
from ..tracr.model import CompiledModel
from .card import NONE_TOKEN, Vocabulary, map_edges, reader_map, token_name, writer_map
from .runner import mixed_run, out_edges


@dataclass(frozen=True)
class Spec:
    """One trained model to build: which program, which family and shape, how long to train."""

    name: str
    program: str  # a causal program of the compiled zoo
    family: str  # "gpt2" (a position embedding writer, for programs that read indices) or "llama"
    n_heads: int
    n_kv_heads: int
    d_model: int = 32
    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3  # 3e-3 left detect_abc's rare positive positions (2%) unlearned under the zero circuit
    seed: int = 0

    def head_of(self, compiled: CompiledModel) -> list[int]:
        """L's head for each of H's heads in a layer: spread out, so that under grouped key/value heads each
        aligned head has a group of its own."""
        stride = self.n_heads // compiled.n_heads
        if stride < 1 or self.n_kv_heads < compiled.n_heads:
            raise ValueError(f"{self.name}: {self.n_heads} heads and {self.n_kv_heads} KV heads cannot hold the"
                             f" program's {compiled.n_heads} heads in distinct KV groups")
        return [h * stride for h in range(compiled.n_heads)]


def vocabulary_words(compiled: CompiledModel) -> list[str]:
    values = [*compiled.vocab, *(compiled.output_values or [])]
    return sorted({token_name(v) for v in values} | {NONE_TOKEN})


def build_model(spec: Spec, compiled: CompiledModel, tokenizer):
    """L at random init (seeded), with no dropout and an unembedding of its own: where the program's outputs are
    tokens it also reads (sum_neighbours: 0-3 in, 0-3 out), tied embeddings would pull every prediction towards
    the token just read, and that model did not learn in 3,000 steps."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if spec.family == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=compiled.max_seq_len + 1, n_embd=spec.d_model,
                            n_layer=compiled.n_layers, n_head=spec.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, tie_word_embeddings=False, **ids)
        return GPT2LMHeadModel(config)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.d_model, intermediate_size=4 * spec.d_model,
                         num_hidden_layers=compiled.n_layers, num_attention_heads=spec.n_heads,
                         num_key_value_heads=spec.n_kv_heads, max_position_embeddings=compiled.max_seq_len + 1,
                         **ids)
    return LlamaForCausalLM(config)


def vocabulary_of(compiled: CompiledModel, tokenizer) -> Vocabulary:
    token = tokenizer.convert_tokens_to_ids
    return Vocabulary({v: token(token_name(v)) for v in compiled.vocab},
                      [token(token_name(v)) for v in compiled.output_values] + [token(NONE_TOKEN)],
                      tokenizer.bos_token_id, tokenizer.pad_token_id)


class Alignment:
    """H's writers, readers and edges as L's, and the edge masks the training rows use."""

    def __init__(self, spec: Spec, compiled: CompiledModel, low, high):
        self.high, self.low = high, low
        head_of = spec.head_of(compiled)
        self.writers = writer_map(compiled, spec.family, head_of)
        self.readers = reader_map(compiled, head_of, spec.n_heads // spec.n_kv_heads)
        self.components = {**self.writers, **self.readers}
        aligned = set(self.writers.values())
        self.unaligned = [w for w in low.graph.writers if w not in aligned]
        self.nodes = [w for w in high.graph.writers if w in self.writers]  # H's writers that L has
        self.truth = {a: map_edges(compiled.ground_truth[a]["edges"], self.components) for a in ("interchange",
                                                                                                 "zero")}
        self.high_truth = [tuple(e) for e in compiled.ground_truth["interchange"]["edges"]]

    def circuit_mask(self, ablation: str) -> torch.Tensor:
        mask = torch.zeros(self.low.graph.num_edges)
        if self.truth[ablation]:
            mask[self.low.graph.index_of(self.truth[ablation])] = 1.0
        return mask


def _ones_without(graph, rows: int, drop: list[list[int]]) -> torch.Tensor:
    """(rows, E) all ones but for the edges listed per row."""
    keep = torch.ones(rows, graph.num_edges)
    for row, edges in enumerate(drop):
        keep[row, edges] = 0.0
    return keep


class Trainer:
    """The training state and one step of it (module docstring)."""

    def __init__(self, spec: Spec, compiled: CompiledModel, model, tokenizer):
        from ..adapters import wrap

        self.spec, self.compiled = spec, compiled
        self.high = wrap(compiled).adapter
        self.low = wrap(model).adapter
        model.requires_grad_(True)  # the adapter froze it; here the model is what trains
        model.train(False)
        self.model, self.align = model, Alignment(spec, compiled, self.low, self.high)
        self.vocab = vocabulary_of(compiled, tokenizer)
        inputs = clean_inputs(compiled.dataset, compiled)
        self.ids_high, self.mask = compiled.encode(inputs)
        self.ids_low, _ = self.vocab.encode(compiled, inputs)
        self.lengths = self.mask.sum(1) - 1
        self.by_length = {int(n): torch.nonzero(self.lengths == n).flatten() for n in self.lengths.unique()}
        with torch.no_grad():
            _, logits = mixed_run(self.high, self.ids_high, self.mask, torch.ones(self.high.graph.num_edges), None)
        self.high_decisions = self.high.decide(logits)  # (N, T)
        self.gen = torch.Generator().manual_seed(spec.seed)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step
                                                                                            / spec.steps)))

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Base rows and, for each, a source row of the same length."""
        base = torch.randint(len(self.ids_low), (self.spec.batch,), generator=self.gen)
        source = torch.stack([group[torch.randint(len(group), (1,), generator=self.gen)][0]
                              for group in (self.by_length[int(self.lengths[b])] for b in base)])
        return base, source

    def targets(self, base, source) -> tuple[torch.Tensor, torch.Tensor, list, list]:
        """H's decisions under a node and an edge interchange drawn per row, and what was drawn."""
        high, graph = self.high, self.high.graph
        nodes = [self.align.nodes[i] for i in torch.randint(len(self.align.nodes), (len(base),), generator=self.gen)]
        edges = [self.align.high_truth[i] for i in
                 torch.randint(len(self.align.high_truth), (len(base),), generator=self.gen)] \
            if self.align.high_truth else [None] * len(base)
        keep = torch.cat([_ones_without(graph, len(base), [out_edges(graph, n) for n in nodes]),
                          _ones_without(graph, len(base), [[graph.edge_index[e]] if e else [] for e in edges])])
        ids, mask = self.ids_high[base].repeat(2, 1), self.mask[base].repeat(2, 1)
        with torch.no_grad():
            sources, _ = mixed_run(high, self.ids_high[source], self.mask[source],
                                   torch.ones(graph.num_edges), None)
            _, logits = mixed_run(high, ids, mask, keep, sources.repeat(1, 2, 1, 1))
        decided = high.decide(logits)
        return decided[: len(base)], decided[len(base) :], nodes, edges

    def step(self) -> float:
        base, source = self.pairs()
        node_targets, edge_targets, nodes, edges = self.targets(base, source)
        keep, targets = self._rows(base, nodes, edges, node_targets, edge_targets)
        b = len(base)
        ids, mask = self.ids_low[base].repeat(6, 1), self.mask[base].repeat(6, 1)
        sources, _ = mixed_run(self.low, self.ids_low[source], self.mask[source],
                               torch.ones(self.low.graph.num_edges), None)
        ablated = torch.cat([sources.repeat(1, 5, 1, 1), torch.zeros_like(sources)], dim=1)
        _, logits = mixed_run(self.low, ids, mask, keep, ablated)
        where = mask.bool().clone()
        where[:, 0] = False
        loss = F.cross_entropy(logits[where], self.vocab.target_tokens(targets)[where])
        full = torch.log_softmax(logits[:b].detach(), -1)
        for rows in (slice(4 * b, 5 * b), slice(5 * b, 6 * b)):  # the circuits: their distribution is the model's
            circuit = torch.log_softmax(logits[rows], -1)
            at = where[rows]
            loss = loss + (full.exp() * (full - circuit)).sum(-1)[at].mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss.item()

    def _rows(self, base, nodes, edges, node_targets, edge_targets):
        """The six kinds of row's edge masks (6B, E) and H targets (6B, T)."""
        graph, align, b = self.low.graph, self.align, len(base)
        node_drop = [out_edges(graph, align.writers[n]) for n in nodes]
        strict = [align.unaligned[i] for i in torch.randint(len(align.unaligned), (b,), generator=self.gen)] \
            if align.unaligned else []
        strict_drop = [out_edges(graph, u) for u in strict] if strict else [[] for _ in range(b)]
        edge_drop = [[graph.edge_index[(align.writers[e[0]], align.readers[e[1]])]] if e else [] for e in edges]
        circuits = []
        for ablation in ("interchange", "zero"):
            extra = torch.rand(b, graph.num_edges, generator=self.gen) < torch.rand(b, 1, generator=self.gen)
            circuits.append(torch.maximum(align.circuit_mask(ablation).expand(b, -1), extra.float()))
        keep = torch.cat([torch.ones(b, graph.num_edges), _ones_without(graph, b, node_drop),
                          _ones_without(graph, b, strict_drop), _ones_without(graph, b, edge_drop), *circuits])
        full = self.high_decisions[base]
        return keep, torch.cat([full, node_targets, full, edge_targets, full, full])


def train(spec: Spec, compiled: CompiledModel, tokenizer, progress=None):
    """Build and train L for `spec`; returns (model, trainer, training record)."""
    model = build_model(spec, compiled, tokenizer)
    trainer = Trainer(spec, compiled, model, tokenizer)
    start, losses = time.perf_counter(), []
    for step in range(spec.steps):
        losses.append(trainer.step())
        if progress is not None and (step + 1) % 100 == 0:
            progress(step + 1, sum(losses[-100:]) / 100)
    model.requires_grad_(False)
    record = {"seed": spec.seed, "steps": spec.steps, "batch": spec.batch, "lr": spec.lr,
              "seconds": round(time.perf_counter() - start, 1), "final_loss": sum(losses[-50:]) / 50}
    return model, trainer, record
