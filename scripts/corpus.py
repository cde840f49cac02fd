#!/usr/bin/env python3
"""Build real text corpora offline from the Python standard library's own documentation.

    python scripts/corpus.py docs DIR [--modules N] [--scale K]   # one Markdown file per module
    python scripts/corpus.py records FILE.jsonl [--limit N]       # one record per function/class docstring

`docs` gives long, multi-paragraph documents (packed chunks); `records` gives short records of
very varied length. Both are deterministic for a given Python version.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pydoc
import warnings
from collections.abc import Iterator
from pathlib import Path

MODULES = [
    "json",
    "argparse",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "logging",
    "csv",
    "sqlite3",
    "subprocess",
    "threading",
    "asyncio",
    "unittest",
    "datetime",
    "re",
    "typing",
    "dataclasses",
    "email",
    "http.client",
    "urllib.request",
    "zipfile",
    "tarfile",
    "shutil",
    "tempfile",
    "socket",
    "ssl",
    "hashlib",
    "random",
    "statistics",
    "decimal",
    "fractions",
    "textwrap",
    "string",
    "difflib",
    "heapq",
    "bisect",
    "contextlib",
    "abc",
    "enum",
    "inspect",
    "pickle",
    "copy",
    "pprint",
    "queue",
    "sched",
    "selectors",
    "signal",
    "mmap",
    "codecs",
    "unicodedata",
    "locale",
    "gettext",
    "calendar",
    "zlib",
    "gzip",
    "bz2",
    "lzma",
    "configparser",
    "tomllib",
    "xml.etree.ElementTree",
    "html.parser",
    "base64",
    "binascii",
    "struct",
    "array",
    "weakref",
    "types",
    "operator",
    "traceback",
    "warnings",
    "io",
    "os",
    "glob",
    "fnmatch",
    "filecmp",
    "stat",
    "platform",
    "ctypes",
    "concurrent.futures",
    "multiprocessing",
    "timeit",
    "cProfile",
    "pdb",
    "doctest",
    "ipaddress",
    "uuid",
    "secrets",
    "hmac",
    "getopt",
    "shlex",
    "cmd",
]


def _modules(limit: int) -> Iterator[object]:
    for name in MODULES[:limit]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield importlib.import_module(name)
        except ImportError:
            continue


def module_doc(module: object) -> str:
    """A module's documentation as plain text, as `pydoc` renders it."""
    return pydoc.render_doc(module, renderer=pydoc.plaintext)


def write_docs(out: Path, modules: int = 40, scale: int = 1) -> int:
    """One Markdown file per module (repeated `scale` times under copy-N/ folders); returns files written."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for module in _modules(modules):
        text = f"# {module.__name__}\n\n" + module_doc(module)  # type: ignore[attr-defined]
        for copy in range(scale):
            folder = out if scale == 1 else out / f"copy-{copy}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{module.__name__}.md").write_text(text, encoding="utf-8")  # type: ignore[attr-defined]
            n += 1
    return n


def docstring_records(modules: int = 80) -> Iterator[dict[str, str]]:
    """Records {id, text, module} from every documented public function and class."""
    for module in _modules(modules):
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 20:
                yield {"id": f"{module.__name__}.{name}", "text": doc, "module": module.__name__}  # type: ignore[attr-defined]


def write_records(path: Path, limit: int | None = None, repeat: int = 1) -> int:
    """A JSONL file of docstring records; returns the number of records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for copy in range(repeat):
            for i, rec in enumerate(docstring_records()):
                if limit is not None and i >= limit:
                    break
                if repeat > 1:
                    rec = {**rec, "id": f"{rec['id']}@{copy}"}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    docs = sub.add_parser("docs")
    docs.add_argument("out", type=Path)
    docs.add_argument("--modules", type=int, default=40)
    docs.add_argument("--scale", type=int, default=1)
    records = sub.add_parser("records")
    records.add_argument("out", type=Path)
    records.add_argument("--limit", type=int, default=None)
    records.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "docs":
        print(f"{write_docs(args.out, args.modules, args.scale)} documents in {args.out}")
    else:
        print(f"{write_records(args.out, args.limit, args.repeat)} records in {args.out}")


if __name__ == "__main__":
    main()
