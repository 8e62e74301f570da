"""LongContextDataModule: determinism of per-sample positions, resume equivalence (by hand and through a
real Lightning checkpoint), the real Hydra config with the real position schemes, the prepared format,
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longrecipe.data import LongContextDataModule, resolve_sample_length
from longrecipe.utils.seeding import sample_rng

TARGET = 1024


class Gapped:
    """Stub scheme: positions 0.. with random gaps of 0..max_gap (a PoSE-like jump pattern)."""

    def __init__(self, max_gap: int = 2) -> None:
        self.max_gap = max_gap

    def __call__(self, input_ids, rng, *, segment_starts=None):
        gaps = rng.integers(0, self.max_gap + 1, size=len(input_ids))
        gaps[0] = 0
        return np.arange(len(input_ids)) + np.cumsum(gaps)


class RecordSegments:
    """Stub scheme that records the segment_starts it receives and returns FLT positions."""

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, input_ids, rng, *, segment_starts=None):
        self.seen.append(None if segment_starts is None else segment_starts.tolist())
        return np.arange(len(input_ids))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def make_dm(tokenizer, cache_dir, position=None, **kw):
    args = dict(target_length=TARGET, n_docs=24, seed=11, cache_dir=cache_dir, batch_size=2)
    args.update(kw)
    return LongContextDataModule(tokenizer, position, **args)


def batches(loader, n=None):
    out = []
    for i, batch in enumerate(loader):
        if n is not None and i >= n:
            break
        out.append({k: v.clone() for k, v in batch.items()})
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


# ----------------------------------------------------------------------------------------------------
def test_batch_contract_and_sample_length(tiny_tokenizer, cache_dir):
    dm = make_dm(tiny_tokenizer, cache_dir, Gapped())
    assert dm.sample_length == round(0.3 * TARGET) == 307
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "position_ids", "attention_mask"}
    for value in batch.values():
        assert value.shape == (2, 307) and value.dtype == torch.int64
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert torch.equal(batch["attention_mask"], torch.ones(2, 307, dtype=torch.int64))
    pos = batch["position_ids"]
    assert (pos[:, 0] == 0).all() and (pos.diff(dim=1) > 0).all() and (pos < TARGET).all()
    assert (pos.diff(dim=1) > 1).any()  # the gaps reached the batch
    stats = dm.stats
    assert stats["train_samples"] == len(dm.train_samples) > 0 and stats["read"]["docs_read"] == 24
    assert stats["train_documents"] + stats["val_documents"] == 24 and stats["val_documents"] == 1
    # every token of the training documents is in a sample, except the dropped stream tail
    assert stats["train_samples"] * 307 + stats["train_packing"]["tail_tokens_dropped"] == sum(
        int(n) for n in _doc_token_counts(dm, tiny_tokenizer, train=True)) + stats["train_documents"]


def _doc_token_counts(dm, tokenizer, *, train):
    from longrecipe.data import load_documents_dataset

    docs = load_documents_dataset("synthetic", n_docs=24, seed=11, cache_dir=dm.cache_dir)
    val_ids = {d for row in dm.val_samples for d in row["doc_ids"]}
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"])
            for i, t in zip(docs["id"], docs["text"]) if (i not in val_ids) == train]


def test_positions_depend_only_on_seed_epoch_index(tiny_tokenizer, cache_dir):
    dm = make_dm(tiny_tokenizer, cache_dir, Gapped())
    ds = dm.train_dataset()
    a, b = ds[(0, 5)], ds[(0, 5)]
    assert np.array_equal(a["position_ids"], b["position_ids"])
    assert np.array_equal(a["position_ids"], ds[5]["position_ids"])  # int key = epoch 0
    c = ds[(1, 5)]
    assert np.array_equal(a["input_ids"], c["input_ids"])
    assert not np.array_equal(a["position_ids"], c["position_ids"])  # a new epoch draws new positions
    expected = Gapped()(a["input_ids"], sample_rng(11, 1, 5))
    assert np.array_equal(c["position_ids"], expected)
    # a second module (fresh process state) reproduces the same batches, also with 2 workers
    first = batches(dm.train_dataloader(), 4)
    again = batches(make_dm(tiny_tokenizer, cache_dir, Gapped()).train_dataloader(), 4)
    workers = batches(make_dm(tiny_tokenizer, cache_dir, Gapped(), num_workers=2).train_dataloader(), 4)
    assert_same(first, again)
    assert_same(first, workers)
    # the batch holds exactly dataset[(epoch, index)] for the sampler's keys
    keys = list(dm.train_sampler())[:2]
    assert np.array_equal(first[0]["position_ids"][1].numpy(), ds[keys[1]]["position_ids"])
    # epoch 1: new order and new positions
    dm.set_epoch(1)
    assert not torch.equal(batches(dm.train_dataloader(), 1)[0]["position_ids"], first[0]["position_ids"])


def test_validation_is_flt_and_deterministic(tiny_tokenizer, cache_dir):
    dm = make_dm(tiny_tokenizer, cache_dir, Gapped(), val_fraction=0.2, max_val_samples=3, val_batch_size=3)
    val = batches(dm.val_dataloader())
    assert len(val) == 1 and val[0]["input_ids"].shape == (3, 307)
    assert torch.equal(val[0]["position_ids"], torch.arange(307).expand(3, 307))
    assert_same(val, batches(make_dm(tiny_tokenizer, cache_dir, Gapped(), val_fraction=0.2, max_val_samples=3,
                                     val_batch_size=3).val_dataloader()))
    train_docs = {d for row in dm.train_samples for d in row["doc_ids"]}
    val_docs = {d for row in dm.val_samples for d in row["doc_ids"]}
    assert train_docs.isdisjoint(val_docs)  # held out by document: no leakage
    assert make_dm(tiny_tokenizer, cache_dir, val_fraction=0.0).val_dataloader() == []


def test_manual_resume_equivalence(tiny_tokenizer, cache_dir):
    full = batches(make_dm(tiny_tokenizer, cache_dir, Gapped()).train_dataloader())
    k = 3
    dm = make_dm(tiny_tokenizer, cache_dir, Gapped())
    it = iter(dm.train_dataloader())
    for _ in range(k):
        batch = next(it)
        dm.mark_consumed(batch["input_ids"].shape[0])
    state = dm.state_dict()
    assert state["train_sampler"]["consumed"] == 2 * k
    fresh = make_dm(tiny_tokenizer, cache_dir, Gapped())
    fresh.load_state_dict(state)  # before the dataloader exists, as Lightning does
    assert fresh.state_dict() == state
    assert_same(batches(fresh.train_dataloader()), full[k:])


def test_lightning_checkpoint_resume_equivalence(tiny_tokenizer, cache_dir, tmp_path, recwarn):
    """A run checkpointed every step (4 steps per epoch, 7 in all); resuming from the checkpoint of step 3
    (mid-epoch), 4 (end of epoch 0) or 5 (inside epoch 1) replays exactly the uninterrupted batches."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append((batch["input_ids"].tolist(), batch["position_ids"].tolist()))
            return (self.w * batch["position_ids"].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def run(ckpt=None, callbacks=None):
        module = Recorder()
        trainer = L.Trainer(max_steps=7, accelerator="cpu", logger=False, enable_checkpointing=bool(callbacks),
                            callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
        trainer.fit(module, datamodule=make_dm(tiny_tokenizer, cache_dir, Gapped(), max_samples=8), ckpt_path=ckpt)
        return module.seen

    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    full = run(callbacks=[every_step])
    assert len(full) == 7
    for stop, (epoch, consumed) in {3: (0, 6), 4: (0, 8), 5: (1, 2)}.items():
        ckpt = str(tmp_path / "ckpt" / f"step={stop}.ckpt")
        state = torch.load(ckpt, weights_only=True)["LongContextDataModule"]["train_sampler"]
        assert (state["epoch"], state["consumed"]) == (epoch, consumed)
        assert run(ckpt=ckpt) == full[stop:], stop
    assert not [w for w in recwarn if "not resumable" in str(w.message)]


# ----------------------------------------------------------------------------------------------------
def _compose(cache_dir, *overrides):
    from longrecipe.config import compose

    return compose("train", [f"data.cache_dir={cache_dir}", "data.n_docs=24", "seed=11", *overrides])


@pytest.mark.parametrize("scheme", ["flt", "rpes", "pose", "longrecipe"])
def test_hydra_config_with_real_position_schemes(tiny_tokenizer, cache_dir, scheme):
    from hydra.utils import instantiate

    cfg = _compose(cache_dir, f"position={scheme}")
    position = instantiate(cfg.position)
    dm = instantiate(cfg.data, _partial_=True)(tokenizer=tiny_tokenizer, position=position)
    assert isinstance(dm, LongContextDataModule)
    assert (dm.sample_length, dm.target_length, dm.seed, dm.source) == (307, 1024, 11, "synthetic")
    batch = next(iter(dm.train_dataloader()))
    pos = batch["position_ids"]
    assert (pos[:, 0] == 0).all() and (pos.diff(dim=1) > 0).all() and (pos < 1024).all()
    assert (batch["attention_mask"] == 1).all()
    ds = dm.train_dataset()
    assert np.array_equal(ds[(0, 3)]["position_ids"], ds[(0, 3)]["position_ids"])
    changed = not np.array_equal(ds[(0, 3)]["position_ids"], ds[(1, 3)]["position_ids"])
    assert changed == (scheme != "flt")
    if scheme != "flt":
        assert int(pos.max()) > 307  # positions simulate a window longer than the sample


def test_hydra_longrecipe_config_node_is_instantiated_and_bound(tiny_tokenizer_dir, cache_dir):
    from hydra.utils import instantiate

    cfg = _compose(cache_dir, "position=longrecipe", "data.sample_length=200", "target_length=2048")
    dm = instantiate(cfg.data, _partial_=True)(tokenizer=str(tiny_tokenizer_dir), position=cfg.position)
    assert type(dm.position).__name__ == "LongRecipePositions" and dm.sample_length == 200
    pos = dm.train_dataset()[(0, 0)]["position_ids"]
    assert pos.shape == (200,) and pos[-1] < 2048


def test_state_union_end_to_end(tiny_tokenizer, cache_dir, state_union_dir):
    from hydra.utils import instantiate

    from longrecipe.config import compose

    cfg = compose("train", ["data=state_union", f"data.source={state_union_dir}", f"data.cache_dir={cache_dir}",
                            "data.max_samples=4"])
    dm = instantiate(cfg.data, _partial_=True)(tokenizer=tiny_tokenizer, position=Gapped())
    dm.setup()
    read = dm.stats["read"]
    assert (read["docs_read"], read["empty_skipped"], read["n_files_bad_utf8"], read["files_read"]) == (65, 0, 6, 65)
    assert read["bytes_replaced"] == 331
    assert len(dm.train_samples) == 4 and next(iter(dm.train_dataloader()))["input_ids"].shape == (1, 307)


# ----------------------------------------------------------------------------------------------------
def test_prepared_format_passes_segment_starts_and_pads(tmp_path):
    import datasets

    folder = tmp_path / "prepared"
    datasets.Dataset.from_dict({
        "input_ids": [[5, 6, 7, 8, 9], [10, 11, 12]],
        "segment_starts": [[0, 2], [0]],
        "doc_ids": [["a", "b"], ["c"]],
    }).save_to_disk(str(folder))
    rec = RecordSegments()
    dm = LongContextDataModule(None, rec, target_length=8, sample_length=5, source=str(folder), format="prepared",
                               val_fraction=0.0, batch_size=2, shuffle=False)
    batch = next(iter(dm.train_dataloader()))
    assert rec.seen == [[0, 2], [0]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match=r"rows of 3\.\.5 tokens; each must be 1\.\.data\.target_length \(4\)"):
        LongContextDataModule(None, None, target_length=4, sample_length=3, source=str(folder),
                              format="prepared").setup()


def test_packed_samples_round_trip_through_prepared(tiny_tokenizer, cache_dir, tmp_path):
    dm = make_dm(tiny_tokenizer, cache_dir, val_fraction=0.0)
    dm.setup()
    dm.train_samples.save_to_disk(str(tmp_path / "p"))
    rec = RecordSegments()
    again = LongContextDataModule(tiny_tokenizer, rec, target_length=TARGET, source=str(tmp_path / "p"),
                                  format="prepared", val_fraction=0.0, seed=11)
    row = dm.train_samples[2]
    assert again.train_dataset()[(0, 2)]["input_ids"].tolist() == row["input_ids"]
    assert rec.seen == [row["segment_starts"]]


# ----------------------------------------------------------------------------------------------------
def test_resolve_sample_length():
    assert resolve_sample_length(None, 0.3, 81920) == 24576
    assert resolve_sample_length(100, None, 1024) == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_length": 2000}, r"data\.sample_length \(2000\) must be <= data\.target_length \(1024\)"),
        ({"token_ratio": 0.0}, r"token_ratio must be in \(0, 1\], got 0\.0"),
        ({"token_ratio": 1.5}, r"token_ratio must be in \(0, 1\], got 1\.5"),
        ({"short_docs": "pad"}, r"data\.short_docs must be one of \['concat', 'drop'\], got 'pad'"),
        ({"encoding_errors": "oops"}, r"data\.encoding_errors must be one of \['replace'"),
        ({"format": "csv"}, r"data\.format must be one of \['auto', 'txt', 'jsonl', 'parquet', 'hf', 'prepared'\]"),
        ({"val_fraction": 1.0}, r"data\.val_fraction must be in \[0, 1\), got 1\.0"),
        ({"batch_size": 0}, r"data\.batch_size must be an integer >= 1, got 0"),
        ({"num_workers": -1}, r"data\.num_workers must be an integer >= 0, got -1"),
        ({"target_length": 0}, r"data\.target_length must be an integer >= 2, got 0"),
        ({"source": ""}, r"data\.source is empty"),
    ],
)
def test_bad_config_messages(tiny_tokenizer, kwargs, message):
    args = dict(target_length=TARGET)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        LongContextDataModule(tiny_tokenizer, None, **args)


