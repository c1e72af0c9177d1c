"""Seq2Seq translator: data, masking, decoding, checkpoints, CLI, and rnnfast vs torch.nn parity."""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import rnnfast
from rnnfast.seq2seq.checkpoints import (
    load_checkpoint,
    save_checkpoint,
    translator_checkpoint,
    translator_from_checkpoint,
)
from rnnfast.seq2seq.commands import main
from rnnfast.seq2seq.data import (
    EOS_ID,
    PAD_ID,
    DataConfig,
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
from rnnfast.seq2seq.decoding import Translator, beam_search, greedy_decode
from rnnfast.seq2seq.model import (
    Seq2Seq,
    Seq2SeqConfig,
    reverse_within_lengths,
    sequence_loss,
)
from rnnfast.seq2seq.training import TrainConfig, train

# Its expensive module fixtures are made once: pytest-xdist runs this module on one worker.
pytestmark = pytest.mark.xdist_group("test_seq2seq")

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


# ------------------------------------------------------------------ command line: what users get wrong

WORDS = [("un", "one"), ("deux", "two"), ("trois", "three"), ("quatre", "four"), ("cinq", "five"), ("six", "six")]
PAIRS_TSV = "".join(f"{a} {b}\t{x} {y}\n" for a, x in WORDS for b, y in WORDS)  # 36 pairs: 28 / 3 / 5
TINY_RUN = ["--epochs", "1", "--hidden-size", "8", "--embedding-size", "4", "--batch-size", "16"]
TINY_RUN += ["--cell-impl", "torch", "--device", "cpu"]


def run_cli(capsys, *argv) -> tuple[int | str | None, str, str]:
    """Exit status (0 when main returns), stdout and stderr of the command line run in-process."""
    try:
        main([str(arg) for arg in argv])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def user_error(capsys, *argv) -> str:
    """The one-line message of a command line run that must fail as the user's mistake."""
    status, _, err = run_cli(capsys, *argv)
    assert status == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"python -m rnnfast.seq2seq {argv[0]}: error: "), err
    return err


