"""The model card a training run writes (publish/model_card.py): metadata that parses, facts of the run."""

import pytest

from tests.training.test_training import toy_data, train_args  # noqa: F401 (toy_data is a fixture)


@pytest.mark.parametrize(
    "extra",
    [
        ["--num-beams", "1", "--length-penalty", "0.6"],
        ["--num-beams", "5", "--length-penalty", "0.0"],
        ["--model-name", "my: model 'quoted' #1", "--card-dataset", "user/data: set"],
        ["--override", "layer_norm=pre", "tie_word_embeddings=false", "positional_encoding=learned"],
        ["--lr-cooldown", "0.2"],
        ["--precision", "bf16"],
        ["--weight-decay", "0.1"],
    ],
)
def test_flag_combinations_reach_a_savable_generation_config_and_a_valid_card(toy_data, tmp_path, extra):
    """What the run writes at the end, for odd but valid flags: a generation config transformers saves, a card whose
    metadata parses (quotes, colons) and that names the training files without their local folders."""
    from transformers import GenerationConfig

    from modeling_vanilla import VanillaTransformerConfig
    from modeling_vanilla.data.tokenization import train_bpe_tokenizer
    from modeling_vanilla.publish.model_card import card_metadata, run_model_card
    from modeling_vanilla.training.options import parse_train_args
    from modeling_vanilla.training.start import set_decoding

    args = parse_train_args(train_args(toy_data, tmp_path / "out", "--max-steps", "1", *extra))
    generation = GenerationConfig()
    set_decoding(generation, args.num_beams, args.length_penalty)
    generation.save_pretrained(tmp_path / "generation")  # transformers validates strictly on save
    tokenizer = train_bpe_tokenizer(["a b c"] * 10, vocab_size=270)
    config = VanillaTransformerConfig.tiny(vocab_size=len(tokenizer), **args.config_overrides)
    summary = {"step": 1, "epochs": 0.1, "tokens_seen": 10, "train_minutes": 0.1, "averaged_checkpoints": 0,
               "parameters": 1000, "processes": 1}
    card = run_model_card(args, config, summary, tokenizer)
    metadata = card_metadata(card)
    assert metadata["language"] == ["en", "de"]
    if args.card_dataset:
        assert metadata["datasets"] == [args.card_dataset]
        assert metadata["model-index"][0]["name"] == args.model_name
    assert str(toy_data) not in card  # the local folder of --train-files is not published
    cooldown = "decayed linearly to zero over the last 0.2 of the budget (not in the paper)"
    assert (cooldown in card) == (args.lr_cooldown == 0.2)
    decay = "Adam (0.9, 0.98, 1e-9) with decoupled weight decay 0.1 of the matrices and embeddings (AdamW, not in"
    assert (decay in card) == (args.weight_decay == 0.1)
    decoded = "decoded under bf16 autocast (the saved weights are fp32"
    assert (decoded in card) == (args.precision == "bf16")


def test_the_card_of_a_recipe_run_names_the_recipe_and_links_to_its_table_without_its_runs(toy_data, tmp_path):
    """A recipe run's card reports this run and points to the recipe's table in the docs; it copies no other run's
    numbers (those of the docs' data file)."""
    import yaml

    from modeling_vanilla import VanillaTransformerConfig
    from modeling_vanilla.data.tokenization import train_bpe_tokenizer
    from modeling_vanilla.publish.model_card import card_metadata, run_model_card
    from modeling_vanilla.training.options import parse_train_args
    from tests.helpers import REPO_ROOT

    tokenizer = train_bpe_tokenizer(["a b c"] * 10, vocab_size=270)
    summary = {"step": 1, "epochs": 0.1, "tokens_seen": 10, "train_minutes": 0.1, "averaged_checkpoints": 0,
               "parameters": 1000, "processes": 1,
               "test": {"bleu": 12.34, "chrf": 45.67, "sentences": 3, "bleu_signature": "b", "chrf_signature": "c"}}
    config = VanillaTransformerConfig.tiny(vocab_size=len(tokenizer))
    with_recipe = parse_train_args(train_args(toy_data, tmp_path / "a", "--max-steps", "1", "--recipe", "multi30k"))
    card = run_model_card(with_recipe, config, summary, tokenizer)
    assert "trained with the recipe `multi30k` of the vanilla-transformer project" in card
    assert "file `docs/results.md#recipe-multi30k`" in card
    assert "Test: BLEU 12.34, chrF 45.67 on 3 sentences" in card  # this run's own scores
    assert card_metadata(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == 12.34
    measured = yaml.safe_load((REPO_ROOT / "docs" / "results" / "runs.yaml").read_text())["runs"]
    other_numbers = {f"{run[split][key]:.2f}" for run in measured for split in ("val", "test") if split in run
                     for key in ("bleu", "chrf")}
    assert len(other_numbers) > 20
    assert [number for number in sorted(other_numbers) if number in card] == []
    assert "| en-de" not in card and "|---" not in card.replace(" ", "")  # no table of runs
    plain = parse_train_args(train_args(toy_data, tmp_path / "b", "--max-steps", "1"))
    assert "recipe" not in run_model_card(plain, config, summary, tokenizer)
