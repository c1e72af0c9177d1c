"""Seq2Seq translator: data, masking, decoding, checkpoints, CLI, and rnnfast vs torch.nn parity."""

from __future__ import annotations

import pytest
import torch

import rnnfast
from rnnfast.seq2seq.__main__ import main
from rnnfast.seq2seq.data import (
    EOS_ID,
    PAD_ID,
    InputError,
    Pair,
    TokenizedPair,
    Vocabulary,
    detokenize,
    make_batch,
    number_pairs,
    number_split,
    read_tsv,
    tokenize,
)
from rnnfast.seq2seq.decoding import beam_search, greedy_decode
from rnnfast.seq2seq.model import (
    Seq2Seq,
    Seq2SeqConfig,
    recurrent_layer,
    reverse_within_lengths,
    sequence_loss,
)
from rnnfast.seq2seq.training import (
    DataConfig,
    TrainConfig,
    Translator,
    load_checkpoint,
    save_checkpoint,
    train,
    translator_checkpoint,
    translator_from_checkpoint,
)

pytest.importorskip("num2words")
pytest.importorskip("sacrebleu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: extra threads only add synchronisation, and on shared cores they stall.
    The command line also sets the thread count, so this restores it for later test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MEMORISED = [
    ("un", "one"),
    ("vingt-trois", "twenty-three"),
    ("cent un", "one hundred and one"),
    ("quatre-vingt-dix-neuf", "ninety-nine"),
    ("mille deux cent trente-quatre", "one thousand, two hundred and thirty-four"),
    ("soixante et onze", "seventy-one"),
]


def tokenized(pairs: list[tuple[str, str]]) -> list[TokenizedPair]:
    return [TokenizedPair(tokenize(source), tokenize(target)) for source, target in pairs]


def tiny_model(source_vocab_size: int, target_vocab_size: int, **overrides) -> Seq2Seq:
    config = {"embedding_size": 16, "hidden_size": 24, "cell_impl": "torch"}
    config.update(overrides)
    return Seq2Seq(Seq2SeqConfig(source_vocab_size, target_vocab_size, **config))


def random_batch(
    vocab_size: int, lengths: list[int], target_lengths: list[int], seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Right-padded random source / decoder input / decoder target ids with the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    batch = make_batch(
        [
            TokenizedPair(
                [str(t) for t in torch.randint(4, vocab_size, (n,), generator=generator).tolist()],
                [str(t) for t in torch.randint(4, vocab_size, (m,), generator=generator).tolist()],
            )
            for n, m in zip(lengths, target_lengths)
        ],
        Vocabulary(str(i) for i in range(4, vocab_size)),
        Vocabulary(str(i) for i in range(4, vocab_size)),
    )
    return batch.source, batch.source_lengths, batch.decoder_input, batch.decoder_target


# ---------------------------------------------------------------------------------------------- data


def test_tokenize_detokenize_round_trip():
    text = "one thousand, two hundred and thirty-four"
    assert tokenize(text) == ["one", "thousand", ",", "two", "hundred", "and", "thirty", "-", "four"]
    assert detokenize(tokenize(text)) == text
    assert tokenize("사백이십삼 만", "chars") == ["사", "백", "이", "십", "삼", "만"]


def test_number_split_is_disjoint_deterministic_and_complete():
    train_numbers, valid_numbers, test_numbers = number_split(9999)
    assert number_split(9999) == (train_numbers, valid_numbers, test_numbers)
    train_set, valid_set, test_set = set(train_numbers), set(valid_numbers), set(test_numbers)
    assert not train_set & valid_set and not train_set & test_set and not valid_set & test_set
    assert train_set | valid_set | test_set == set(range(10000))
    assert (len(train_set), len(valid_set), len(test_set)) == (8000, 1000, 1000)


def test_number_pairs_test_phrases_unseen_in_training():
    splits = number_pairs("fr-en", 999)
    train_sources = {pair.source for pair in splits.train}
    assert not train_sources & {pair.source for pair in splits.test}
    assert not train_sources & {pair.source for pair in splits.valid}
    assert Pair("quatre cent vingt-trois", "four hundred and twenty-three") in (
        splits.train + splits.valid + splits.test
    )


def test_read_tsv_ignores_extra_columns(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("\ufeffVa !\tGo.\tCC-BY 2.0\r\nSalut.\tHi.\n".encode())
    assert read_tsv(path).pairs == [Pair("Va !", "Go."), Pair("Salut.", "Hi.")]


def test_read_tsv_skips_and_counts_blank_lines(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"un\tone\n\n  \t \r\ndeux\ttwo\n\n")
    tsv = read_tsv(path)
    assert tsv.pairs == [Pair("un", "one"), Pair("deux", "two")]
    assert tsv.blank_lines == 3
    assert tsv.path == path.resolve()


@pytest.mark.parametrize(
    "content, line, message",
    [
        (b"un\tone\ndeux two\n", 2, "no tab"),
        (b"un\tone\n\n\ndeux two\n", 4, "no tab"),
        (b"un\tone\ndeux\ttwo\n\xe9t\xe9\tsummer\n", 3, "UTF-8"),
        (b"un\tone\n\ttwo\n", 2, "empty source"),
    ],
    ids=["missing-tab", "missing-tab-after-blank-lines", "bad-encoding", "empty-field"],
)
def test_read_tsv_errors_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=rf"bad\.tsv:{line}: .*{message}"):
        read_tsv(path)


def test_vocabulary_min_freq_and_unknown():
    vocab = Vocabulary.build([["a", "b", "a"], ["a", "c", "b"]], min_freq=2)
    assert vocab.itos[4:] == ["a", "b"]
    assert vocab.decode(vocab.encode(["a", "c", "b"]) + [EOS_ID, 4]) == ["a", "<unk>", "b"]


# ------------------------------------------------------------------------------------------- masking


def test_reverse_within_lengths_keeps_padding_at_the_end():
    tokens = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]])
    reversed_tokens = reverse_within_lengths(tokens, torch.tensor([3, 2, 4]))
    assert reversed_tokens.tolist() == [[7, 6, 5, 0], [9, 8, 0, 0], [4, 3, 2, 1]]