def train_tiny(capsys, output_dir, *extra) -> str:
    """stdout and stderr of a tiny training run, which must succeed."""
    status, out, err = run_cli(capsys, "train", *TINY_RUN, "--output-dir", output_dir, *extra)
    assert status == 0, err
    return out + err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-epoch run on a 36-pair TSV file: (output directory, TSV path)."""
    directory = tmp_path_factory.mktemp("tiny_run")
    tsv = directory / "pairs.tsv"
    tsv.write_text(PAIRS_TSV, encoding="utf-8")
    main(["train", "--tsv", str(tsv), *TINY_RUN, "--output-dir", str(directory / "run")])
    return directory / "run", tsv


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "missing.tsv: no such file"),
        (b"un\tone\ndeux two\n", "bad.tsv:2: no tab, expected source<TAB>target"),
        (b"un\tone\n\xe9t\xe9\tsummer\n", "bad.tsv:2: not valid UTF-8"),
    ],
    ids=["missing", "no-tab", "not-utf8"],
)
def test_cli_bad_tsv_is_one_line_naming_file_and_line(tmp_path, capsys, content, message):
    path = tmp_path / ("missing.tsv" if content is None else "bad.tsv")
    if content is not None:
        path.write_bytes(content)
    assert message in user_error(capsys, "train", "--tsv", path, *TINY_RUN, "--output-dir", tmp_path / "run")


def test_cli_tsv_that_is_a_directory_or_unreadable(tmp_path, capsys, monkeypatch):
    err = user_error(capsys, "train", "--tsv", tmp_path, *TINY_RUN)
    assert f"{tmp_path}: is a directory" in err
    locked = tmp_path / "locked.tsv"
    locked.write_text(PAIRS_TSV)
    read_bytes = Path.read_bytes

    def refuse(path):  # chmod cannot lock root out, so the refusal is simulated
        if path == locked:
            raise PermissionError(13, "Permission denied")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    err = user_error(capsys, "evaluate", "--tsv", locked, "--checkpoint", tmp_path / "nothing.pt")
    assert "nothing.pt: no such checkpoint" in err
    err = user_error(capsys, "train", "--tsv", locked, *TINY_RUN, "--output-dir", tmp_path / "run")
    assert f"{locked}: cannot read it (Permission denied)" in err


@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--hidden-size", "-4"], "--hidden-size"),
        (["train", "--dropout", "1.5"], "--dropout"),
        (["evaluate", "--beam-size", "0"], "--beam-size"),
        (["translate", "--beam-size", "-2", "un"], "--beam-size"),
    ],
    ids=["batch-size-0", "epochs-0", "hidden-size-negative", "dropout-over-1", "beam-size-0", "beam-size-negative"],
)
def test_cli_out_of_range_numbers(capsys, argv, option):
    err = user_error(capsys, *argv)
    assert f"argument {option}: expected " in err and repr(argv[2]) in err


def test_cli_cuda_where_there_is_none_names_what_there_is(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = user_error(capsys, "translate", "--device", "cuda", "un")
    assert "--device cuda: CUDA is not available (" in err and "available here: cpu" in err


def test_cli_device_auto_is_the_default_and_takes_cuda_when_there(monkeypatch):
    from rnnfast.seq2seq.commands import build_parser, resolve_device

    assert build_parser().parse_args(["translate"]).device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"


def test_cli_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, {"model_state": {"weight": torch.ones(64)}})
    truncated.write_bytes(truncated.read_bytes()[:100])
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("notes.txt", "not a checkpoint either")
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.ones(3)}, other)
    cases = [
        (text, "notes.txt: not an rnnfast checkpoint (not a whole file written by torch.save)"),
        (truncated, "truncated.pt: not an rnnfast checkpoint (not a whole file written by torch.save)"),
        (archive, "archive.zip: not an rnnfast checkpoint (torch.load: "),
        (other, "other.pt: not an rnnfast seq2seq checkpoint (it has no model_config, data_config"),
        (tmp_path, f"{tmp_path}: is a directory, expected a checkpoint file such as {tmp_path / 'best.pt'}"),
        (tmp_path / "missing.pt", "missing.pt: no such checkpoint"),
    ]
    for path, message in cases:
        assert message in user_error(capsys, "evaluate", "--checkpoint", path)
        assert message in user_error(capsys, "translate", "--checkpoint", path, "un")
    err = user_error(capsys, "train", "--resume", text, *TINY_RUN, "--output-dir", tmp_path / "run")
    assert "notes.txt: not an rnnfast checkpoint" in err


def test_cli_too_few_pairs_says_what_each_filter_removed(tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n" + PAIRS_TSV + "\n\n")
    err = user_error(capsys, "train", "--tsv", path, "--max-length", "1", *TINY_RUN)
    assert "pairs.tsv: 36 pairs read (3 blank lines skipped), 36 over --max-length 1: too few left" in err
    assert "(0 training and 0 validation pairs" in err
    err = user_error(capsys, "train", "--max-number", "5", *TINY_RUN)
    assert "built-in fr-en task (0..5): 6 pairs read, 0 over --max-length 50: too few left" in err
    assert "(4 training and 0 validation pairs" in err


def test_cli_blank_lines_are_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS_TSV[:100] + "\n   \n" + PAIRS_TSV[100:] + "\n")
    report = train_tiny(capsys, tmp_path / "run", "--tsv", path)
    assert "pairs.tsv: 36 pairs read (3 blank lines skipped); 28 training, 3 validation pairs" in report


def test_cli_checkpoint_records_the_tsv_and_evaluate_notices_moves_and_changes(tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS_TSV)
    train_tiny(capsys, tmp_path / "run", "--tsv", path)
    checkpoint = tmp_path / "run" / "best.pt"
    data_config = load_checkpoint(checkpoint)["data_config"]
    assert data_config["tsv"] == str(path.resolve())
    assert data_config["tsv_sha256"] == hashlib.sha256(PAIRS_TSV.encode()).hexdigest()

    status, out, _ = run_cli(capsys, "evaluate", "--checkpoint", checkpoint)
    assert status == 0 and "test split: 5 pairs, greedy" in out

    moved = tmp_path / "moved.tsv"
    path.rename(moved)
    err = user_error(capsys, "evaluate", "--checkpoint", checkpoint)
    assert f"{path.resolve()}: the data this checkpoint was trained on is not there any more (moved" in err
    assert "pass its new location with --tsv" in err
    status, out, _ = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--tsv", moved)
    assert status == 0 and f"{moved} (the training data): test split: 5 pairs" in out
    resume = ["--resume", checkpoint, "--epochs", "2", "--output-dir", tmp_path / "resumed"]
    assert "pass its new location with --tsv" in user_error(capsys, "train", *resume)
    train_tiny(capsys, tmp_path / "resumed", *resume, "--tsv", moved)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["data_config"]["tsv"] == str(moved.resolve())

    path.write_text(PAIRS_TSV + "six six\tsix six\n")
    err = user_error(capsys, "evaluate", "--checkpoint", checkpoint)
    assert f"{path.resolve()}: changed since this checkpoint was trained on it (SHA-256 " in err
    assert f"evaluate --tsv {path.resolve()}" in err
    status, out, _ = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--tsv", path)
    assert status == 0 and f"{path}: 37 pairs, greedy" in out


def test_cli_train_keeps_an_existing_run_unless_told(tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS_TSV)
    run = tmp_path / "run"
    train_tiny(capsys, run, "--tsv", path, "--seed", "1")
    first = (run / "last.pt").read_bytes()
    err = user_error(capsys, "train", "--tsv", path, *TINY_RUN, "--output-dir", run)
    assert f"{run}/ already holds a run (best.pt, last.pt); pass --overwrite to replace it" in err
    assert f"--resume {run / 'last.pt'} to continue it" in err
    assert (run / "last.pt").read_bytes() == first
    train_tiny(capsys, run, "--tsv", path, "--overwrite")
    assert load_checkpoint(run / "last.pt")["train_config"]["seed"] == 0
    train_tiny(capsys, run, "--tsv", path, "--resume", run / "last.pt", "--epochs", "2")
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    err = user_error(capsys, "train", "--tsv", path, *TINY_RUN, "--output-dir", path, "--overwrite")
    assert f"--output-dir {path}: cannot create it" in err


def test_cli_resume_names_the_settings_the_checkpoint_overrides(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    resume = ["--resume", run / "last.pt", "--output-dir", tmp_path / "resumed"]
    err = user_error(capsys, "train", *TINY_RUN, *resume)
    assert f"--epochs 1: {run / 'last.pt'} is already at epoch 1; pass a larger --epochs" in err
    contradicting = ["--hidden-size", "16", "--num-layers", "2", "--cell", "gru", "--no-reverse-source", "--lr", "0.5"]
    report = train_tiny(capsys, tmp_path / "resumed", *resume, "--epochs", "2", *contradicting)
    warnings = [line for line in report.splitlines() if ": warning: " in line]
    assert warnings == [
        f"python -m rnnfast.seq2seq train: warning: the checkpoint's {setting} overrides {given} "
        "(a resumed run keeps its settings)"
        for setting, given in [
            ("--cell lstm", "--cell gru"),
            ("--hidden-size 8", "--hidden-size 16"),
            ("--num-layers 1", "--num-layers 2"),
            ("--reverse-source", "--no-reverse-source"),
            ("--learning-rate 0.002", "--learning-rate 0.5"),
        ]
    ]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["model_config"]["hidden_size"] == 8 and resumed["epoch"] == 2


def test_cli_resume_of_a_built_in_task_run_names_the_data_it_keeps(tmp_path, capsys):
    run = tmp_path / "run"
    train_tiny(capsys, run, "--max-number", "19")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(PAIRS_TSV)
    report = train_tiny(capsys, run, "--resume", run / "last.pt", "--epochs", "2", "--tsv", tsv, "--max-number", "29")
    assert [line for line in report.splitlines() if ": warning: " in line] == [
        f"python -m rnnfast.seq2seq train: warning: the checkpoint's {setting} overrides {given} "
        "(a resumed run keeps its settings)"
        for setting, given in [
            ("--max-number 19", "--max-number 29"),
            ("data (built-in fr-en task (0..19))", f"--tsv {tsv}"),
        ]
    ]
    assert load_checkpoint(run / "last.pt")["data_config"]["tsv"] is None


def test_cli_translate_reports_unknown_words_and_truncation(tiny_run, capsys):
    run, _ = tiny_run
    long_sentence = " ".join(["un"] * 60)
    status, out, err = run_cli(
        capsys, "translate", "--checkpoint", run / "best.pt", "un deux", "un zorglub deux quux zorglub", long_sentence
    )
    assert status == 0 and len(out.splitlines()) == 3
    assert err.splitlines() == [
        "python -m rnnfast.seq2seq translate: warning: 'un zorglub deux quux zorglub': "
        "not in the source vocabulary, read as <unk>: zorglub quux",
        "python -m rnnfast.seq2seq translate: warning: 'un un un un un un un un un un un un u...': "
        "60 tokens, over the model's maximum length 50: truncated, only the first 50 are translated",
    ]


def test_cli_translate_stdin_that_is_not_utf8(tiny_run, capsys, monkeypatch):
    run, _ = tiny_run
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"un deux\n\xe9t\xe9\n")))
    err = user_error(capsys, "translate", "--checkpoint", run / "best.pt")
    assert "<stdin>:2: not valid UTF-8" in err


def test_cli_internal_errors_keep_their_traceback(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr("rnnfast.seq2seq.commands.train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", *TINY_RUN, "--output-dir", str(tmp_path / "run")])


def test_cli_interrupt_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("rnnfast.seq2seq.commands.train", interrupted)
    with pytest.raises(SystemExit, match=r"interrupted before the first checkpoint; nothing saved in .*run/"):
        main(["train", *TINY_RUN, "--output-dir", str(tmp_path / "run")])


def run_python(cwd: Path, *args: str, **options) -> subprocess.CompletedProcess:
    """`python *args` in a child process whose stdout and stderr are pipes, as in a log or CI job."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options}
    environment = {**os.environ, "PYTHONPATH": str(Path(rnnfast.__file__).parent.parent)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, timeout=120, **options)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--tsv", "missing.tsv"], "missing.tsv: no such file"),
        (["translate", "--beam-size", "0"], "argument --beam-size: expected a positive integer, got '0'"),
    ],
    ids=["user-error", "argparse-error"],
)
def test_cli_subprocess_errors_are_one_line_with_status_2(tmp_path, argv, message):
    result = run_python(tmp_path, "-m", "rnnfast.seq2seq", *argv, text=True)
    assert result.returncode == 2
    assert result.stderr == f"python -m rnnfast.seq2seq {argv[0]}: error: {message}\n"
    assert result.stdout == ""


