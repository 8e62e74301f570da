"""Document readers: formats, ids, empty documents, invalid UTF-8 accounting, HF datasets, bad input."""

from __future__ import annotations

import json

import pytest

from longrecipe.data import ReadStats, decode_bytes, iter_documents, load_documents_dataset
from longrecipe.tiny import synthetic_documents


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("replace", "caf\ufffd \ufffd\ufffd ok"),
        ("latin1", "caf\u00e9 \u00a1\u00a6 ok"),
        ("ignore", "caf  ok"),
        ("backslashreplace", "caf\\xe9 \\xa1\\xa6 ok"),
    ],
)
def test_decode_bytes_policies_count_every_bad_byte(policy, expected):
    text, n_bad = decode_bytes(b"caf\xe9 \xa1\xa6 ok", policy)
    assert text == expected
    assert n_bad == 3


def test_decode_bytes_valid_utf8_and_bom():
    assert decode_bytes("\ufeffcaf\u00e9".encode()) == ("caf\u00e9", 0)
    assert decode_bytes(b"") == ("", 0)


def test_decode_bytes_strict_names_file_and_fix():
    with pytest.raises(ValueError, match=r"x\.txt is not valid UTF-8 \(byte 3: b'\\xe9'\).*encoding_errors='strict'"):
        decode_bytes(b"caf\xe9", "strict", where="x.txt")


def test_bad_encoding_policy_message():
    with pytest.raises(ValueError, match=r"data\.encoding_errors must be one of \['replace', 'ignore', "
                                         r"'backslashreplace', 'latin1', 'strict'\], got 'surrogateescape'"):
        decode_bytes(b"x", "surrogateescape")


@pytest.fixture()
def mixed_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"first document.\nsecond line")
    (root / "b.txt").write_bytes(b"   \n\t ")  # whitespace only -> skipped, counted
    (root / "sub" / "c.txt").write_bytes(b"latin \xe9t\xe9 text")  # 2 invalid bytes
    (root / "d.jsonl").write_bytes(
        b'{"text": "json one", "k": 7}\n'
        b"\n"  # blank line: not a document
        b'{"text": ""}\n'  # empty document -> skipped, counted
        b'{"text": "bad \xff byte"}\n'
    )
    pq.write_table(pa.table({"text": ["pq zero", None, "pq two"]}), root / "e.parquet")
    (root / ".hidden.txt").write_text("never read")
    (root / "notes.md").write_text("not a document format")
    return root


def test_iter_documents_mixed_folder_exact(mixed_folder):
    stats = ReadStats()
    docs = list(iter_documents(mixed_folder, stats=stats))
    assert [(d.id, d.text, d.n_replaced_bytes) for d in docs] == [
        ("a.txt", "first document.\nsecond line", 0),
        ("d.jsonl:1", "json one", 0),
        ("d.jsonl:4", "bad \ufffd byte", 1),
        ("e.parquet:0", "pq zero", 0),
        ("e.parquet:2", "pq two", 0),
        ("sub/c.txt", "latin \ufffdt\ufffd text", 2),
    ]
    assert docs[0].source == str(mixed_folder / "a.txt")
    assert stats.docs_read == 6
    assert stats.empty_skipped == 3  # b.txt, the empty jsonl text, the null parquet text
    assert stats.bytes_replaced == 3
    assert stats.files_read == 5
    assert stats.files_bad_utf8 == [str(mixed_folder / "d.jsonl"), str(mixed_folder / "sub" / "c.txt")]


def test_iter_documents_format_glob_and_id_field(mixed_folder, tmp_path):
    docs = list(iter_documents(mixed_folder, fmt="txt", encoding_errors="latin1"))
    assert [d.text for d in docs] == ["first document.\nsecond line", "latin \u00e9t\u00e9 text"]
    only = list(iter_documents(mixed_folder, glob="sub/*.txt"))
    assert [d.id for d in only] == ["sub/c.txt"]
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"body": "x y", "uid": 12}) + "\n")
    docs = list(iter_documents(path, text_field="body", id_field="uid"))
    assert [(d.id, d.text) for d in docs] == [("12", "x y")]


def test_iter_documents_synthetic_matches_generator():
    docs = list(iter_documents("synthetic", n_docs=3, seed=5))
    assert [d.text for d in docs] == synthetic_documents(3, seed=5)
    assert [d.id for d in docs] == ["synthetic:0", "synthetic:1", "synthetic:2"]


