"""The index the RAG tests share: one document per stdlib function (`records`), real questions
and the function each names (`QUESTIONS`), a run config on a sink (`config`); conftest.py's
`built` fixture embeds them into each kind of sink."""

from __future__ import annotations

import collections
import difflib
import functools
import glob
import heapq
import json
import random
import re
import shutil
import statistics
import textwrap
import urllib.parse
from collections.abc import Iterable
from typing import Any

from embedpipe.config import RunConfig, load_config

FUNCTIONS = [
    json.dumps,
    json.loads,
    textwrap.dedent,
    textwrap.wrap,
    heapq.nlargest,
    heapq.heappush,
    shutil.rmtree,
    shutil.copyfile,
    random.shuffle,
    random.choice,
    urllib.parse.urlsplit,
    urllib.parse.quote,
    functools.lru_cache,
    functools.partial,
    difflib.get_close_matches,
    statistics.median,
    statistics.stdev,
    glob.glob,
    re.sub,
    re.split,
    collections.namedtuple,
]


QUESTIONS = {
    "How do I convert a Python object into a JSON formatted string?": "json.dumps",
    "remove common leading whitespace from every line of a text": "textwrap.dedent",
    "find the n largest elements in a dataset": "heapq.nlargest",
    "recursively delete a whole directory tree": "shutil.rmtree",
    "shuffle a list in place": "random.shuffle",
    "split a URL into scheme, network location, path and query": "urllib.parse.urlsplit",
    "cache the results of recent calls of a function": "functools.lru_cache",
    "get a list of the best close matches for a word": "difflib.get_close_matches",
    "return the median, the middle value, of numeric data": "statistics.median",
    "list the pathnames matching a shell-style wildcard pattern": "glob.glob",
}


def records() -> list[dict[str, Any]]:
    """One document per stdlib function: its docstring, its module, name, position in
    FUNCTIONS and a date (`added`, 2024-01-01 onwards) in the metadata."""
    out = []
    for position, fn in enumerate(FUNCTIONS):
        module = fn.__module__.replace("posixpath", "os.path")
        name = f"{module}.{fn.__name__}"
        metadata = {
            "module": module,
            "name": name,
            "position": position,
            "added": f"2024-01-{position + 1:02d}",
        }
        out.append({"id": name, "text": f"{name}\n\n{fn.__doc__}", "metadata": metadata})
    return out


def names(positions: Iterable[int]) -> set[str]:
    """The documents at these positions of FUNCTIONS (the hand-computed answer of a filter)."""
    return {r["id"] for r in records() if r["metadata"]["position"] in set(positions)}


def config(uri: str) -> RunConfig:
    return load_config(
        None,
        {
            "sink": {"uri": uri, "collection": "docs"},
            "model": {"precision": "fp32", "device": "cpu"},
        },
    )
