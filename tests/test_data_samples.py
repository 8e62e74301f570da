"""Packing documents into samples: exact hand-checked values, equivalence with a naive reference,
tokenisation through ``datasets.map`` (cache), bad input."""

from __future__ import annotations

import numpy as np
import pytest

from longrecipe.data import load_documents_dataset, pack_documents, packed_to_dataset, token_arrays, tokenize_documents

EOS = 1
LENGTHS = np.array([3, 5, 1])
TOKENS = np.array([10, 11, 12, 20, 21, 22, 23, 24, 30], dtype=np.int32)


def _segments(packed):
    return [list(zip(packed.segment_starts(i).tolist(),
                     packed.segment_doc[packed.segment_sample == i].tolist())) for i in range(len(packed))]


def test_concat_exact_windows_and_segments():
    # stream: 10 11 12 EOS | 20 21 22 23 24 EOS | 30 EOS  (12 tokens) -> 3 samples of 4, no tail
    packed = pack_documents(LENGTHS, TOKENS, sample_length=4, short_docs="concat", eos_token_id=EOS)
    assert packed.input_ids.tolist() == [[10, 11, 12, 1], [20, 21, 22, 23], [24, 1, 30, 1]]
    assert _segments(packed) == [[(0, 0)], [(0, 1)], [(0, 1), (2, 2)]]
    assert packed.stats == {"docs_packed": 3, "short_docs_dropped": 0, "short_doc_tokens_dropped": 0,
                            "tail_tokens_dropped": 0}


def test_concat_drops_only_the_stream_tail():
    packed = pack_documents(LENGTHS, TOKENS, sample_length=5, short_docs="concat", eos_token_id=EOS)
    assert packed.input_ids.tolist() == [[10, 11, 12, 1, 20], [21, 22, 23, 24, 1]]
    assert _segments(packed) == [[(0, 0), (4, 1)], [(0, 1)]]
    assert packed.stats["tail_tokens_dropped"] == 2  # "30 EOS"
    assert packed.stats["docs_packed"] == 2


def test_drop_policy_exact():
    lengths = np.array([3, 9, 4])
    tokens = np.arange(16, dtype=np.int32) + 100
    packed = pack_documents(lengths, tokens, sample_length=4, short_docs="drop")
    assert packed.input_ids.tolist() == [[103, 104, 105, 106], [107, 108, 109, 110], [112, 113, 114, 115]]
    assert _segments(packed) == [[(0, 1)], [(0, 1)], [(0, 2)]]
    assert packed.stats == {"docs_packed": 2, "short_docs_dropped": 1, "short_doc_tokens_dropped": 3,
                            "tail_tokens_dropped": 1}


def _naive_concat(lengths, tokens, T, eos):
    stream, owner, starts = [], [], set()
    pos = 0
    for d, n in enumerate(lengths):
        starts.add(len(stream))
        stream += list(tokens[pos:pos + n]) + [eos]
        owner += [d] * (n + 1)
        pos += n
    rows, segs = [], []
    for w in range(len(stream) // T):
        rows.append(stream[w * T:(w + 1) * T])
        segs.append([(o, owner[w * T + o]) for o in range(T) if o == 0 or w * T + o in starts])
    return rows, segs


def _naive_drop(lengths, tokens, T):
    rows, segs, pos = [], [], 0
    for d, n in enumerate(lengths):
        for k in range(n // T):
            rows.append(list(tokens[pos + k * T:pos + (k + 1) * T]))
            segs.append([(0, d)])
        pos += n
    return rows, segs


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_packing_equals_naive_reference(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 40, size=int(rng.integers(1, 25)))
    tokens = rng.integers(3, 500, size=int(lengths.sum())).astype(np.int32)
    T = int(rng.integers(1, 30))
    packed = pack_documents(lengths, tokens, sample_length=T, short_docs="concat", eos_token_id=EOS)
    rows, segs = _naive_concat(lengths, tokens, T, EOS)
    assert packed.input_ids.reshape(-1, T).tolist() == rows and _segments(packed) == segs
    packed = pack_documents(lengths, tokens, sample_length=T, short_docs="drop")
    rows, segs = _naive_drop(lengths, tokens, T)
    assert packed.input_ids.reshape(-1, T).tolist() == rows and _segments(packed) == segs


def test_packed_to_dataset_is_the_prepared_format():
    packed = pack_documents(LENGTHS, TOKENS, sample_length=4, short_docs="concat", eos_token_id=EOS)
    ds = packed_to_dataset(packed, ["a", "b", "c"])
    assert ds.column_names == ["input_ids", "segment_starts", "doc_ids"]
    assert [r["input_ids"] for r in ds] == packed.input_ids.tolist()
    assert [r["segment_starts"] for r in ds] == [[0], [0], [0, 2]]
    assert [r["doc_ids"] for r in ds] == [["a"], ["b"], ["b", "c"]]


def test_bad_packing_input():
    with pytest.raises(ValueError, match=r"data\.short_docs must be one of \['concat', 'drop'\], got 'pad'"):
        pack_documents(LENGTHS, TOKENS, sample_length=4, short_docs="pad", eos_token_id=EOS)
    with pytest.raises(ValueError, match=r"needs an EOS token .* use data\.short_docs=drop"):
        pack_documents(LENGTHS, TOKENS, sample_length=4, short_docs="concat", eos_token_id=None)
    with pytest.raises(ValueError, match=r"doc_lengths must be non-negative and sum to len\(tokens\)"):
        pack_documents(np.array([2]), TOKENS, sample_length=4, eos_token_id=EOS)


def test_tokenize_documents_matches_tokenizer_and_caches(tiny_tokenizer, tmp_path):
    docs = load_documents_dataset("synthetic", n_docs=6, seed=3, cache_dir=tmp_path)
    tok = tokenize_documents(docs, tiny_tokenizer, num_proc=1)
    expected = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in docs["text"]]
    lengths, flat = token_arrays(tok)
    assert lengths.tolist() == [len(e) for e in expected]
    assert flat.tolist() == [t for e in expected for t in e]
    again = tokenize_documents(docs, tiny_tokenizer, num_proc=1)
    assert again.cache_files == tok.cache_files and tok.cache_files  # datasets arrow cache reused
    two = tokenize_documents(docs, tiny_tokenizer, num_proc=2)  # multiprocess map: same tokens
    assert token_arrays(two)[1].tolist() == flat.tolist()
