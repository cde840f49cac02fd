"""Directory source: every matching text or PDF file under a root, one Document per file."""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path

from embedpipe.config import SourceConfig
from embedpipe.errors import SourceError
from embedpipe.sources.base import Files, Source
from embedpipe.sources.globs import PathFilter
from embedpipe.sources.pdf import pdf_text
from embedpipe.types import EMPTY, Document, RecordError

DEFAULT_EXTENSIONS = (".txt", ".md", ".rst", ".html", ".htm", ".pdf")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIX = ".pdf"
BINARY_SNIFF_BYTES = 8192


def open_dir(path: str, cfg: SourceConfig) -> Source:
    """A Source over the files under `path`, listed once up front so `total` is exact."""
    if not os.path.isdir(path):
        raise SourceError(f"No directory at {path}: pass an existing directory for a dir: source")
    files = list_files(path, cfg.extensions, PathFilter.of(cfg.include, cfg.exclude))
    root = os.path.abspath(path)
    follow = cfg.follow_symlinks
    skipped = tuple(e for e in (outside_link(path, rel, follow) for rel in files) if e is not None)
    kept = [rel for rel in files if rel not in {e.record for e in skipped}]
    return Source(
        uri=path,
        kind="dir",
        read=lambda: read_dir(path, extensions=cfg.extensions, files=files, follow_symlinks=follow),
        total=len(files),
        files=Files(
            path,
            tuple(os.path.join(root, rel) for rel in kept),
            tuple(kept),
            sizes=tuple(_size(os.path.join(root, rel)) for rel in kept),
            skipped=skipped,
        ),
    )


def outside_link(root: str | Path, rel: str, follow_symlinks: bool = False) -> RecordError | None:
    """Why `rel` is not read when a symbolic link (it or a folder above it) leads outside `root`,
    unless `follow_symlinks`; None when it is read. A link can name any file on the machine, and
    a source folder must not index what lies beyond it unless asked to."""
    if follow_symlinks:
        return None
    target, real_root = os.path.realpath(os.path.join(root, rel)), os.path.realpath(root)
    if os.path.commonpath([target, real_root]) == real_root:
        return None
    return RecordError(
        str(root),
        rel,
        f"skipped: symbolic link to {target}, outside the source folder {real_root}; "
        "set source.follow_symlinks: true to read it",
        excluded=True,
    )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def list_files(
    root: str | Path,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    paths: PathFilter | None = None,
) -> list[str]:
    """Sorted POSIX paths, relative to `root`, of the visible files with one of `extensions`
    that `paths` (include/exclude globs) wants; excluded directories are not walked."""
    wanted = suffixes(extensions)
    paths = paths or PathFilter()
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(os.path.relpath(dirpath, root))
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and not paths.skips_dir((rel_dir / d).as_posix())
        ]
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if not name.startswith(".") and name.lower().endswith(wanted) and paths.wants(rel):
                found.append(rel)
    return sorted(found)


def suffixes(extensions: Sequence[str]) -> tuple[str, ...]:
    """Extensions lower-cased, each with its leading dot ("TXT" -> ".txt")."""
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def read_dir(
    root: str | Path,
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    files: Sequence[str] | None = None,
    follow_symlinks: bool = False,
) -> Iterator[Document | RecordError]:
    """Each file under `root` (or each of `files`, relative to it) as a Document or RecordError;
    `include`/`exclude` are globs on the relative path (see embedpipe.sources.globs); a link out
    of `root` is a RecordError unless `follow_symlinks`."""
    if files is None:
        files = list_files(root, extensions, PathFilter.of(include, exclude))
    for rel in files:
        yield read_file(root, rel, follow_symlinks)


