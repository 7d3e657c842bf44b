"""The fast training paths compute what the plain eager path computes (issue 14).

- `projected_cross_entropy`, the loss without the (N, V) logits: the same loss and gradients as
  `F.cross_entropy(label_smoothing=)` on the full logits (fp32: loss within 1e-5 relative, gradients within 1e-4).
- `torch.compile(fullgraph=True)` of the training forward with its loss: no graph break (for the sdpa and the eager
  kernel), and the same loss and gradients as eager.
- The data pipeline: DataLoader workers give the same batches in the same order; the sampler's update token counts
  are what the batches hold; the collator refuses ids outside the vocabulary.
- The step reads numbers back from the device only every --log-every updates.
"""

import json

import pytest
import torch

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from modeling_vanilla.data.batching import TokenBatchSampler, TranslationCollator
from modeling_vanilla.data.corpus import TranslationDataError
from modeling_vanilla.modeling_vanilla import projected_cross_entropy
from tests.training.test_training import toy_data, train_args  # noqa: F401 (toy_data is a fixture)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def labels_with_padding(batch: int, length: int, vocab: int) -> torch.Tensor:
    torch.manual_seed(3)
    labels = torch.randint(0, vocab, (batch, length))
    labels[0, length // 2 :] = -100  # target padding, ignored by the loss
    labels[-1, 1:] = -100
    return labels


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("block_elements", [1, 97 * 5, 1 << 23])  # one row per block, a ragged last block, one block
def test_projected_cross_entropy_equals_cross_entropy_of_the_logits(label_smoothing, block_elements):
    torch.manual_seed(0)
    hidden = torch.randn(4, 9, 16, requires_grad=True)
    weight = torch.randn(97, 16, requires_grad=True)
    labels = labels_with_padding(4, 9, 97)

    reference = torch.nn.functional.cross_entropy(
        (hidden @ weight.T).flatten(0, 1), labels.flatten(), reduction="sum", label_smoothing=label_smoothing)
    ref_grads = torch.autograd.grad(3 * reference, (hidden, weight))
    loss = projected_cross_entropy(hidden, weight, labels, label_smoothing, block_elements=block_elements)
    grads = torch.autograd.grad(3 * loss, (hidden, weight))  # the upstream gradient is applied

    assert abs(loss.item() - reference.item()) <= 1e-5 * abs(reference.item())
    for grad, ref in zip(grads, ref_grads):
        assert grad.dtype == ref.dtype == torch.float32
        assert relative_error(grad, ref) <= 1e-4
    assert grads[0][0, 9 // 2 :].abs().max() == 0  # ignored positions get no gradient
    with torch.no_grad():  # evaluation: the same loss, and no gradient is computed
        assert projected_cross_entropy(hidden, weight, labels, label_smoothing).item() == pytest.approx(
            loss.item(), rel=1e-6)


def test_projected_cross_entropy_with_every_label_ignored_is_zero_with_zero_gradients():
    hidden = torch.randn(2, 3, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    loss = projected_cross_entropy(hidden, weight, torch.full((2, 3), -100), 0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert hidden.grad.abs().max() == 0 and weight.grad.abs().max() == 0


def test_projected_cross_entropy_under_bf16_autocast_matches_the_plain_autocast_path():
    torch.manual_seed(0)
    hidden = torch.randn(64, 32, requires_grad=True)
    weight = torch.randn(500, 32, requires_grad=True)
    labels = labels_with_padding(8, 8, 500).flatten()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = hidden @ weight.T  # bf16, as the plain path's projection under autocast
        reference = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum", label_smoothing=0.1)
        loss = projected_cross_entropy(hidden, weight, labels, 0.1, block_elements=500 * 16)
    ref_grads = torch.autograd.grad(reference, (hidden, weight))
    grads = torch.autograd.grad(loss, (hidden, weight))
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference.item()) <= 1e-3 * abs(reference.item())
    for grad, ref in zip(grads, ref_grads):
        assert grad.dtype == torch.float32  # the parameters' dtype, as autocast's gradients
        assert relative_error(grad, ref) <= 2e-2  # bf16 products; the two paths round at different places


def model_and_batch(attn_implementation: str = "sdpa", dropout: float = 0.1):
    torch.manual_seed(0)
    config = VanillaTransformerConfig.tiny(vocab_size=61, attn_implementation=attn_implementation, dropout=dropout)
    model = VanillaTransformerForConditionalGeneration(config).train()
    input_ids = torch.randint(4, 61, (3, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 5:] = 0  # source padding
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels_with_padding(3, 6, 61)}
    return model, batch


def loss_and_grads(model, forward, batch, output_logits: bool) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks on every path
    loss = forward(**batch, label_smoothing=0.1, num_items_in_batch=torch.tensor(9.0), output_logits=output_logits,
                   use_cache=False).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(result, reference):
    (loss, grads), (ref_loss, ref_grads) = result, reference
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), (loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert relative_error(grad, ref_grads[name]) <= 1e-4, name


def test_the_models_training_loss_without_logits_equals_its_loss_with_logits():
    model, batch = model_and_batch()
    plain = loss_and_grads(model, model, batch, output_logits=True)
    assert_same(loss_and_grads(model, model, batch, output_logits=False), plain)
    assert "model.shared.weight" in plain[1]  # the tied embedding gets the projection's gradient


@pytest.mark.slow
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_the_training_forward_compiles_as_one_graph_with_the_same_loss_and_gradients(attn_implementation):
    # fullgraph=True raises at the first graph break (a value read back from the device, data-dependent Python);
    # aot_eager traces forward and backward as inductor would, without generating code, so the test is quick.
    torch._dynamo.reset()
    model, batch = model_and_batch(attn_implementation)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    eager = loss_and_grads(model, model, batch, output_logits=False)
    assert_same(loss_and_grads(model, compiled, batch, output_logits=False), eager)
    # A second batch of other lengths still runs as one graph (dynamic shapes after a recompilation).
    shorter = {k: v[:, :5] for k, v in batch.items()}
    assert_same(loss_and_grads(model, compiled, shorter, output_logits=False),
                loss_and_grads(model, model, shorter, output_logits=False))


def test_sinusoidal_span_equals_the_encoding_beyond_the_table():
    from modeling_vanilla.modeling_vanilla import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

    encoding = SinusoidalPositionalEncoding(8, 6)
    assert torch.equal(encoding.span(3, 4), encoding.table[3:7])
    assert torch.allclose(encoding.span(6, 5), encoding.encode(torch.arange(6, 11), 6), atol=0)  # past the table
    learned = LearnedPositionalEmbedding(8, 6)
    assert torch.equal(learned.span(2, 6), learned.weight[2:8])
    with pytest.raises(ValueError, match="Sequence of 9 positions is longer than the learned position table"):
        learned.span(2, 7)


def test_collator_refuses_ids_outside_the_vocabulary():
    collator = TranslationCollator(pad_token_id=1, vocab_size=10)
    good = [{"input_ids": [4, 5, 2], "labels": [6, 2]}]
    assert collator(good)["input_ids"].tolist() == [[4, 5, 2]]
    for field in ("input_ids", "labels"):
        bad = [{**good[0], field: [4, 12, 2]}]
        with pytest.raises(TranslationDataError, match=f"field '{field}' holds token id 12, outside the model's "
                                                       "vocabulary 0..9"):
            collator(bad)


@pytest.mark.parametrize("replicas", [1, 3])
def test_update_tokens_count_every_replicas_batches_of_the_update(replicas):
    torch.manual_seed(0)
    sources = torch.randint(1, 20, (200,)).tolist()
    targets = torch.randint(1, 20, (200,)).tolist()
    samplers = [TokenBatchSampler(sources, targets, 60, seed=4, num_replicas=replicas, rank=rank)
                for rank in range(replicas)]
    for sampler in samplers:
        sampler.set_epoch(2)
    per_rank = [list(sampler) for sampler in samplers]
    assert per_rank == [samplers[0].epoch_batches()[rank::replicas] for rank in range(replicas)]
    for first, count in ((0, 1), (1, 3), (len(per_rank[0]) - 2, 2)):
        expected = sum(targets[i] for batches in per_rank for batch in batches[first : first + count] for i in batch)
        assert all(sampler.update_tokens(first, count) == expected for sampler in samplers)


def test_dataloader_workers_give_the_same_training_run(toy_data, tmp_path):
    from modeling_vanilla.cli.train import run as main

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    common = ("--max-steps", "6", "--precision", "fp32", "--eval-every", "0", "--log-every", "1",
              "--save-every-minutes", "0")
    main(train_args(toy_data, tmp_path / "main", *common, "--num-workers", "0"))
    main(train_args(toy_data, tmp_path / "workers", *common, "--num-workers", "2", "--pad-to-multiple-of", "8"))
    one, two = losses(tmp_path / "main"), losses(tmp_path / "workers")
    assert len(one) == 6
    for x, y in zip(one, two):  # padding to a multiple of 8 changes no loss: padding is ignored
        assert abs(x - y) <= 1e-5 * abs(x), (one, two)


def test_the_loop_reads_the_device_back_only_every_log_every_updates(toy_data, tmp_path, monkeypatch):
    from modeling_vanilla.cli.train import run as main
    from modeling_vanilla.training.update_stats import UpdateStats

    reads = []
    real_read = UpdateStats.read

    def counted(self):
        reads.append(self.updates)
        return real_read(self)

    monkeypatch.setattr(UpdateStats, "read", counted)
    summary = main(train_args(toy_data, tmp_path / "out", "--max-steps", "12", "--precision", "fp32",
                              "--eval-every", "0", "--log-every", "5", "--save-every-minutes", "0"))
    # Step 1 (the first line), then steps 5 and 10, then the 2 updates left at the end: 4 reads for 12 updates.
    assert reads == [1, 4, 5, 2]
    assert summary["step"] == 12


@pytest.mark.slow  # inductor generates and builds C++ for each graph: about a minute on 2 cores
def test_training_with_compile_reports_its_graphs_and_matches_eager(toy_data, tmp_path):
    from torch._dynamo.utils import counters

    from modeling_vanilla.cli.train import run as main

    torch._dynamo.reset()  # the graph count is the process's: other tests' compiled graphs must not count here
    counters.clear()

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    # No dropout: inductor draws its own random numbers, so dropout masks would differ from eager's.
    common = ("--max-steps", "5", "--precision", "fp32", "--eval-every", "0", "--log-every", "1",
              "--save-every-minutes", "0", "--override", "dropout=0.0")
    eager = main(train_args(toy_data, tmp_path / "eager", *common, "--no-compile"))
    compiled = main(train_args(toy_data, tmp_path / "compiled", *common, "--compile"))
    assert "compiled_graphs" not in eager
    # Token batches of several shapes, padded to multiples of 8: a few graphs, not one per batch.
    assert 1 <= compiled["compiled_graphs"] <= 4, compiled
    assert compiled["compile_seconds"] > 0
    for x, y in zip(losses(tmp_path / "eager"), losses(tmp_path / "compiled"), strict=True):
        assert abs(x - y) <= 1e-4 * abs(x)


def test_finetune_compiles_on_request_and_by_default_only_on_a_gpu(monkeypatch):
    from types import SimpleNamespace

    from modeling_vanilla.cli import finetune
    from modeling_vanilla.training.finetune_options import finetune_namespace

    def parse(argv):  # compile is Trainer's torch_compile; --compile, --no-compile and --cpu are the old names
        options, training = finetune.parse_args(argv)
        return SimpleNamespace(compile=training.torch_compile, pad_to_multiple_of=options.pad_to_multiple_of,
                               training=training)

    base = ["model", "--output-dir", "out", "--source-lang", "en", "--target-lang", "de", "--train-files", "x"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse(base).compile is False
    assert parse(base).pad_to_multiple_of is None
    assert parse([*base, "--compile"]).compile is True
    assert parse([*base, "--compile"]).pad_to_multiple_of == 8  # bucketed shapes come with compilation
    assert parse([*base, "--compile", "--pad-to-multiple-of", "16"]).pad_to_multiple_of == 16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # Trainer's arguments would set the fake GPU up:
    decide = finetune_namespace  # the values they are made of, as decided for this machine
    assert decide(base)[1].torch_compile is True
    assert decide([*base, "--cpu"])[1].torch_compile is False
    assert decide([*base, "--no-compile"])[1].torch_compile is False
    arguments = parse([*base, "--compile", "--cpu"]).training
    assert arguments.torch_compile is True