def test_missing_path_names_data_source(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"data\.source '.*nope' does not exist \(looked for .*nope\)"):
        list(iter_documents(str(missing)))
    with pytest.raises(ValueError, match=r"data\.source .* does not exist"):
        load_documents_dataset("./no/such/file.jsonl")


def test_empty_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"holds no documents: looked for \*\*/\*\.txt, \*\*/\*\.jsonl, "
                                         r"\*\*/\*\.parquet \(data\.format='auto'"):
        list(iter_documents(tmp_path))


def test_bad_records_name_the_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"content": "hi"}\n')
    with pytest.raises(ValueError, match=r"data\.text_field='text' not found in .*x\.jsonl line 1 \(keys: \['content'\]\)"):
        list(iter_documents(path))
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"x\.jsonl line 1 is not valid JSON"):
        list(iter_documents(path))
    with pytest.raises(ValueError, match=r"data\.format must be one of \['auto', 'txt', 'jsonl', 'parquet', 'hf'\]"):
        list(iter_documents(path, fmt="csv"))


def test_strict_policy_raises_with_file_name(mixed_folder):
    with pytest.raises(ValueError, match=r"c\.txt is not valid UTF-8 \(byte 6"):
        list(iter_documents(mixed_folder / "sub", encoding_errors="strict"))


def test_state_union_never_drops_a_document(state_union_dir):
    """65 addresses (+ a README, not a .txt); 6 files hold ISO-8859 bytes (all in 0x80-0xBF: continuation
    bytes, never valid UTF-8 starts), so the number of replaced bytes equals the number of bytes >= 0x80."""
    files = sorted(state_union_dir.glob("*.txt"))
    high_bytes = {str(f): sum(b >= 0x80 for b in f.read_bytes()) for f in files}
    stats = ReadStats()
    docs = list(iter_documents(state_union_dir, stats=stats))
    assert len(docs) == len(files) == 65
    assert stats.empty_skipped == 0
    assert stats.bytes_replaced == sum(high_bytes.values())
    assert stats.files_bad_utf8 == sorted(f for f, n in high_bytes.items() if n)
    assert len(stats.files_bad_utf8) == 6
    by_id = {d.id: d for d in docs}
    assert by_id["1970-Nixon.txt"].n_replaced_bytes == high_bytes[str(state_union_dir / "1970-Nixon.txt")]


def test_dataset_equals_iterator_and_is_cached(mixed_folder, tmp_path):
    stats = ReadStats()
    ds = load_documents_dataset(mixed_folder, cache_dir=tmp_path / "cache", stats=stats)
    docs = list(iter_documents(mixed_folder))
    assert ds.column_names == ["id", "text", "source", "n_replaced_bytes"]
    assert list(ds["id"]) == [d.id for d in docs] and list(ds["text"]) == [d.text for d in docs]
    assert list(ds["n_replaced_bytes"]) == [d.n_replaced_bytes for d in docs]
    assert (stats.docs_read, stats.empty_skipped, stats.bytes_replaced, len(stats.files_bad_utf8)) == (6, 3, 3, 2)
    again_stats = ReadStats()
    again = load_documents_dataset(mixed_folder, cache_dir=tmp_path / "cache", stats=again_stats)
    assert again.cache_files[0]["filename"] == ds.cache_files[0]["filename"]  # arrow cache hit
    assert again_stats == stats  # counters are exact on a cache hit too
    (mixed_folder / "a.txt").write_text("changed text!")  # a changed file invalidates the cache
    changed = load_documents_dataset(mixed_folder, cache_dir=tmp_path / "cache")
    assert list(changed["text"])[0] == "changed text!"


def test_hf_saved_dataset_with_text_field(tmp_path):
    import datasets

    saved = tmp_path / "hf"
    datasets.Dataset.from_dict({"content": ["alpha", " ", "beta"], "uid": [3, 4, 5]}).save_to_disk(str(saved))
    stats = ReadStats()
    ds = load_documents_dataset(saved, text_field="content", id_field="uid", stats=stats)
    assert list(ds["text"]) == ["alpha", "beta"] and list(ds["id"]) == ["3", "5"]
    assert (stats.docs_read, stats.empty_skipped) == (2, 1)
    assert [d.text for d in iter_documents(saved, text_field="content")] == ["alpha", "beta"]
    with pytest.raises(ValueError, match=r"data\.text_field='text' is not a column of .*hf \(columns: \['content', 'uid'\]\)"):
        load_documents_dataset(saved)


def test_unknown_hf_name_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match=r"data\.source 'no-such-org-xyz/no-such-set' is neither a local path"):
        load_documents_dataset("no-such-org-xyz/no-such-set", cache_dir=tmp_path)