# ------------------------------------------------------------------------- command line: what it prints

EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+): train loss \d+\.\d{4}, valid loss \d+\.\d{4}, "
    r"valid exact match \d+\.\d{2}%( \(best\))?, elapsed \d+\.\d s"
)


def train_in_a_child(tmp_path: Path, *extra: str, **options) -> subprocess.CompletedProcess:
    (tmp_path / "pairs.tsv").write_text(PAIRS_TSV, encoding="utf-8")
    argv = ["-m", "rnnfast.seq2seq", "train", "--tsv", "pairs.tsv", *TINY_RUN, *extra]
    return run_python(tmp_path, *argv, **options)


def test_cli_train_logs_one_line_per_epoch_where_output_is_not_a_terminal(tmp_path):
    result = train_in_a_child(tmp_path, "--epochs", "2", text=True)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "pairs.tsv: 36 pairs read; 28 training, 3 validation pairs"
    assert [EPOCH_LINE.fullmatch(line).groups()[:2] for line in lines[1:3]] == [("1", "2"), ("2", "2")]
    assert lines[3].startswith("best checkpoint: epoch ") and len(lines) == 4


def test_cli_train_logs_the_epochs_it_does_not_validate(tmp_path, capsys):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(PAIRS_TSV, encoding="utf-8")
    report = train_tiny(capsys, tmp_path / "run", "--tsv", tsv, "--epochs", "3", "--validate-every", "2")
    epoch_lines = [line for line in report.splitlines() if line.startswith("epoch ")]
    assert re.fullmatch(r"epoch 1/3: train loss \d+\.\d{4}, elapsed \d+\.\d s", epoch_lines[0])
    assert [bool(EPOCH_LINE.fullmatch(line)) for line in epoch_lines[1:]] == [True, True]


