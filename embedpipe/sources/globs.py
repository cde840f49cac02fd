"""Include/exclude globs for a directory source, matched like .gitignore patterns.

Patterns are matched with `fnmatch` one path segment at a time against the POSIX path relative to
the source root, so `*` never crosses a `/`:

- `*.md` (no slash) matches a file or directory name at any depth;
- `docs/*.md` or `/README.md` (a slash before the end) is anchored at the root;
- `**` matches any number of directories (`docs/**/*.md`, `**/drafts`);
- a trailing `/` (`build/`) matches directories only;
- a pattern that matches a directory covers everything under it.

Matching is case-sensitive. There is no `!` negation: narrow with `include`, then cut with `exclude`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True, slots=True)
class Glob:
    """One parsed pattern: its segments, and whether it may only match a directory."""

    segments: tuple[str, ...]
    dir_only: bool

    @classmethod
    def parse(cls, pattern: str) -> Glob:
        dir_only = pattern.endswith("/")
        body = pattern.strip().strip("/") if dir_only else pattern.strip()
        anchored = "/" in body
        segments = tuple(s for s in body.lstrip("/").split("/") if s)
        return cls(segments if anchored else ("**", *segments), dir_only)

    def matches(self, parts: Sequence[str], is_dir: bool) -> bool:
        """Whether the path `parts` (a file, or a directory when `is_dir`) matches this glob."""
        if self.dir_only and not is_dir:
            return False
        return _match(self.segments, tuple(parts))


def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _match(rest, parts[1:])


@dataclass(frozen=True, slots=True)
class PathFilter:
    """Which relative paths a directory source reads: those included and not excluded."""

    include: tuple[Glob, ...] = ()
    exclude: tuple[Glob, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> PathFilter:
        return cls(
            tuple(Glob.parse(p) for p in include if p.strip()),
            tuple(Glob.parse(p) for p in exclude if p.strip()),
        )

    def skips_dir(self, rel_dir: str) -> bool:
        """True when a whole directory is excluded, so the walk need not enter it."""
        parts = rel_dir.split("/")
        return any(g.matches(parts, is_dir=True) for g in self.exclude)

    def wants(self, rel_file: str) -> bool:
        """True when a file is included (or no include is given) and neither it nor a parent is excluded."""
        parts = rel_file.split("/")
        if _covered(self.exclude, parts):
            return False
        return not self.include or _covered(self.include, parts)


def _covered(globs: Sequence[Glob], parts: list[str]) -> bool:
    """A glob matches the file itself or one of the directories above it."""
    if any(g.matches(parts, is_dir=False) for g in globs):
        return True
    return any(g.matches(parts[:i], is_dir=True) for g in globs for i in range(1, len(parts)))
