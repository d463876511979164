"""Object ids: the hosted prefixes, 24 characters drawn uniformly from 62."""

import string
from collections import Counter

from services.core.ids import new_id


def test_ids_carry_the_prefix_and_24_characters_of_the_alphabet() -> None:
    run, file = new_id("run"), new_id("file")
    assert run.startswith("run_")
    assert len(run) == 28
    assert file.startswith("file-")
    assert len(file) == 29
    alphabet = set(string.ascii_letters + string.digits)
    assert set(run[4:]) <= alphabet
    assert set(file[5:]) <= alphabet


def test_ids_do_not_repeat_and_use_every_character_about_evenly() -> None:
    ids = [new_id("evt")[4:] for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(ids))  # 480,000 characters: about 7,742 of each
    assert len(counts) == 62
    expected = 20_000 * 24 / 62
    # A bias as small as the one `b % 62` over all 256 byte values would give (5 of 62
    # characters a quarter more often) is far outside this band; chance stays inside it.
    assert all(abs(n - expected) < 0.06 * expected for n in counts.values()), counts
