"""PDF files: their text page by page, with pypdf (imported only when a PDF is read)."""

from __future__ import annotations

import io
from typing import Any

PAGE_SEPARATOR = "\n\n"


def pdf_text(data: bytes) -> tuple[str, dict[str, Any]]:
    """The text of a PDF's pages joined by blank lines, and metadata (`pages`, `title` if set).

    ValueError with a reason a user can act on when the file is encrypted, corrupt or has no text.
    """
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not _unlocks_without_password(reader)
        pages = [] if locked else [page.extract_text() or "" for page in reader.pages]
        title = None if locked else _title(reader)
    except Exception as exc:  # pypdf raises many types on damaged files; one must not stop a run
        raise ValueError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    if locked:
        raise ValueError(
            "encrypted PDF: decrypt it first (e.g. qpdf --decrypt --password=PW in.pdf out.pdf)"
        )
    text = PAGE_SEPARATOR.join(p.strip() for p in pages if p.strip())
    if not text:
        raise ValueError(
            f"no extractable text in {len(pages)} page(s): a scanned PDF needs OCR first"
        )
    metadata: dict[str, Any] = {"pages": len(pages)}
    if title:
        metadata["title"] = title
    return text, metadata


def _unlocks_without_password(reader: Any) -> bool:
    """PDFs with only an owner password (print/copy restrictions) open with an empty user password."""
    from pypdf import PasswordType

    try:
        return reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except Exception:  # e.g. AES without the cryptography package: treat as locked
        return False


def _title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # a damaged info dictionary is not worth failing the document for
        return None
    return str(title).strip() or None if title else None
