"""Protein sequences from FASTA files.

Rules of :func:`parse_fasta` (and :func:`read_fasta`):

* every record starts with a ``>name description`` line; the name is the first word, the
  description the rest. A header without a name gets ``sequence_<n>``; repeated names get
  ``_2``, ``_3``, ... appended (warning). Lines starting with ``;`` are comments.
* sequence lines: whitespace and digits are dropped (numbered/blocked layouts), letters
  are upper-cased, gap characters ``-`` and ``.`` are removed (warning), a trailing ``*``
  (stop) is removed; a ``*`` inside a sequence or any other character is an error that
  names the record, line and column.
* one-letter codes: the 20 standard amino acids and ``X`` (unknown) are kept;
  ``U`` (selenocysteine) is read as ``C`` and ``O`` (pyrrolysine) as ``K``, the residues
  they derive from (as :mod:`.residue_constants` reads SEC and PYL in structures);
  the ambiguity codes ``B`` (D/N), ``Z`` (E/Q) and ``J`` (I/L) become ``X``. Each
  substitution is reported as a warning.
* records without sequence are skipped (warning); nucleotide (DNA/RNA) records (at least
  10 letters, at least 95% of them A, C, G, T, U or N) are skipped (warning); if nothing
  is left a :class:`SequenceError` says why.
* identical sequences (homo-oligomers) are all kept as separate records, in file order;
  :func:`unique_sequences` gives one record per distinct sequence.
* text that is not FASTA (binary data, a map, a PDB/mmCIF file, text without ``>``
  header lines, text before the first header) raises :class:`SequenceError`.

Warnings are appended to the ``warnings`` list when one is passed, else issued as
:class:`SequenceWarning`.
"""

from __future__ import annotations

import gzip
import os
import warnings as _warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError, SequenceError

__all__ = [
    "SequenceRecord", "SequenceWarning", "parse_fasta", "read_fasta", "format_fasta",
    "write_fasta", "unique_sequences", "STANDARD_AMINO_ACIDS", "SUBSTITUTIONS",
]

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# Non-standard one-letter codes and what they are read as.
SUBSTITUTIONS: dict[str, str] = {"U": "C", "O": "K", "B": "X", "Z": "X", "J": "X"}
_CODE_NAMES = {"U": "selenocysteine", "O": "pyrrolysine", "B": "Asx (D/N)",
               "Z": "Glx (E/Q)", "J": "Xle (I/L)"}
_NUCLEOTIDES = frozenset("ACGTUN")
_NUCLEOTIDE_MIN_LENGTH = 10
_NUCLEOTIDE_MIN_FRACTION = 0.95
_MAX_FILE_BYTES = 50 * 1024 * 1024
_STRUCTURE_PREFIXES = ("ATOM  ", "HETATM", "HEADER", "CRYST1", "REMARK", "MODEL ", "data_",
                       "loop_", "_atom_site", "_entry.id")


class SequenceWarning(UserWarning):
    """Something in a FASTA file was changed or skipped; the rest is used."""


@dataclass
class SequenceRecord:
    """One protein sequence: ``name`` (first word of the header), one-letter ``sequence``
    (upper case, the 20 standard letters and X), ``description`` (rest of the header)."""

    name: str
    sequence: str
    description: str = ""

    def __len__(self) -> int:
        return len(self.sequence)


def _warn(msg: str, sink: list[str] | None) -> None:
    if sink is not None:
        sink.append(msg)
    else:
        _warnings.warn(msg, SequenceWarning, stacklevel=3)


def _decode(data: bytes, source: str) -> str:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SequenceError(f"{source}: damaged gzip file ({exc})") from exc
    if len(data) >= 212 and data[208:212] == b"MAP ":
        raise SequenceError(f"{source} is a cryo-EM map (MRC) file, not a FASTA sequence file")
    head = data[:8192]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    if b"\0" in head or controls > 0.01 * len(head):
        raise SequenceError(f"{source} is a binary file, not a FASTA text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # e.g. accents in headers; letters are checked later


def parse_fasta(text: str | bytes, source: str = "<string>",
                warnings: list[str] | None = None) -> list[SequenceRecord]:
    """Protein sequences of a FASTA text (see the module docstring for the rules).

    ``source`` names the input in messages. Raises :class:`SequenceError` if the text
    is not FASTA or holds no protein sequence.
    """
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), source)
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise SequenceError(f"{source} is empty: no sequences")
    lines = text.splitlines()
    first = next(line for line in lines if line.strip())
    has_header = any(line.startswith(">") for line in lines)
    if first.startswith(_STRUCTURE_PREFIXES) or (not has_header and any(
            line.startswith(("ATOM  ", "HETATM", "_atom_site.")) for line in lines[:5000])):
        raise SequenceError(f"{source} looks like an atomic structure (PDB/mmCIF) file, not "
                            "a FASTA sequence file")
    if not has_header:
        raise SequenceError(
            f"{source} is not FASTA: no header line starting with '>'. Each sequence needs a "
            "line like '>chainA' before it")

    # Split into (header line number, header text, [(line number, text), ...]).
    raw: list[tuple[int, str, list[tuple[int, str]]]] = []
    for n, line in enumerate(lines, start=1):
        if line.startswith(">"):
            raw.append((n, line[1:].strip(), []))
        elif line.startswith(";"):
            continue
        elif not raw:
            if line.strip():
                raise SequenceError(f"{source}, line {n}: sequence text before the first "
                                    "'>' header line")
        else:
            raw[-1][2].append((n, line))

    records: list[SequenceRecord] = []
    skipped_nucleotide: list[str] = []
    for index, (n_header, header, body) in enumerate(raw, start=1):
        parts = header.split(None, 1)
        name = parts[0] if parts else ""
        description = parts[1] if len(parts) > 1 else ""
        if not name:
            name = f"sequence_{index}"
            _warn(f"{source}, line {n_header}: header without a name; called it '{name}'",
                  warnings)
        seq = _clean_sequence(body, name, source, warnings)
        if not seq:
            _warn(f"{source}: record '{name}' (line {n_header}) has no sequence; skipped",
                  warnings)
            continue
        if _is_nucleotide(seq):
            skipped_nucleotide.append(name)
            _warn(f"{source}: record '{name}' looks like a nucleotide (DNA/RNA) sequence; "
                  "skipped (only proteins are built)", warnings)
            continue
        seq = _substitute(seq, name, source, warnings)
        if seq.count("X") > len(seq) / 2:
            _warn(f"{source}: record '{name}' is mostly unknown residues (X)", warnings)
        records.append(SequenceRecord(name, seq, description))

    if not records:
        if skipped_nucleotide:
            raise SequenceError(
                f"{source} holds only nucleotide (DNA/RNA) sequences "
                f"({', '.join(skipped_nucleotide[:5])}); give the protein sequences")
        raise SequenceError(f"{source}: every record is empty; no sequences")
    _make_names_unique(records, source, warnings)
    return records


