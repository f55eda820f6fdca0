import gzip
from pathlib import Path

import pytest

from chimerax.modelangelo.errors import OutputError, SequenceError
from chimerax.modelangelo.sequences import (
    SequenceRecord,
    SequenceWarning,
    format_fasta,
    parse_fasta,
    read_fasta,
    unique_sequences,
    write_fasta,
)

REAL_MAPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_maps"

LYSO = "KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALLSSDITASVNCAKKIVSDGNGMNAWVAWRNRCKGTDVQAWIRGCRL"


def parse(text, **kw):
    warns: list[str] = []
    return parse_fasta(text, warnings=warns, **kw), warns


def write(tmp_path, text: str | bytes, name="seq.fasta") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode())
    return path


def test_real_fasta_files_match_models():
    from chimerax.modelangelo.protein import load_protein

    files = sorted(REAL_MAPS.glob("*/*.fasta"))
    assert len(files) >= 3
    for f in files:
        warns: list[str] = []
        recs = read_fasta(f, warnings=warns)
        assert warns == [] and len(recs) == 1
        assert set(recs[0].sequence) <= set("ACDEFGHIKLMNPQRSTVWY")
        model = load_protein(next(f.parent.glob("*_deposited.cif")))
        modelled = next(iter(model.chain_sequences().values()))
        # the modelled residues are (mostly) a stretch of the deposited sequence
        assert modelled[:8] in recs[0].sequence


def test_several_records_names_and_descriptions():
    recs, warns = parse(">chainA Lysozyme C [Gallus gallus]\nKVFGRC\nELAAAM\n>B\nMKTAYIAK\n")
    assert warns == []
    assert [r.name for r in recs] == ["chainA", "B"]
    assert recs[0].description == "Lysozyme C [Gallus gallus]" and recs[1].description == ""
    assert recs[0].sequence == "KVFGRCELAAAM" and len(recs[1]) == 8


def test_case_whitespace_digits_stop_and_windows_endings(tmp_path):
    text = ">a\r\n  1 kvfgr celaa\t11 amkrh*\r\n\r\n>b\r\nMKTAY**\r\n"
    path = write(tmp_path, text)
    warns: list[str] = []
    recs = read_fasta(path, warnings=warns)
    assert [r.sequence for r in recs] == ["KVFGRCELAAAMKRH", "MKTAY"]
    assert warns == []
    assert all("\r" not in r.name and "\r" not in r.sequence for r in recs)


def test_stop_inside_sequence_is_an_error():
    with pytest.raises(SequenceError, match=r"line 2, column 4 \(record 'a'\).*stop"):
        parse_fasta(">a\nMKT*AY\n")


def test_nonstandard_letters():
    recs, warns = parse(">a\nMUKOBZJXA\n")
    assert recs[0].sequence == "MCKKXXXXA"
    assert len(warns) == 1
    for part in ("1 U (selenocysteine) as C", "1 O (pyrrolysine) as K", "1 B", "1 Z", "1 J"):
        assert part in warns[0]


def test_gaps_removed_with_warning():
    recs, warns = parse(">a\nMK-T..AY--\n")
    assert recs[0].sequence == "MKTAY"
    assert len(warns) == 1 and "5 gap" in warns[0]


@pytest.mark.parametrize("bad, line, col", [("MKT@AY", 2, 4), ("MKTAY+", 2, 6), ("MKTÄY", 2, 4)])
def test_invalid_character_reports_location(bad, line, col):
    with pytest.raises(SequenceError) as exc:
        parse_fasta(f">first\nMKTAY\n>second\n{bad}\n", source="in.fasta")
    msg = str(exc.value)
    assert f"line {line + 2}, column {col}" in msg and "'second'" in msg and "in.fasta" in msg


def test_empty_records_skipped_or_error():
    recs, warns = parse(">a\n\n>b\nMKTAY\n>c\n")
    assert [r.name for r in recs] == ["b"]
    assert len(warns) == 2 and all("no sequence" in w for w in warns)
    with pytest.raises(SequenceError, match="every record is empty"):
        parse_fasta(">a\n>b\n\n", warnings=[])


def test_homo_oligomer_duplicates_kept_and_unique():
    text = ">A\nMKTAYIAK\n>B\nMKTAYIAK\n>C\nGGSLV\n>D\nmktayiak\n"
    recs, warns = parse(text)
    assert warns == []
    assert [r.name for r in recs] == ["A", "B", "C", "D"]
    uniq = unique_sequences(recs)
    assert [r.name for r in uniq] == ["A", "C"]
    assert [r.sequence for r in uniq] == ["MKTAYIAK", "GGSLV"]


