"""Parsing uploads into text: each supported type, and the unsupported and unreadable ones."""

import codecs
import io
import json
import zipfile

import pytest
from pypdf import PdfWriter

from services.file_indexer.parsing import InvalidFile, ParseError, UnsupportedFile, parse

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels"'
    ' ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    "</Types>"
)
RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="word/document.xml" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/officeDocument"/>'
    "</Relationships>"
)


def docx(body: str) -> bytes:
    """A minimal valid DOCX whose document body is `body` (WordprocessingML, prefix `w`)."""
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{W}" xmlns:mc="{MC}"><w:body>{body}</w:body></w:document>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("word/document.xml", document)
    return buffer.getvalue()


def paragraph(*runs: str) -> str:
    return "<w:p>" + "".join(f"<w:r>{run}</w:r>" for run in runs) + "</w:p>"


def pdf(*pages: str) -> bytes:
    """A minimal valid PDF: each page's lines set in Helvetica, with a correct xref table."""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",  # the page tree, once the pages are numbered
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        shown = " 0 -16 Td ".join(f"({line}) Tj" for line in text.split("\n"))
        stream = f"BT /F1 12 Tf 72 720 Td {shown} ET"
        resources = "<< /Font << /F1 3 0 R >> >>"
        contents = len(objects) + 2
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources {resources}"
            f" /Contents {contents} 0 R >>"
        )
        kids.append(f"{len(objects)} 0 R")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    trailer = f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return bytes(out + trailer.encode())


def encrypted(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def invalid(data: bytes, filename: str) -> str:
    with pytest.raises(InvalidFile) as caught:
        parse(data, filename)
    return caught.value.message


@pytest.mark.parametrize(
    "filename", ["notes.txt", "README.md", "main.PY", "lib.rs", "App.Java", "x.markdown", "a.tex"]
)
def test_text_and_code_are_read_as_they_are(filename: str) -> None:
    source = "def f(x):\n    return x  # ünïcode ✓\n"

    assert parse(source.encode(), filename) == source.rstrip("\n")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_text_is_decoded_from_utf8_or_utf16_with_a_bom(encoding: str) -> None:
    data = "Grüße, 世界".encode(encoding)
    if encoding.startswith("utf-16-"):  # the BOM the plain "utf-16" codec writes itself
        data = "\ufeff".encode(encoding) + data

    assert parse(data, "greeting.txt") == "Grüße, 世界"


def test_text_in_another_encoding_is_invalid() -> None:
    message = invalid("Grüße".encode("latin-1"), "latin.txt")

    assert "UTF-8 or UTF-16" in message


@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"text\x00with a NUL", "ab".encode("utf-32")]
)
def test_binary_content_in_a_text_file_is_invalid(data: bytes) -> None:
    invalid(data, "disguised.txt")


@pytest.mark.parametrize("data", [b"", b"  \n\n\t\n", codecs.BOM_UTF16_LE])
def test_a_file_without_text_is_invalid(data: bytes) -> None:
    assert invalid(data, "empty.md") == "The file contains no text."


def test_text_is_normalised() -> None:
    data = b"\n\ntitle   \r\nbody\t\r\n\r\n\r\n\r\n\r\n\r\nend\n\n"

    assert parse(data, "a.txt") == "title\nbody\n\n\nend"


UNSUPPORTED = ["image.png", "photo.JPG", "data.csv", "sheet.xlsx", "bundle.zip", "old.doc"]
UNSUPPORTED += ["deck.pptx", "archive.tar.gz", "weird.xyz", "README", "ends-with-dot."]