def test_bad_data_messages(tiny_tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"needs a tokenizer"):
        LongContextDataModule(None, None, target_length=TARGET)
    with pytest.raises(ValueError, match=r"position must be a scheme callable"):
        LongContextDataModule(tiny_tokenizer, 3, target_length=TARGET)
    with pytest.raises(ValueError, match=r"data\.source '.*missing' does not exist \(looked for "):
        LongContextDataModule(tiny_tokenizer, None, target_length=TARGET, source=str(tmp_path / "missing")).setup()
    (tmp_path / "short.txt").write_text("only a few words here")
    with pytest.raises(ValueError, match=r"gives no training sample: \d+ tokens in 1 training documents, "
                                         r"data\.sample_length=307"):
        LongContextDataModule(tiny_tokenizer, None, target_length=TARGET, source=str(tmp_path / "short.txt"),
                              cache_dir=tmp_path / "c").setup()
    with pytest.raises(ValueError, match=r"position scheme Broken broke the contract \(start 0, strictly increasing"):

        class Broken:
            def __call__(self, input_ids, rng, *, segment_starts=None):
                return np.zeros(len(input_ids), dtype=np.int64)

        make_dm(tiny_tokenizer, tmp_path / "c2", Broken()).train_dataset()[0]


# ----------------------------------------------------------------------------------------------------
def test_sequence_parallel_ranks_share_samples(tiny_tokenizer, cache_dir, monkeypatch):
    """world 4 = dp 2 x sp 2: ranks 2 and 3 form one SP group -> data-parallel rank 1 of 2."""
    import longrecipe.parallel.groups as groups

    keys = {}
    for rank in range(4):
        state = groups.SequenceParallelState(layout=groups.SequenceParallelLayout(world_size=4, sp_size=2),
                                             rank=rank, sp_group=None, dp_group=None)
        monkeypatch.setattr(groups, "_STATE", state)
        dm = make_dm(tiny_tokenizer, cache_dir, Gapped())
        sampler = dm.train_sampler()
        assert (sampler.rank, sampler.num_replicas) == (rank // 2, 2)
        keys[rank] = list(sampler)
    assert keys[0] == keys[1] and keys[2] == keys[3]
    assert set(keys[0]).isdisjoint(keys[2])


def _ddp_worker(rank, world, init_file, tokenizer_dir, cache, out_dir):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dm = LongContextDataModule(str(tokenizer_dir), Gapped(), target_length=TARGET, n_docs=24, seed=11,
                                   cache_dir=cache, batch_size=2, max_samples=9)
        got = [(b["input_ids"][:, :4].tolist(), b["position_ids"][:, -1].tolist()) for b in dm.train_dataloader()]
        keys = list(dm.train_sampler())
        (out_dir / f"rank{rank}.json").write_text(json.dumps({"batches": got, "keys": keys}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_two_processes_partition_the_epoch(tiny_tokenizer, tiny_tokenizer_dir, cache_dir, tmp_path):
    """Two gloo processes: disjoint halves of the epoch (9 samples padded to 10), and each rank's batches
    equal what a single process computes for that rank's keys."""
    import json

    import torch.multiprocessing as mp

    make_dm(tiny_tokenizer, cache_dir, max_samples=9).setup()  # fill the arrow cache first
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), tiny_tokenizer_dir, cache_dir, tmp_path), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    keys = [[tuple(k) for k in r["keys"]] for r in ranks]
    assert len(keys[0]) == len(keys[1]) == 5
    assert sorted({i for k in keys for _, i in k}) == list(range(9))  # every sample, one repeated as padding
    local = make_dm(tiny_tokenizer, cache_dir, Gapped(), max_samples=9).train_dataset()
    for r in range(2):
        first = [local[k] for k in keys[r][:2]]
        assert ranks[r]["batches"][0][0] == [f["input_ids"][:4].tolist() for f in first]
        assert ranks[r]["batches"][0][1] == [int(f["position_ids"][-1]) for f in first]


def test_drop_policy_and_hf_folder_through_the_module(tiny_tokenizer, cache_dir, tmp_path):
    import datasets

    dm = make_dm(tiny_tokenizer, cache_dir, short_docs="drop", val_fraction=0.0)
    dm.setup()
    assert all(len(row["doc_ids"]) == 1 and row["segment_starts"] == [0] for row in dm.train_samples)
    eos = tiny_tokenizer.eos_token_id
    assert all(eos not in row["input_ids"] for row in dm.train_samples)  # no EOS inserted with drop
    packing = dm.stats["train_packing"]
    assert packing["short_docs_dropped"] == 0 and packing["tail_tokens_dropped"] > 0

    docs = [" ".join(["word"] * 400), "", "short text"]
    datasets.Dataset.from_dict({"body": docs}).save_to_disk(str(tmp_path / "hf"))
    hf = LongContextDataModule(tiny_tokenizer, None, target_length=200, sample_length=100, source=str(tmp_path / "hf"),
                               text_field="body", val_fraction=0.0, cache_dir=tmp_path / "c")
    hf.setup()
    assert hf.stats["read"]["docs_read"] == 2 and hf.stats["read"]["empty_skipped"] == 1
    expected = len(tiny_tokenizer(docs[0], add_special_tokens=False)["input_ids"]) + 1 + \
        len(tiny_tokenizer(docs[2], add_special_tokens=False)["input_ids"]) + 1
    assert len(hf.train_samples) == expected // 100


class EndsAtWindow:
    """Stub scheme: 0, then the last n-1 positions of the window (max position = target_length - 1)."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def __call__(self, input_ids, rng, *, segment_starts=None):
        n = len(input_ids)
        return np.concatenate([[0], np.arange(self.target_length - n + 1, self.target_length)])


def test_padding_positions_stay_inside_the_target_window(tmp_path):
    """Pad positions past target_length - 1 would make dynamic RoPE rescale the whole batch."""
    import datasets

    folder = tmp_path / "prepared"
    datasets.Dataset.from_dict({
        "input_ids": [[5, 6, 7, 8, 9], [10, 11, 12]],
        "segment_starts": [[0], [0]],
        "doc_ids": [["a"], ["b"]],
    }).save_to_disk(str(folder))
    dm = LongContextDataModule(None, EndsAtWindow(8), target_length=8, sample_length=5, source=str(folder),
                               format="prepared", val_fraction=0.0, batch_size=2, shuffle=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["position_ids"].tolist() == [[0, 4, 5, 6, 7], [0, 6, 7, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