def test_cli_train_quiet_prints_only_the_summary(tmp_path):
    result = train_in_a_child(tmp_path, "--quiet", text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith("best checkpoint: epoch ")


def test_cli_train_draws_a_progress_bar_on_a_terminal(tmp_path):
    pty = pytest.importorskip("pty")
    import fcntl
    import termios

    terminal, terminal_end = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm draws nothing in no room.
    fcntl.ioctl(terminal_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    result = train_in_a_child(tmp_path, stderr=terminal_end, text=True)
    os.close(terminal_end)
    drawn = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # EIO: the child closed the terminal and all it wrote has been read
            break
        if not chunk:
            break
        drawn += chunk
    os.close(terminal)
    assert result.returncode == 0
    assert b"\repoch 1/1:" in drawn and b"pair" in drawn
    assert "\r" not in result.stdout and EPOCH_LINE.fullmatch(result.stdout.splitlines()[1])


# ----------------------------------------------------- command line: without the seq2seq extra installed

BLOCKED_IMPORT = "import sys; sys.modules.update(dict.fromkeys({modules}));"


@pytest.mark.parametrize("module", ["tqdm", "matplotlib", "sacrebleu", "num2words"])
def test_cli_missing_optional_module_is_one_line_with_status_1(tmp_path, module):
    argv = ["train", *TINY_RUN, "--max-number", "99", "--output-dir", "run"]
    code = BLOCKED_IMPORT.format(modules=[module]) + f"from rnnfast.seq2seq.commands import main; main({argv})"
    result = run_python(tmp_path, "-c", code, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"python -m rnnfast.seq2seq train: error: {module} is not installed; "
        'pip install "rnnfast[seq2seq]" installs it\n'
    )
    assert result.stdout == ""
    assert not (tmp_path / "run").exists() or module == "num2words"  # its import comes with the data


def test_model_pieces_and_help_work_without_the_seq2seq_extra(tmp_path):
    code = BLOCKED_IMPORT.format(modules=["num2words", "sacrebleu", "tqdm", "matplotlib"]) + (
        "import torch\n"
        "from rnnfast.seq2seq import Seq2Seq, Seq2SeqConfig, Translator, Vocabulary\n"
        "from rnnfast.seq2seq.commands import main\n"
        "vocabulary = Vocabulary.build([['un', 'deux']], 1)\n"
        "model = Seq2Seq(Seq2SeqConfig(len(vocabulary), len(vocabulary), cell_impl='torch', hidden_size=8))\n"
        "print(len(Translator(model, vocabulary, vocabulary, 'words', 5).translate(['un deux'])))\n"
        "main(['train', '--help'])\n"
    )
    result = run_python(tmp_path, "-c", code, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1\nusage: python -m rnnfast.seq2seq train [options]\n")
