"""PDF sources (embedpipe/sources/pdf.py): text page by page with its metadata; encrypted,
corrupt and text-less files are record errors naming the file."""

from __future__ import annotations

from pathlib import Path

from tests.sourcekit import docs, errors, source


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal, valid PDF written by hand: one Helvetica text line per page."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>"]
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R"
            f" /Resources << /Font << /F1 {font} 0 R >> >> >>"
        )
        objects.append(
            f"<< /Length {len(stream)} >>\nstream\n{stream.decode('latin-1')}\nendstream"
        )
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    if title:
        objects.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted(pdf: bytes, path: Path) -> Path:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    with path.open("wb") as f:
        writer.write(f)
    return path


def test_pdf_text_is_read_page_by_page_with_page_count(tmp_path: Path) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    (root / "manual.pdf").write_bytes(make_pdf(["Install the pump", "Replace the filter"], "Pump"))
    [doc] = docs(source(root))
    assert doc.id == "manual.pdf"
    assert "Install the pump" in doc.text and "Replace the filter" in doc.text
    assert doc.text.index("pump") < doc.text.index("filter")
    source_path = f"{root}/manual.pdf"
    assert doc.metadata == {
        "path": "manual.pdf",
        "source": source_path,
        "pages": 2,
        "title": "Pump",
    }


def test_encrypted_pdf_is_a_record_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    encrypted(make_pdf(["secret plans"]), root / "locked.pdf")
    (root / "open.pdf").write_bytes(make_pdf(["public notes"]))
    items = list(source(root))
    [err] = errors(items)
    assert err.record == "locked.pdf" and "encrypted PDF" in err.reason
    assert [d.id for d in docs(items)] == ["open.pdf"]


def test_corrupt_pdf_is_a_record_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    (root / "broken.pdf").write_bytes(make_pdf(["fine"])[:60])
    [err] = errors(source(root))
    assert err.record == "broken.pdf" and "not a readable PDF" in err.reason


def test_pdf_without_text_says_it_needs_ocr(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    root = tmp_path / "pdfs"
    root.mkdir()
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    with (root / "scan.pdf").open("wb") as f:
        writer.write(f)
    [err] = errors(source(root))
    assert err.record == "scan.pdf" and "OCR" in err.reason