@pytest.mark.parametrize("reverse_source", [True, False], ids=["reversed", "forward"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidir", "bidir"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_row_encodes_like_the_row_alone(cell, bidirectional, reverse_source):
    torch.manual_seed(0)
    model = tiny_model(20, 20, cell=cell, num_layers=2, bidirectional=bidirectional, reverse_source=reverse_source)
    model.eval()
    source, lengths, _, _ = random_batch(20, [5, 2, 4], [1, 1, 1])
    encoded = model.encode(source, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone = model.encode(source[row : row + 1, :length], lengths[row : row + 1])
        torch.testing.assert_close(encoded.memory[row, :length], alone.memory[0])
        assert (encoded.memory[row, length:] == 0).all()
        states = zip(encoded.state, alone.state) if cell == "lstm" else [(encoded.state, alone.state)]
        for batched, single in states:
            torch.testing.assert_close(batched[:, row], single[:, 0])


@pytest.mark.parametrize("attention", ["none", "dot", "general"])
def test_loss_and_logits_ignore_padding(attention):
    torch.manual_seed(0)
    model = tiny_model(20, 20, attention=attention, bidirectional=True)
    model.eval()
    source, lengths, decoder_input, target = random_batch(20, [5, 2, 4], [3, 6, 1])
    logits = model(source, lengths, decoder_input)
    row_losses = []
    for row in range(3):
        source_length, target_length = int(lengths[row]), int((target[row] != PAD_ID).sum())
        alone = model(
            source[row : row + 1, :source_length],
            lengths[row : row + 1],
            decoder_input[row : row + 1, :target_length],
        )
        torch.testing.assert_close(logits[row : row + 1, :target_length], alone)
        row_losses.append(sequence_loss(alone, target[row : row + 1, :target_length], reduction="sum"))
    torch.testing.assert_close(sequence_loss(logits, target, reduction="sum"), torch.stack(row_losses).sum())


def test_step_by_step_decoder_matches_full_sequence():
    torch.manual_seed(0)
    model = tiny_model(20, 20, attention="general", num_layers=2)
    model.eval()
    source, lengths, decoder_input, _ = random_batch(20, [5, 3], [4, 4])
    encoded = model.encode(source, lengths)
    full, _ = model.decoder(decoder_input, encoded.state, encoded.memory, encoded.memory_mask)
    state, steps = encoded.state, []
    for step in range(decoder_input.shape[1]):
        logits, state = model.decoder(decoder_input[:, step : step + 1], state, encoded.memory, encoded.memory_mask)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_scheduled_teacher_forcing_runs_step_by_step():
    torch.manual_seed(0)
    model = tiny_model(20, 20)
    source, lengths, decoder_input, target = random_batch(20, [5, 3], [4, 2])
    logits = model(source, lengths, decoder_input, teacher_forcing_ratio=0.5)
    assert logits.shape == (2, 5, 20)
    sequence_loss(logits, target).backward()


# ------------------------------------------------------------------------------------------ training


def test_tiny_training_run_loss_falls_and_checkpoints(tmp_path):
    model_config = Seq2SeqConfig(0, 0, embedding_size=16, hidden_size=32, cell_impl="torch")
    data_config = DataConfig(max_number=199)
    best = train(
        model_config,
        data_config,
        TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2),
        tmp_path,
        show_progress=False,
    )
    last = load_checkpoint(tmp_path / "last.pt")
    losses = last["history"]["train_loss"]
    assert last["epoch"] == 3 and len(losses) == 3
    assert losses[-1] < 0.6 * losses[0]
    assert best["best_valid_loss"] == min(last["history"]["valid_loss"])
    assert {"best.pt", "last.pt", "curves.png"} <= {path.name for path in tmp_path.iterdir()}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture(scope="module")
def memorised_translator() -> Translator:
    """A small bidirectional 2-layer LSTM with attention trained until it reproduces MEMORISED."""
    torch.manual_seed(0)
    pairs = tokenized(MEMORISED)
    source_vocab = Vocabulary.build(pair.source for pair in pairs)
    target_vocab = Vocabulary.build(pair.target for pair in pairs)
    model = tiny_model(
        len(source_vocab),
        len(target_vocab),
        hidden_size=32,
        num_layers=2,
        bidirectional=True,
        attention="general",
    )
    batch = make_batch(pairs, source_vocab, target_vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = sequence_loss(model(batch.source, batch.source_lengths, batch.decoder_input), batch.decoder_target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return Translator(model, source_vocab, target_vocab, "words", max_length=20)


def test_greedy_and_beam_reproduce_memorised_pairs(memorised_translator):
    sources = [source for source, _ in MEMORISED]
    targets = [detokenize(tokenize(target)) for _, target in MEMORISED]
    assert memorised_translator.translate(sources) == targets
    assert memorised_translator.translate(sources, beam_size=4) == targets


def test_beam_size_one_equals_greedy(memorised_translator):
    # Unseen word orders make the model unsure, so greedy and beam paths are worth comparing.
    sources = [source for source, _ in MEMORISED] + [
        "cent vingt-trois",
        "un mille",
        "onze soixante deux",
        "cent",
    ]
    pairs = tokenized([(source, "") for source in sources])
    batch = make_batch(pairs, memorised_translator.source_vocab, memorised_translator.target_vocab)
    model = memorised_translator.model
    greedy = greedy_decode(model, batch.source, batch.source_lengths, max_length=12)
    assert beam_search(model, batch.source, batch.source_lengths, beam_size=1, max_length=12) == greedy


def test_checkpoint_round_trip_gives_identical_translations(memorised_translator, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, translator_checkpoint(memorised_translator, DataConfig(max_length=20)))
    restored = translator_from_checkpoint(load_checkpoint(path))
    sources = [source for source, _ in MEMORISED] + ["cent vingt-trois", "deux"]
    for beam_size in (1, 3):
        assert restored.translate(sources, beam_size) == memorised_translator.translate(sources, beam_size)


def test_command_line_train_resume_evaluate_translate(tmp_path, capsys):
    common = ["--max-number", "99", "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "32"]
    common += ["--cell-impl", "torch", "--device", "cpu"]
    main(["train", *common, "--epochs", "2", "--output-dir", str(tmp_path / "straight")])
    main(["train", *common, "--epochs", "1", "--output-dir", str(tmp_path / "resumed")])
    resume = ["--resume", str(tmp_path / "resumed" / "last.pt")]
    main(["train", *common, "--epochs", "2", "--output-dir", str(tmp_path / "resumed"), *resume])
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for name, tensor in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][name], tensor, rtol=0, atol=0)
    assert resumed["history"] == straight["history"]

    capsys.readouterr()
    checkpoint = ["--checkpoint", str(tmp_path / "straight" / "best.pt"), "--device", "cpu"]
    main(["evaluate", *checkpoint, "--beam-size", "2"])
    report = capsys.readouterr().out
    assert "test split: 10 pairs, beam 2" in report and "exact match" in report and "BLEU" in report
    main(["translate", *checkpoint, "quarante-deux", "sept"])
    assert len(capsys.readouterr().out.splitlines()) == 2


# ------------------------------------------------------------------------------ rnnfast vs torch.nn


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnnfast_and_torch_models_train_alike(cell):
    losses = {}
    for cell_impl in ("torch", "rnnfast"):
        torch.manual_seed(0)
        model = tiny_model(20, 20, cell=cell, cell_impl=cell_impl, num_layers=2, bidirectional=True, attention="dot")
        if cell_impl == "torch":
            torch_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        else:
            state = model.state_dict()
            assert state.keys() == torch_state.keys()
            for name, tensor in torch_state.items():
                torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses[cell_impl] = []
        for step in range(5):
            source, lengths, decoder_input, target = random_batch(20, [5, 2, 4, 3], [3, 6, 1, 2], seed=step)
            loss = sequence_loss(model(source, lengths, decoder_input), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[cell_impl].append(loss.item())
    assert losses["rnnfast"] == pytest.approx(losses["torch"], rel=1e-5, abs=1e-6)


def test_missing_rnnfast_class_raises_a_clear_error(monkeypatch):
    monkeypatch.delattr(rnnfast, "GRU", raising=False)
    with pytest.raises(NotImplementedError, match=r"rnnfast\.GRU is not available.*cell_impl='torch'"):
        recurrent_layer("gru", "rnnfast", 4, 8)
