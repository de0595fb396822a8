"""The batch iterator: determinism by seed, exact resumption, multi-host slices, shapes."""

import dataclasses
import json

import numpy as np
import pytest

from jaxalign.data import (
    DataConfig,
    LoaderState,
    PreferenceDataset,
    PreferenceLoader,
    TokenizedPair,
    build_preference_loader,
    epoch_permutation,
    load_preference_dataset,
    make_tiny_preference_dataset,
    process_slice,
    tiny_preference_score,
)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_preference_dataset(tmp_path_factory.mktemp("d") / "tiny.jsonl", 40, seed=3)


@pytest.fixture(scope="module")
def config(tiny_path):
    return DataConfig(
        path=str(tiny_path), batch_size=8, max_length=32, max_prompt_length=16, seed=7
    )


@pytest.fixture(scope="module")
def dataset(config, tokenizer):
    return load_preference_dataset(config, tokenizer)


def _take(loader, k):
    return [next(loader) for _ in range(k)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in x._fields:
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)


def _loader(dataset, config, **kw):
    return PreferenceLoader.from_config(
        dataset, dataclasses.replace(config, **kw.pop("cfg", {})), **kw
    )


def test_batches_have_static_shapes_and_dtypes(dataset, config):
    batch = next(_loader(dataset, config))
    for name in ("chosen_input_ids", "chosen_attention_mask", "rejected_loss_mask"):
        assert getattr(batch, name).shape == (8, 32)
    assert batch.example_mask.shape == (8,)
    assert batch.chosen_input_ids.dtype == np.int32
    assert batch.chosen_loss_mask.dtype == np.float32
    # every row has at least one response token to score
    assert (batch.chosen_loss_mask.sum(1) > 0).all() and (batch.rejected_loss_mask.sum(1) > 0).all()


def test_each_epoch_is_a_permutation_and_epochs_differ(dataset, config):
    loader = _loader(dataset, config, cfg={"drop_last": True})
    assert loader.batches_per_epoch == 5
    seen = [loader.global_batch_indices()[0]]
    next(loader)
    for _ in range(4):
        seen.append(loader.global_batch_indices()[0])
        next(loader)
    epoch0 = np.concatenate(seen)
    assert sorted(epoch0.tolist()) == list(range(40))
    assert loader.state == LoaderState(epoch=1, index=0, seed=7)
    epoch1 = epoch_permutation(40, seed=7, epoch=1)
    np.testing.assert_array_equal(epoch0, epoch_permutation(40, seed=7, epoch=0))
    assert not np.array_equal(epoch0, epoch1)


def test_same_seed_same_batches_other_seed_other_batches(dataset, config):
    a = _take(_loader(dataset, config), 3)
    b = _take(_loader(dataset, config), 3)
    c = _take(_loader(dataset, config, cfg={"seed": 8}), 3)
    _assert_batches_equal(a, b)
    assert not np.array_equal(a[0].chosen_input_ids, c[0].chosen_input_ids)


def test_shuffle_false_keeps_file_order(dataset, config):
    loader = _loader(dataset, config, cfg={"shuffle": False})
    np.testing.assert_array_equal(loader.global_batch_indices()[0], np.arange(8))


@pytest.mark.parametrize("consumed", [0, 2, 5, 7, 13])
def test_resume_from_saved_state_equals_uninterrupted(dataset, config, consumed):
    reference = _take(_loader(dataset, config), consumed + 6)
    first = _loader(dataset, config)
    _take(first, consumed)
    saved = json.dumps(first.state_dict())  # what a checkpoint would store
    resumed = _loader(dataset, config, state=json.loads(saved))
    _assert_batches_equal(_take(resumed, 6), reference[consumed:])
    restored_from_json = _loader(dataset, config)
    restored_from_json.restore(saved)
    assert restored_from_json.state == first.state


def test_restoring_state_of_another_dataset_is_an_error(dataset, config):
    with pytest.raises(ValueError, match="saved for a dataset of 41 examples"):
        _loader(dataset, config, state={"epoch": 0, "index": 0, "seed": 7, "num_examples": 41})
    with pytest.raises(ValueError, match="missing 'index'"):
        _loader(dataset, config, state={"epoch": 0, "seed": 7})
    with pytest.raises(ValueError, match="beyond the dataset size"):
        _loader(dataset, config, state=LoaderState(0, 41, 7))


def test_num_epochs_stops_iteration(dataset, config):
    loader = _loader(dataset, config, cfg={"num_epochs": 2})
    assert len(list(loader)) == 10


