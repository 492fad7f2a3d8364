"""FlowDataModule: shapes known before setup, n_bits reduction, splits, flips, errors, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from data_helpers import MNIST_FIRST_LABELS

from glowlab.data import DatasetNotFoundError, FlowDataModule, split_train_val


def first_batch(loader):
    return next(iter(loader))


def shape_cases(shared_mnist, image_folder, fake_mnist):
    folder = str(image_folder[0])
    return [
        (dict(dataset="digits", root="x", n_bits=5), (1, 8, 8)),
        (dict(dataset="digits", root="x", n_bits=5, pad_to=10), (1, 10, 10)),
        (dict(dataset="mnist_idx", root=str(shared_mnist), n_bits=5, pad_to=32), (1, 32, 32)),
        (dict(dataset="mnist_idx", root=str(shared_mnist), n_bits=8, image_size=16), (1, 16, 16)),
        (dict(dataset="mnist", root=str(fake_mnist[0]), n_bits=6, crop=20, pad_to=24), (1, 24, 24)),
        (dict(dataset="image_folder", root=folder, n_bits=8), (3, 12, 10)),  # read from a file
        (dict(dataset="image_folder", root=folder, n_bits=8, image_size=8), (3, 8, 8)),
        (dict(dataset="image_folder", root=folder, n_bits=8, crop=9, image_size=4, pad_to=6), (3, 6, 6)),
    ]


def test_image_shape_before_setup_matches_batches(shared_mnist, image_folder, fake_mnist):
    for kwargs, expected in shape_cases(shared_mnist, image_folder, fake_mnist):
        dm = FlowDataModule(batch_size=4, val_size=2, **kwargs)
        assert dm.image_shape == expected, kwargs  # before any data is loaded
        dm.setup(None)
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
            x, y = first_batch(loader)
            assert tuple(x.shape[1:]) == expected, kwargs
            assert x.dtype == torch.uint8 and y.dtype == torch.int64 and y.shape == x.shape[:1]
            assert int(x.max()) < 2 ** kwargs["n_bits"]


@pytest.mark.parametrize("n_bits", [1, 3, 5, 8])
def test_n_bits_drops_low_bits_exactly(shared_mnist, n_bits):
    dm = FlowDataModule("mnist_idx", root=str(shared_mnist), n_bits=n_bits, batch_size=100,
                        train_count=9000, test_count=1000)
    dm.setup("test")
    x, y = first_batch(dm.test_dataloader())  # test is in order: images 9000..9099
    raw = torch.from_numpy(np.asarray(dm.test_dataset.base.images[:100]))
    assert torch.equal(x, (raw >> (8 - n_bits)).to(torch.uint8))
    assert int(x.max()) == 2**n_bits - 1 and int(x.min()) == 0
    assert y.tolist() == dm.test_dataset.base.labels[:100].tolist()


def test_mnist_idx_split_sizes(shared_mnist):
    dm = FlowDataModule("mnist_idx", root=str(shared_mnist), n_bits=8, val_size=0.05,
                        train_count=9000, test_count=1000)
    dm.setup(None)
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (8550, 450, 1000)
    assert dm.train_dataset.base.labels[:10].tolist() == MNIST_FIRST_LABELS
    seen = torch.cat([dm.train_dataset.indices, dm.val_dataset.indices]).sort().values
    assert torch.equal(seen, torch.arange(9000))
    assert dm.num_classes == 10 and dm.num_dims == 784


def test_pad_to_centres_the_image(shared_mnist):
    dm = FlowDataModule("mnist_idx", root=str(shared_mnist), n_bits=8, pad_to=32, batch_size=8)
    dm.setup("test")
    x, _ = first_batch(dm.test_dataloader())
    raw = dm.test_dataset.base.images[:8]
    assert torch.equal(x[..., 2:30, 2:30], raw)
    border = x.clone()
    border[..., 2:30, 2:30] = 0
    assert int(border.max()) == 0


def test_image_folder_pixels_reduced(image_folder):
    root, pixels = image_folder
    dm = FlowDataModule("image_folder", root=str(root), n_bits=3, batch_size=4)
    dm.setup("test")
    x, y = first_batch(dm.test_dataloader())  # cat/0, cat/1, dog/0, dog/1
    want = np.stack(pixels["test"]["cat"] + pixels["test"]["dog"]).transpose(0, 3, 1, 2) >> 5
    np.testing.assert_array_equal(x.numpy(), want)
    assert y.tolist() == [0, 0, 1, 1] and dm.num_classes == 2


def test_celeba_crop_resize_5_bits(fake_celeba):
    dm = FlowDataModule("celeba", root=str(fake_celeba), n_bits=5, crop=148, image_size=64, hflip=True,
                        val_size=1, batch_size=2, download=False)
    assert dm.image_shape == (3, 64, 64) and dm.num_classes == 0
    dm.setup(None)
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (2, 1, 2)
    x, y = first_batch(dm.train_dataloader())
    assert tuple(x.shape) == (2, 3, 64, 64) and x.dtype == torch.uint8 and int(x.max()) < 32
    assert y.tolist() == [0, 0]


def test_digits_values_pass_through():
    dm = FlowDataModule("digits", root="x", n_bits=5, batch_size=360)
    dm.setup("test")
    x, _ = first_batch(dm.test_dataloader())
    assert torch.equal(x, dm.test_dataset.base.images)  # 5-bit data used as it is
    assert int(x.max()) == 16


def test_digits_requires_5_bits():
    with pytest.raises(ValueError, match="n_bits=5"):
        FlowDataModule("digits", root="x", n_bits=8)


def test_val_split_deterministic_and_disjoint():
    a, b = split_train_val(1437, 0.1, seed=0), split_train_val(1437, 0.1, seed=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    train, val = a
    assert len(val) == 144 and len(train) == 1437 - 144
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(1437))
    assert not torch.equal(val, split_train_val(1437, 0.1, seed=1)[1])
    assert len(split_train_val(1437, 100, seed=0)[1]) == 100


def test_val_split_in_datamodule_follows_seed():
    dms = [FlowDataModule("digits", root="x", n_bits=5, val_size=0.1, seed=s) for s in (3, 3, 4)]
    for dm in dms:
        dm.setup("fit")
    assert torch.equal(dms[0].val_dataset.indices, dms[1].val_dataset.indices)
    assert not torch.equal(dms[0].val_dataset.indices, dms[2].val_dataset.indices)
    assert set(dms[0].val_dataset.indices.tolist()).isdisjoint(dms[0].train_dataset.indices.tolist())


def test_no_validation_when_val_size_zero():
    dm = FlowDataModule("digits", root="x", n_bits=5, val_size=0)
    dm.setup("fit")
    assert dm.val_dataloader() == [] and len(dm.train_dataset) == 1437


@pytest.mark.parametrize("val_size", [1.0, -0.1, 1437, True, "0.1"])
def test_bad_val_size(val_size):
    with pytest.raises(ValueError, match="val_size"):
        FlowDataModule("digits", root="x", n_bits=5, val_size=val_size).setup("fit")


def test_limits_take_the_first_images(shared_mnist):
    dm = FlowDataModule("mnist_idx", root=str(shared_mnist), n_bits=8, train_limit=100, test_limit=30,
                        val_size=10, train_count=9000, test_count=1000)
    dm.setup(None)
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (90, 10, 30)
    assert int(torch.cat([dm.train_dataset.indices, dm.val_dataset.indices]).max()) == 99


def test_hflip_only_on_train():
    torch.manual_seed(0)
    dm = FlowDataModule("digits", root="x", n_bits=5, hflip=True, val_size=200)
    dm.setup(None)
    base = dm.train_dataset.base

    def flipped(ds, i):
        x = ds[i][0]
        orig = base.images[int(ds.indices[i])] if hasattr(ds, "indices") else None
        if torch.equal(orig, orig.flip(-1)):
            return None  # symmetric image: cannot tell
        assert torch.equal(x, orig) or torch.equal(x, orig.flip(-1))
        return torch.equal(x, orig.flip(-1))

    train = [flipped(dm.train_dataset, i) for i in range(300)]
    assert 100 < sum(v for v in train if v is not None) < 200
    assert not any(flipped(dm.val_dataset, i) for i in range(200))
    assert not any(dm.test_dataset[i][0].ne(dm.test_dataset.base.images[i]).any() for i in range(360))


def test_check_model_compatible_names_both_shapes(shared_mnist):
    dm = FlowDataModule("mnist_idx", root=str(shared_mnist), n_bits=8)
    dm.check_model_compatible((1, 28, 28))
    dm.check_model_compatible([1, 28, 28])
    with pytest.raises(ValueError) as info:
        dm.check_model_compatible((3, 32, 32))
    msg = str(info.value)
    assert "(1, 28, 28)" in msg and "(3, 32, 32)" in msg and "model.image_shape" in msg
    with pytest.raises(ValueError, match="data.pad_to=32"):
        dm.check_model_compatible((1, 32, 32))


def test_missing_data_raised_in_setup_names_root(tmp_path):
    root = tmp_path / "absent"
    dm = FlowDataModule("cifar10", root=str(root), download=False)
    assert dm.image_shape == (3, 32, 32)  # known without the files
    dm.prepare_data()  # download=False: nothing to do
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup("fit")
    assert str(root) in str(info.value) and "cifar10" in str(info.value)


def test_relative_root_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    dm = FlowDataModule("digits", root="data/digits", n_bits=5)
    assert dm.root == str(tmp_path / "data" / "digits")


def test_train_loader_shuffles_and_drops_last():
    dm = FlowDataModule("digits", root="x", n_bits=5, batch_size=100, val_size=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 1437 // 100
    y = torch.cat([b[1] for b in loader])
    assert len(y) == 1400 and not torch.equal(y, dm.train_dataset.base.labels[:1400])


def test_picklable_and_workers_agree():
    dm = FlowDataModule("digits", root="x", n_bits=5, eval_batch_size=50, hflip=True)
    dm.setup(None)
    clone = pickle.loads(pickle.dumps(dm.train_dataset))
    assert len(clone) == len(dm.train_dataset) and clone.transform.hflip
    serial = torch.cat([b[0] for b in dm.test_dataloader()])
    dm.num_workers = 1
    parallel = torch.cat([b[0] for b in dm.test_dataloader()])
    assert torch.equal(serial, parallel)


def test_setup_before_loaders():
    with pytest.raises(RuntimeError, match="setup"):
        FlowDataModule("digits", root="x", n_bits=5).train_dataloader()