def _clean_sequence(body: list[tuple[int, str]], name: str, source: str,
                    warnings: list[str] | None) -> str:
    letters: list[str] = []
    stops: list[tuple[int, int, int]] = []  # (index in letters, line, column)
    gaps = 0
    for n, line in body:
        for col, ch in enumerate(line, start=1):
            if ch.isspace() or ch in "0123456789":
                continue
            if ch in "-.":
                gaps += 1
            elif ch == "*":
                stops.append((len(letters), n, col))
            elif "A" <= ch <= "Z" or "a" <= ch <= "z":
                letters.append(ch.upper())
            else:
                raise SequenceError(
                    f"{source}, line {n}, column {col} (record '{name}'): {ch!r} is not an "
                    "amino-acid letter")
    for pos, n, col in stops:
        if pos < len(letters):
            raise SequenceError(
                f"{source}, line {n}, column {col} (record '{name}'): stop '*' inside the "
                "sequence; only a final '*' is allowed")
    if gaps:
        _warn(f"{source}: record '{name}': {gaps} gap character(s) ('-', '.') removed",
              warnings)
    return "".join(letters)


def _is_nucleotide(seq: str) -> bool:
    if len(seq) < _NUCLEOTIDE_MIN_LENGTH:
        return False
    n = sum(1 for ch in seq if ch in _NUCLEOTIDES)
    return n >= _NUCLEOTIDE_MIN_FRACTION * len(seq)


def _substitute(seq: str, name: str, source: str, warnings: list[str] | None) -> str:
    counts = Counter(ch for ch in seq if ch in SUBSTITUTIONS)
    if not counts:
        return seq
    what = ", ".join(f"{counts[c]} {c} ({_CODE_NAMES[c]}) as {SUBSTITUTIONS[c]}"
                     for c in sorted(counts))
    _warn(f"{source}: record '{name}': read {what}", warnings)
    return seq.translate(str.maketrans(SUBSTITUTIONS))


def _make_names_unique(records: list[SequenceRecord], source: str,
                       warnings: list[str] | None) -> None:
    taken = {r.name for r in records}
    seen: set[str] = set()
    for r in records:
        if r.name not in seen:
            seen.add(r.name)
            continue
        k = 2
        while f"{r.name}_{k}" in taken:
            k += 1
        new = f"{r.name}_{k}"
        _warn(f"{source}: repeated record name '{r.name}' renamed to '{new}'", warnings)
        r.name = new
        taken.add(new)
        seen.add(new)


def read_fasta(path: str | os.PathLike,
               warnings: list[str] | None = None) -> list[SequenceRecord]:
    """Protein sequences of a FASTA file (gzipped allowed); see :func:`parse_fasta`."""
    path = Path(path)
    if not path.exists():
        raise SequenceError(f"sequence file not found: {path}")
    if path.is_dir():
        raise SequenceError(f"{path} is a folder, not a FASTA file")
    size = path.stat().st_size
    if size == 0:
        raise SequenceError(f"sequence file {path} is empty (0 bytes)")
    if size > _MAX_FILE_BYTES:
        raise SequenceError(f"{path} is {size / 2**20:.0f} MB, too large for the sequences of "
                            "one map; give only the sequences of the molecule")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SequenceError(f"cannot read {path}: {exc}") from exc
    return parse_fasta(data, source=str(path), warnings=warnings)


def format_fasta(records: list[SequenceRecord], width: int = 60) -> str:
    """FASTA text of ``records``, sequence lines ``width`` letters long."""
    out = []
    for r in records:
        out.append(f">{r.name} {r.description}".rstrip())
        out.extend(r.sequence[i:i + width] for i in range(0, len(r.sequence), width))
    return "\n".join(out) + "\n"


def write_fasta(path: str | os.PathLike, records: list[SequenceRecord],
                overwrite: bool = False, width: int = 60) -> None:
    """Write ``records`` as FASTA; an existing file is refused unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; choose another name or allow overwriting")
    try:
        path.write_text(format_fasta(records, width))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc


def unique_sequences(records: list[SequenceRecord]) -> list[SequenceRecord]:
    """One record per distinct sequence (the first with it), in file order."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.sequence not in seen:
            seen.add(r.sequence)
            out.append(r)
    return out