def test_duplicate_names_made_unique():
    recs, warns = parse(">A\nMKT\n>A\nGGS\n>A_2\nLLV\n>A\nPPW\n")
    assert [r.name for r in recs] == ["A", "A_3", "A_2", "A_4"]
    assert len(warns) == 2 and all("renamed" in w for w in warns)
    assert len({r.name for r in recs}) == 4


def test_header_without_name():
    recs, warns = parse(">\nMKTAY\n>  \nGGSLV\n")
    assert [r.name for r in recs] == ["sequence_1", "sequence_2"]
    assert len(warns) == 2


def test_comments_and_bom():
    recs, warns = parse("\ufeff;comment\n>a\n;inside\nMKT\nAY\n")
    assert recs[0].sequence == "MKTAY" and warns == []


def test_not_fasta_errors(tmp_path):
    with pytest.raises(SequenceError, match="no header line starting with '>'"):
        read_fasta(write(tmp_path, "MKTAYIAKQRQISFVKSHFSRQ\n", "plain.txt"))
    with pytest.raises(SequenceError, match="before the first '>'"):
        parse_fasta("MKTAY\n>a\nMKTAY\n")
    with pytest.raises(SequenceError, match="binary"):
        read_fasta(write(tmp_path, bytes(range(256)) * 4, "bin.fasta"))
    pdb = ("HEADER    HYDROLASE\nATOM      1  N   LYS A   1      3.294  10.164  10.266  1.00 "
           "11.18           N\nEND\n")
    with pytest.raises(SequenceError, match="structure"):
        read_fasta(write(tmp_path, pdb, "model.pdb"))
    cif = next(REAL_MAPS.glob("*/*_deposited.cif"))
    with pytest.raises(SequenceError, match="structure"):
        read_fasta(cif)
    mrc = next(REAL_MAPS.glob("*/emd_*.mrc"))
    with pytest.raises(SequenceError, match="map"):
        read_fasta(mrc)
    with pytest.raises(SequenceError, match="empty"):
        read_fasta(write(tmp_path, "", "empty.fasta"))
    with pytest.raises(SequenceError, match="empty"):
        parse_fasta("  \n\n")
    with pytest.raises(SequenceError, match="not found"):
        read_fasta(tmp_path / "missing.fasta")
    with pytest.raises(SequenceError, match="folder"):
        read_fasta(tmp_path)


def test_nucleotide_sequences():
    with pytest.raises(SequenceError, match="only nucleotide"):
        parse_fasta(">dna\nATGCGTACGTTAGCATGCAAGT\n>rna\nAUGGCUACGUUAGCNNAUG\n", warnings=[])
    recs, warns = parse(">prot\nMKTAYIAKQR\n>rna\nacguacguacguacgu\n")
    assert [r.name for r in recs] == ["prot"]
    assert len(warns) == 1 and "nucleotide" in warns[0] and "'rna'" in warns[0]
    # short peptides made of A/C/G/T/N letters are proteins
    recs, _ = parse(">pep\nGATTACA\n")
    assert recs[0].sequence == "GATTACA"
    # a real protein rich in A/G/T is not mistaken for DNA
    recs, _ = parse(">lyso\n" + LYSO + "\n")
    assert recs[0].sequence == LYSO


def test_gzipped_and_latin1(tmp_path):
    path = tmp_path / "seq.fasta.gz"
    path.write_bytes(gzip.compress(b">a caf\xc3\xa9\nMKTAY\n"))
    recs = read_fasta(path, warnings=[])
    assert recs[0].description == "café"
    recs = read_fasta(write(tmp_path, b">a caf\xe9\nMKTAY\n", "latin1.fasta"), warnings=[])
    assert recs[0].sequence == "MKTAY" and recs[0].description == "café"


def test_warnings_without_list_are_python_warnings():
    with pytest.warns(SequenceWarning, match="gap"):
        parse_fasta(">a\nMK-TAY\n")


def test_write_and_read_back(tmp_path):
    recs = [SequenceRecord("A", LYSO, "lysozyme"), SequenceRecord("B", "MKTAY")]
    path = tmp_path / "out.fasta"
    write_fasta(path, recs)
    text = path.read_text()
    assert max(len(line) for line in text.splitlines()) == 60
    assert text.startswith(">A lysozyme\n") and "\n>B\nMKTAY\n" in text
    assert read_fasta(path, warnings=[]) == recs
    with pytest.raises(OutputError, match="exists"):
        write_fasta(path, recs[:1])
    write_fasta(path, recs[:1], overwrite=True, width=50)
    assert read_fasta(path, warnings=[]) == recs[:1]
    assert format_fasta(recs[1:]) == ">B\nMKTAY\n"
    with pytest.raises(OutputError):
        write_fasta(tmp_path / "missing" / "x.fasta", recs)
