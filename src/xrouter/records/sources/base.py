"""What every data source provides to the ingest: its files, items and records."""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xrouter.core.catalog import Catalog
from xrouter.core.errors import CatalogError, SourceFormatError
from xrouter.records.schema import Item, Record
from xrouter.records.tokens import count_message_tokens, count_tokens

__all__ = [
    "Origin",
    "PriceBook",
    "Source",
    "SourceBatch",
    "estimated_output_tokens",
    "read_csv",
    "read_jsonl",
    "reading",
]

# Output length assumed when a source kept no response text to count: a letter (and
# a little framing) for multiple choice, a short worked answer for everything else.
_ESTIMATED_OUTPUT = {"choice": 8}
_DEFAULT_ESTIMATED_OUTPUT = 256


def estimated_output_tokens(verifier: str | None) -> int:
    return _ESTIMATED_OUTPUT.get(verifier or "", _DEFAULT_ESTIMATED_OUTPUT)


@contextmanager
def reading(file: Path) -> Iterator[None]:
    """Turn any unexpected content error while reading ``file`` into one that names it.

    Each source checks what it knows to check; this catches the rest (a missing key,
    a number that is not one, bytes that are not UTF-8) so a malformed file never
    ends in a traceback.
    """
    try:
        yield
    except UnicodeDecodeError as exc:
        raise SourceFormatError(
            f"{file}: {_first_bad_byte(file)} is not UTF-8 text; fetch the file again"
        ) from exc
    except (KeyError, ValueError, TypeError, IndexError, SyntaxError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise SourceFormatError(
            f"{file}: unexpected content ({type(exc).__name__}: {what}); fetch the "
            "file again"
        ) from exc


def _first_bad_byte(file: Path) -> str:
    """Where ``file`` (gzip-compressed or not) stops being UTF-8: a decoding
    error in a stream reports its place in the chunk being read, not the file."""
    packed = file.name.endswith(".gz")
    try:
        data = gzip.decompress(file.read_bytes()) if packed else file.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = "of its decompressed text " if packed else ""
        return f"byte {exc.start:,} {where}".rstrip()
    except (OSError, EOFError):
        pass
    return "some byte"


def read_csv(file: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with the line each starts on; a cut file is refused.

    Fields may span lines (prompts do), so the line is the file's own line number,
    not the row count. A truncated file is refused rather than read with gaps: a
    row with fewer fields than the header, a quoted field the file ends inside,
    and a header with no rows after it.
    """
    csv.field_size_limit(2**31 - 1)
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, strict=True)
        header = next(reader, None)
        if not header:
            raise SourceFormatError(f"{file} is empty; fetch the file again")
        start = reader.line_num + 1
        rows = 0
        while True:
            try:
                fields = next(reader, None)
            except csv.Error as exc:
                what = (
                    "the file ends inside a quoted field"
                    if "end of data" in str(exc)
                    else f"malformed quoting ({exc})"
                )
                raise SourceFormatError(
                    f"{file}, line {start}: {what}; the file is truncated or "
                    "malformed, fetch it again"
                ) from exc
            if fields is None:
                break
            if len(fields) != len(header):
                raise SourceFormatError(
                    f"{file}, line {start}: a row of {len(fields)} fields where the "
                    f"header has {len(header)}; the file is truncated or malformed, "
                    "fetch it again"
                )
            rows += 1
            yield start, dict(zip(header, fields, strict=True))
            start = reader.line_num + 1
        if rows == 0:
            raise SourceFormatError(
                f"{file} has a header but no rows; the file is truncated, fetch it "
                "again"
            )


def literal(text: str, file: Path, line: int | str, what: str) -> Any:
    """A Python literal from a source file; a malformed one is named."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise SourceFormatError(
            f"{file}, line {line}: {what} is not a Python literal "
            f"({type(exc).__name__}); fetch the file again"
        ) from exc


def read_jsonl(file: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; a bad line is named in the error.

    Lines are split on newlines only: JSON strings may hold other Unicode line
    separators, which ``str.splitlines`` would cut at.
    """
    rows = []
    text = file.read_text(encoding="utf-8")
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceFormatError(
                f"{file}, line {line_no}: malformed JSON ({exc.msg}); fetch the file "
                "again"
            ) from exc
        if not isinstance(row, dict):
            raise SourceFormatError(f"{file}, line {line_no}: not a JSON object")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Origin:
    """Where a source's files are published: a public GitHub repository at a commit."""

    repo: str
    commit: str
    patterns: tuple[str, ...]


@dataclass
class SourceBatch:
    """Items and records read from one source file."""

    items: list[Item] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


class PriceBook:
    """Prices records with the catalog, naming the offending file on a miss."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._input_tokens: dict[str, int] = {}

    def input_tokens(self, item: Item) -> int:
        """Tokens of the item's prompt, counted once however many models saw it."""
        count = self._input_tokens.get(item.item_id)
        if count is None:
            count = count_message_tokens(list(item.messages))
            self._input_tokens[item.item_id] = count
        return count

    def model_id(self, name: str, file: Path) -> str:
        try:
            return self.catalog.resolve(name)
        except CatalogError as exc:
            raise CatalogError(
                f"{file}: model {name!r} has no model card, so its records cannot be "
                f"priced. {exc}"
            ) from exc

    def estimate(
        self,
        item: Item,
        model: str,
        response: str | None,
        score: float,
        *,
        score_origin: str,
        extracted: str | None = None,
        recorded_cost: float | None = None,
    ) -> Record:
        """A record whose usage is counted (or estimated) and priced here."""
        input_tokens = self.input_tokens(item)
        if response is not None:
            output_tokens, usage_origin = count_tokens(response), "counted"
        else:
            output_tokens = estimated_output_tokens(item.verifier)
            usage_origin = "estimated"
        if recorded_cost is None:
            cost = self.catalog.get(model).cost(input_tokens, output_tokens)
            cost_origin = "estimated"
        else:
            cost, cost_origin = recorded_cost, "recorded"
        return Record(
            item_id=item.item_id,
            model=model,
            response=response,
            extracted=extracted,
            score=score,
            score_origin=score_origin,  # type: ignore[arg-type]
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_origin=usage_origin,  # type: ignore[arg-type]
            cost_usd=cost,
            cost_origin=cost_origin,  # type: ignore[arg-type]
        )


class Source(ABC):
    """One public collection of recorded model outputs, read from a local copy."""

    name: ClassVar[str]
    folder: ClassVar[str]
    origins: ClassVar[tuple[Origin, ...]]

    @abstractmethod
    def files(self, root: Path) -> list[Path]:
        """The files this source reads under ``root``; raises if any is missing."""

    @abstractmethod
    def read(
        self, root: Path, prices: PriceBook, advance: Callable[[], None]
    ) -> Iterator[SourceBatch]:
        """Yield items and records, calling ``advance`` after each file."""

    def companions(self, root: Path) -> list[Path]:
        """Files of other sources this one reads where they are present (so a
        copy of the data that gains or loses them is read again)."""
        return []

    def fingerprint(self, root: Path) -> str:
        digest = hashlib.sha256()
        companions = self.companions(root)
        present = [file for file in companions if file.is_file()]
        for file in companions:  # whether each is there counts too
            digest.update(f"{file.relative_to(root)}:{file in present}\n".encode())
        for file in self.files(root) + present:
            try:
                stat = file.stat()
            except OSError as exc:  # a broken or looping link
                raise SourceFormatError(
                    f"{file} cannot be read ({exc.strerror}); fetch the file again"
                ) from exc
            digest.update(f"{file.relative_to(root)}:{stat.st_size}".encode())
            digest.update(f":{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    def glob(self, root: Path, relative: str, pattern: str) -> list[Path]:
        """The files matching ``pattern`` in a folder of the source; never none."""
        folder = root / self.folder / relative
        files = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if not files:
            raise SourceFormatError(
                f"{folder} holds no {pattern} files: point --from at a complete copy "
                "of the data (see `xrouter data pull`)"
            )
        return files

    def require(self, root: Path, relative: str) -> Path:
        path = root / self.folder / relative
        if not path.is_file():
            raise SourceFormatError(
                f"{path} is missing: the {self.name} source needs it. Point --from at "
                "a complete copy of the data (see `xrouter data pull`)"
            )
        return path