def read_file(root: str | Path, rel: str, follow_symlinks: bool = False) -> Document | RecordError:
    """One file as a Document, its id the POSIX path relative to `root`; a symbolic link out of
    `root` is checked when the file is read (not only when listed) and skipped."""
    if (outside := outside_link(root, rel, follow_symlinks)) is not None:
        return outside
    try:
        data = (Path(root) / rel).read_bytes()
    except OSError as exc:
        return RecordError(str(root), rel, f"cannot read file: {exc.strerror or exc}")
    return file_document(root, rel, data)


def file_document(root: str | Path, rel: str, data: bytes) -> Document | RecordError:
    """The Document a file's bytes hold (text, HTML or PDF by suffix), or why they hold none."""
    if rel.lower().endswith(PDF_SUFFIX):
        return _pdf_document(root, rel, data)
    try:
        text = decode_text(data)
    except ValueError as exc:
        return RecordError(str(root), rel, str(exc))
    if rel.lower().endswith(HTML_SUFFIXES):
        text = html_to_text(text)
    if not text.strip():
        return RecordError(str(root), rel, EMPTY)
    return Document(id=rel, text=text, metadata=_where(root, rel), source=str(root))


def _pdf_document(root: str | Path, rel: str, data: bytes) -> Document | RecordError:
    try:
        text, info = pdf_text(data)
    except ValueError as exc:
        return RecordError(str(root), rel, str(exc))
    return Document(id=rel, text=text, metadata={**_where(root, rel), **info}, source=str(root))


def _where(root: str | Path, rel: str) -> dict[str, str]:
    """A file's metadata: its path in the folder, and as `source` the path it was read from."""
    return {"path": rel, "source": f"{str(root).rstrip('/')}/{rel}"}


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (a BOM is dropped); ValueError with the reason when the bytes are not text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError("UTF-16 text, not UTF-8: re-save the file as UTF-8")
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise ValueError("binary file, not text")
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + len(data) - len(body)
        raise ValueError(f"not UTF-8 text (invalid byte at offset {offset})") from None


# Elements whose content is never text a reader sees.
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
# Block elements: their edges become a blank line (paragraph-like) or a line break (the rest).
_PARAGRAPH = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "dl",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "ul",
    }
)
_LINE = frozenset({"div", "li", "tr", "dd", "dt", "figcaption", "caption"})
_CELL = frozenset({"td", "th"})
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")  # HTML whitespace only: NBSP and friends survive


class _TextExtractor(HTMLParser):
    """Collects the readable text of an HTML page: block elements become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "body":
            self._skip = 0  # an unclosed <head> ends here
        elif tag == "pre":
            self._pre += 1
        self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        self._break(tag)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            data = _HTML_SPACE.sub(" ", data)
            if not self.parts or self.parts[-1].endswith(("\n", " ")):
                data = data.lstrip(" ")
        if data:
            self.parts.append(data)

    def _break(self, tag: str) -> None:
        if self._skip:
            return
        if tag == "br":
            self._trim_spaces()
            self.parts.append("\n")
        elif tag in _PARAGRAPH or tag in _LINE:
            self._trim_spaces()
            wanted = 2 if tag in _PARAGRAPH else 1
            missing = wanted - self._trailing_newlines()
            if missing > 0:
                self.parts.append("\n" * missing)
        elif tag in _CELL and self.parts and not self.parts[-1].endswith((" ", "\n")):
            self.parts.append(" ")

    def _trim_spaces(self) -> None:
        while self.parts and self.parts[-1].endswith(" "):
            self.parts[-1] = self.parts[-1].rstrip(" ")
            if not self.parts[-1]:
                self.parts.pop()

    def _trailing_newlines(self) -> int:
        count = 0
        for part in reversed(self.parts):
            stripped = part.rstrip("\n")
            count += len(part) - len(stripped)
            if stripped:
                break
        return count


def html_to_text(markup: str) -> str:
    """The readable text of an HTML document: no scripts, styles or head; entities unescaped."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = re.sub(r"\n{3,}", "\n\n", "".join(parser.parts))
    return text.strip("\n ")
