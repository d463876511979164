"""What the executor keeps of a cell's output: its start and its end, within a limit."""

from services.tool_executor.sandbox import CappedText


def test_short_output_is_kept_whole() -> None:
    kept = CappedText(100)
    for part in ("a" * 10, "b" * 20, "c" * 30):
        kept.append(part)
    assert kept.text() == "a" * 10 + "b" * 20 + "c" * 30


def test_a_flood_keeps_its_start_and_its_end_and_says_what_was_left_out() -> None:
    kept = CappedText(100)
    kept.append("START" + "x" * 45)
    for _ in range(10_000):
        kept.append("y" * 100)
    kept.append("z" * 45 + "END")
    text = kept.text()
    assert text.startswith("START" + "x" * 45)
    assert text.endswith("y" * 2 + "z" * 45 + "END")
    total = 50 + 10_000 * 100 + 48
    assert f"[... {total - 100} characters of output left out ...]" in text
    assert len(text) < 200