def test_partial_last_batch_is_padded_with_masked_filler_rows(config, tokenizer, tmp_path):
    path = make_tiny_preference_dataset(tmp_path / "t.jsonl", 10, seed=0)
    cfg = dataclasses.replace(config, path=str(path), drop_last=False, num_epochs=1)
    batches = list(build_preference_loader(cfg, tokenizer))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[1].example_mask, [1, 1, 0, 0, 0, 0, 0, 0])
    assert batches[1].chosen_loss_mask[2:].sum() == 0
    assert (batches[1].chosen_attention_mask[2:].sum(1) > 0).all()
    with pytest.raises(ValueError, match="fewer than batch_size=16"):
        build_preference_loader(dataclasses.replace(cfg, batch_size=16, drop_last=True), tokenizer)


def test_bucket_padding_picks_smallest_bucket_that_fits(dataset, config):
    loader = _loader(dataset, config, cfg={"padding": "bucket", "bucket_sizes": (8, 16, 24, 32)})
    for _ in range(5):
        rows, _ = loader.global_batch_indices()
        longest = max(
            len(dataset[i].prompt) + max(len(dataset[i].chosen), len(dataset[i].rejected))
            for i in rows
        )
        batch = next(loader)
        length = batch.chosen_input_ids.shape[1]
        assert length in (8, 16, 24, 32)
        assert length >= longest and (length == 8 or length - 8 < longest)


def test_process_slices_partition_the_global_batch():
    parts = [process_slice(12, p, 3) for p in range(3)]
    assert parts == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(ValueError, match="not divisible by the 5 processes"):
        process_slice(12, 0, 5)
    with pytest.raises(ValueError, match="must be in"):
        process_slice(12, 3, 3)


@pytest.mark.parametrize("padding", ["max_length", "bucket"])
def test_two_simulated_processes_together_yield_the_global_batch(config, padding):
    # A dataset whose longest example sits in the second half of the first batch, so
    # per-process bucketing would disagree on shapes; the global choice must not.
    lengths = [2] * 16
    lengths[13] = 12
    examples = [
        TokenizedPair(
            np.arange(1, 3, dtype=np.int32),
            np.full(n, 7, np.int32),
            np.full(1, 8, np.int32),
            False,
            False,
        )
        for n in lengths
    ]
    ds = PreferenceDataset(examples)
    cfg = dataclasses.replace(config, shuffle=False, padding=padding, bucket_sizes=(4, 8, 16, 32))
    single = _take(PreferenceLoader.from_config(ds, cfg), 3)
    procs = [
        _take(PreferenceLoader.from_config(ds, cfg, process_index=p, process_count=2), 3)
        for p in range(2)
    ]
    for step, batch in enumerate(single):
        for name in batch._fields:
            local = [getattr(procs[p][step], name) for p in range(2)]
            if getattr(batch, name) is None:  # optional fields unset on every process
                assert local == [None, None]
                continue
            assert local[0].shape[0] == 4 and local[0].shape == local[1].shape
            np.testing.assert_array_equal(np.concatenate(local), getattr(batch, name))


def test_resumed_process_loaders_continue_their_own_slice(dataset, config):
    ref = _take(_loader(dataset, config, process_index=1, process_count=2), 4)
    first = _loader(dataset, config, process_index=1, process_count=2)
    _take(first, 2)
    resumed = _loader(dataset, config, process_index=1, process_count=2, state=first.state_dict())
    _assert_batches_equal(_take(resumed, 2), ref[2:])


def test_tiny_dataset_is_deterministic_and_prefers_sorted_responses(tmp_path):
    a = make_tiny_preference_dataset(tmp_path / "a.jsonl", 20, seed=1).read_text()
    b = make_tiny_preference_dataset(tmp_path / "b.jsonl", 20, seed=1).read_text()
    c = make_tiny_preference_dataset(tmp_path / "c.jsonl", 20, seed=2).read_text()
    assert a == b and a != c
    for line in a.splitlines():
        row = json.loads(line)
        assert tiny_preference_score(row["prompt"], row["chosen"]) == 1.0
        assert tiny_preference_score(row["prompt"], row["rejected"]) < 1.0
        assert sorted(row["chosen"].split()) == sorted(row["rejected"].split())


def test_tiny_conversational_dataset_uses_the_chat_template(tmp_path, chat_tokenizer):
    path = make_tiny_preference_dataset(tmp_path / "c.jsonl", 8, seed=0, conversational=True)
    cfg = DataConfig(path=str(path), batch_size=4, max_length=48, max_prompt_length=32)
    batch = next(build_preference_loader(cfg, chat_tokenizer))
    text = chat_tokenizer.decode(batch.chosen_input_ids[0][batch.chosen_attention_mask[0] == 1])
    assert text.startswith("<s>user: sort: ") and "<s>assistant: " in text and text.endswith("</s>")
    response = chat_tokenizer.decode(batch.chosen_input_ids[0][batch.chosen_loss_mask[0] == 1])
    assert response.startswith(" ") and response.endswith("</s>")
    prompt = text.split("</s>")[0].removeprefix("<s>user: ")
    assert tiny_preference_score(prompt, response.removesuffix("</s>")) == 1.0