@pytest.mark.parametrize("filename", UNSUPPORTED)
def test_other_types_are_unsupported(filename: str) -> None:
    with pytest.raises(UnsupportedFile) as caught:
        parse(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", filename)

    assert "are not supported for retrieval" in caught.value.message
    assert isinstance(caught.value, ParseError)


@pytest.mark.parametrize("filename", ["menu.HTML", "menu.htm"])
def test_html_gives_the_visible_text_only(filename: str) -> None:
    page = """<!doctype html>
    <html><head><title>Fish &amp; Chips</title>
    <style>body { color: red }</style><script>var hidden = "<p>no</p>";</script></head>
    <body>
      <h1>Menu</h1>
      <p>Cod,
         haddock &amp;&nbsp;plaice &lt;fresh&gt;.<br>Served daily.</p>
      <ul><li>Peas</li><li><b>Mushy</b> peas</li></ul>
      <table><tr><th>Item</th><th>Price</th></tr><tr><td>Cod</td> <td>&#163;9</td></tr></table>
      <pre>  indented
    code</pre>
      <!-- a comment -->
    </body></html>"""

    text = parse(page.encode(), filename)

    assert text == (
        "Fish & Chips\n\nMenu\n\nCod, haddock & plaice <fresh>.\nServed daily.\n\nPeas\n"
        "Mushy peas\n\nItem\tPrice\nCod\t£9\n\n  indented\n    code"
    )


def test_json_is_validated_and_pretty_printed() -> None:
    text = parse(b'{"name":"caf\\u00e9","tags":["a","b"]}', "doc.json")

    assert text == '{\n  "name": "café",\n  "tags": [\n    "a",\n    "b"\n  ]\n}'
    assert json.loads(text) == {"name": "café", "tags": ["a", "b"]}


@pytest.mark.parametrize("data", [b'{"a": 1,}', b"", b"[" * 100_000, b"{'single': 'quotes'}"])
def test_invalid_json_is_invalid(data: bytes) -> None:
    invalid(data, "broken.json")


def test_docx_paragraphs_runs_tabs_breaks_and_table_cells() -> None:
    tab_stops = '<w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>'
    cell = "<w:tc>{}</w:tc>"
    table = (
        "<w:tbl><w:tr>"
        + cell.format(paragraph("<w:t>Name</w:t>"))
        + cell.format(paragraph("<w:t>Qty</w:t>"))
        + "</w:tr></w:tbl>"
    )
    text_box = (
        "<mc:AlternateContent>"
        f"<mc:Choice Requires='wps'><w:txbxContent>{paragraph('<w:t>Boxed</w:t>')}"
        "</w:txbxContent></mc:Choice>"
        f"<mc:Fallback><w:txbxContent>{paragraph('<w:t>Boxed</w:t>')}</w:txbxContent>"
        "</mc:Fallback></mc:AlternateContent>"
    )
    body = (
        paragraph("<w:t>Hello</w:t>", '<w:t xml:space="preserve"> world</w:t>')
        + f"<w:p>{tab_stops}<w:r><w:t>a</w:t><w:tab/><w:t>b</w:t><w:br/><w:t>c</w:t></w:r></w:p>"
        + "<w:p><w:del><w:r><w:delText>gone</w:delText></w:r></w:del></w:p>"
        + table
        + paragraph("<w:t>See</w:t>", text_box)
        + paragraph("<w:t>&lt;end&gt;</w:t>")
    )

    text = parse(docx(body), "Report.DOCX")

    assert text == "Hello world\na\tb\nc\n\nName\nQty\nSee\nBoxed\n<end>"


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04 not really a zip",
        b"",
        docx("<w:p><w:r><w:t>unclosed</w:r></w:p>"),
        pdf("a PDF, not a DOCX"),
    ],
)
def test_unreadable_docx_is_invalid(data: bytes) -> None:
    invalid(data, "broken.docx")


def test_a_zip_without_a_document_is_invalid() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)

    assert "DOCX" in invalid(buffer.getvalue(), "empty.docx")


def test_an_empty_docx_is_invalid() -> None:
    assert invalid(docx(paragraph() * 3), "blank.docx") == "The file contains no text."


def test_pdf_text_is_extracted_page_by_page() -> None:
    data = pdf("Hello from a PDF.\nA second line.", r"Page \(two\) here.")

    text = parse(data, "paper.pdf")

    assert text == "Hello from a PDF.\nA second line.\n\nPage (two) here."


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4\nthis is not a PDF",
        pdf("truncated half way")[:150],
        b"",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    ],
)
def test_corrupt_pdf_is_invalid(data: bytes) -> None:
    assert invalid(data, "broken.pdf") == "The file is not a readable PDF document."


def test_password_protected_pdf_is_invalid() -> None:
    data = encrypted(pdf("secret"), user_password="swordfish")

    assert invalid(data, "locked.pdf") == "The PDF is encrypted with a password."


def test_pdf_with_only_an_owner_password_is_read() -> None:
    data = encrypted(pdf("Open to read, closed to edit."), user_password="")

    assert parse(data, "restricted.pdf") == "Open to read, closed to edit."


def test_pdf_without_text_is_invalid() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)

    assert invalid(buffer.getvalue(), "scan.pdf") == "The file contains no text."
