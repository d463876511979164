"""Turning an uploaded file into plain text for file_search: text, code, HTML, JSON, PDF, DOCX."""

import codecs
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from xml.etree import ElementTree

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

TEXT_EXTENSIONS = frozenset(
    {".txt", ".md", ".markdown", ".tex"}  # prose
    | {".c", ".h", ".cpp", ".hpp", ".cs", ".java", ".go", ".rs"}  # compiled code
    | {".py", ".rb", ".php", ".sh", ".js", ".ts", ".css"}  # scripts and style sheets
)
"""Plain text and source code, read as they are."""

DOCX_XML_LIMIT = 128 * 1024 * 1024
"""Most bytes of `word/document.xml` read, so a zip bomb fails instead of filling memory."""


class ParseError(Exception):
    """A file that cannot be turned into text; `message` is safe to show the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFile(ParseError):
    """A file type that file_search does not read."""


class InvalidFile(ParseError):
    """A supported file type whose bytes cannot be read."""


def parse(data: bytes, filename: str) -> str:
    """The plain text of a file, chosen by the extension of `filename` (any case).

    Raises:
        UnsupportedFile: the extension is not one file_search reads.
        InvalidFile: the bytes are corrupt, not text, or hold no text at all.
    """
    _, dot, suffix = filename.rpartition(".")
    extension = f".{suffix.lower()}" if dot else ""
    reader = _READERS.get(extension, _decode if extension in TEXT_EXTENSIONS else None)
    if reader is None:
        shown = extension or "none"  # OpenAI's wording
        raise UnsupportedFile(f"Files with extensions [{shown}] are not supported for retrieval.")
    text = _normalise(reader(data))
    if not text.strip():
        raise InvalidFile("The file contains no text.")
    return text


def _normalise(text: str) -> str:
    """Text without NULs, trailing spaces, or more than two blank lines in a row."""
    lines = [line.rstrip() for line in text.replace("\x00", "").splitlines()]
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip("\n")


def _decode(data: bytes) -> str:
    """UTF-8 (with or without a BOM) or UTF-16 with a BOM; anything else is not text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise InvalidFile(f"The file is not valid UTF-8 or UTF-16 text ({error.reason}).") from None
    if "\x00" in text:
        raise InvalidFile("The file holds binary data, not text.")
    return text


class _VisibleText(HTMLParser):
    """The text a browser shows: a line per block element, a tab between table cells."""

    HIDDEN = frozenset({"script", "style", "template"})
    SPACED = frozenset(
        {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "pre", "blockquote", "table"}
    )
    """Blocks set apart by a blank line, as a browser's margins set them apart."""
    BLOCKS = (
        SPACED
        | {"address", "article", "aside", "figure", "figcaption", "footer", "form", "header"}
        | {"main", "nav", "section", "div", "title", "br", "hr", "li", "dt", "dd", "tr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        self._tag(tag, +1)

    def handle_endtag(self, tag: str) -> None:
        self._tag(tag, -1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        if tag in self.BLOCKS:  # <br/>, <hr/>
            self._break(1)

    def _tag(self, tag: str, step: int) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden + step)
        elif tag == "pre":
            self.pre = max(0, self.pre + step)
        if tag in self.BLOCKS:
            self._break(2 if tag in self.SPACED else 1)
        elif tag in {"td", "th"} and step > 0 and self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            if not self.parts[-1].endswith("\n"):
                self.parts.append("\t")

    def _break(self, lines: int) -> None:
        """End the line, with `lines - 1` blank lines after it at least (none at the start)."""
        if not self.parts:
            return
        last = self.parts[-1]
        ending = len(last) - len(last.rstrip("\n"))
        if ending == len(last):
            self.parts[-1] = "\n" * max(lines, ending)
        elif ending < lines:
            self.parts.append("\n" * (lines - ending))

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith(("\n", "\t")):
                data = data.lstrip()
        if data:
            self.parts.append(data)


def _html(data: bytes) -> str:
    parser = _VisibleText()
    parser.feed(_decode(data))
    parser.close()
    return "".join(parser.parts)


def _json(data: bytes) -> str:
    """Pretty-printed, so that chunks split between lines."""
    try:
        return json.dumps(json.loads(_decode(data)), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError) as error:
        raise InvalidFile(f"The file is not valid JSON: {error}") from None


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_MARKS = {f"{_W}tab": "\t", f"{_W}br": "\n", f"{_W}cr": "\n", f"{_W}noBreakHyphen": "-"}


def _docx(data: bytes) -> str:
    """Paragraphs of `word/document.xml` (table cells and text boxes included), one a line."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, archive.open("word/document.xml") as f:
            xml = f.read(DOCX_XML_LIMIT + 1)
        if len(xml) > DOCX_XML_LIMIT:
            raise InvalidFile("The document is too large to read.")
        root = ElementTree.fromstring(xml)
    # KeyError: no such member; RuntimeError: an encrypted member; NotImplementedError: an
    # unknown compression method.
    except (
        zipfile.BadZipFile,
        zlib.error,
        KeyError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        ElementTree.ParseError,
    ):
        raise InvalidFile("The file is not a readable DOCX document.") from None
    parts: list[str] = []
    stack = [root]
    while stack:
        element = stack.pop()
        if element.tag == f"{_W}p":
            parts.append("\n")
        elif element.tag == f"{_W}r":  # only a run's own children: w:tab also sets tab stops
            for child in element:
                if child.tag == f"{_W}t":
                    parts.append(child.text or "")
                elif child.tag in _MARKS:
                    parts.append(_MARKS[child.tag])
        # Word writes a text box twice (DrawingML and a VML fallback): read the first only.
        stack.extend(reversed([child for child in element if child.tag != _FALLBACK]))
    return "".join(parts)


def _pdf(data: bytes) -> str:
    """Every page's text, pages apart by a blank line.

    pypdf's default ("plain") extraction is used, not `extraction_mode="layout"`: on typeset
    prose, layout mode pads justified lines with double spaces and right-aligned headers and
    page numbers with runs of a hundred spaces, where plain mode gives clean reading order.
    """
    try:
        reader = PdfReader(io.BytesIO(data))  # tries the empty user password itself
        return "\n\n".join(page.extract_text() for page in reader.pages)
    except FileNotDecryptedError:
        raise InvalidFile("The PDF is encrypted with a password.") from None
    except DependencyError:  # AES needs pypdf's optional `cryptography`
        raise InvalidFile("The PDF is encrypted in a way this server cannot read.") from None
    # Broken PDFs make pypdf raise more than its own errors (its docs say so).
    except (
        PyPdfError,
        ValueError,
        LookupError,
        TypeError,
        AttributeError,
        RecursionError,
    ):
        raise InvalidFile("The file is not a readable PDF document.") from None


_READERS: dict[str, Callable[[bytes], str]] = {
    ".html": _html,
    ".htm": _html,
    ".json": _json,
    ".docx": _docx,
    ".pdf": _pdf,
}
