"""The device-resident array loader and the batched augmentation behind it."""

import pytest
import torch
import torch.nn.functional as F

from transfer_core.data import Augmentation, BatchFormat, DeviceArrayLoader
from transfer_core.data.augment import crop_flip_gather, cutout, pad_nhwc, reflect_index
from transfer_core.datasets import ArraySplit
from transfer_core.distributed import Shard

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
FMT = BatchFormat(torch.device("cpu"), MEAN, STD)
NO_AUGMENT = Augmentation(crop_padding=0, flip="none")


def make_split(n=50, size=8):
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    return ArraySplit(images, torch.arange(n))  # label = example id, so tests can find each image


def normalised(pixels_nhwc: torch.Tensor) -> torch.Tensor:
    """The reference: torchvision's ToTensor + Normalize, written out."""
    x = pixels_nhwc.permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def one_epoch(loader, epoch=0):
    loader.set_epoch(epoch)
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_training_drops_the_last_partial_batch_and_evaluation_keeps_it():
    split = make_split(50)
    train = DeviceArrayLoader(split, FMT, 16, True, Augmentation())
    evaluation = DeviceArrayLoader(split, FMT, 16, False, Augmentation())
    assert [len(y) for _, y in train] == [16, 16, 16] and len(train) == 3
    assert [len(y) for _, y in evaluation] == [16, 16, 16, 2] and len(evaluation) == 4


def test_evaluation_batches_are_the_normalised_images_in_order():
    split = make_split(10)
    images, labels = one_epoch(DeviceArrayLoader(split, FMT, 4, False, Augmentation()))
    torch.testing.assert_close(images, normalised(split.images))
    assert torch.equal(labels, split.labels)


def test_training_without_augmentation_shuffles_whole_examples():
    split = make_split(32)
    images, labels = one_epoch(DeviceArrayLoader(split, FMT, 8, True, NO_AUGMENT))
    assert sorted(labels.tolist()) == list(range(32)) and labels.tolist() != list(range(32))
    torch.testing.assert_close(images, normalised(split.images[labels]))


def test_shuffling_and_augmentation_are_seeded_per_epoch():
    split = make_split(40)

    def epoch(seed, n):
        return one_epoch(DeviceArrayLoader(split, FMT, 8, True, Augmentation(crop_padding=2, cutout=3), seed=seed), n)[
            0
        ]

    first = epoch(0, 0)
    assert torch.equal(first, epoch(0, 0))
    assert not torch.equal(first, epoch(0, 1))
    assert not torch.equal(first, epoch(1, 0))


def test_reflect_padding_matches_torch_pad():
    images = torch.randint(0, 256, (3, 6, 7, 2), dtype=torch.uint8)
    reference = F.pad(images.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="reflect").permute(0, 2, 3, 1)
    assert torch.equal(pad_nhwc(images, 2, "reflect").float(), reference)
    assert reflect_index(4, 2, torch.device("cpu")).tolist() == [2, 1, 0, 1, 2, 3, 2, 1]


def test_gather_takes_each_crop_and_mirrors_it():
    source = torch.randint(0, 256, (4, 10, 10, 3), dtype=torch.uint8)
    ids, dy, dx = torch.tensor([2, 0, 3]), torch.tensor([0, 3, 1]), torch.tensor([4, 0, 2])
    flip = torch.tensor([False, True, True])
    out = crop_flip_gather(source, ids, (6, 5), dy, dx, flip)
    for k in range(3):
        crop = source[ids[k], dy[k] : dy[k] + 6, dx[k] : dx[k] + 5]
        assert torch.equal(out[k], crop.flip(1) if flip[k] else crop)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_every_training_image_is_a_padded_crop_of_its_original_possibly_mirrored(mode):
    split, pad = make_split(12, size=6), 2
    loader = DeviceArrayLoader(split, FMT, 4, True, Augmentation(crop_padding=pad, padding_mode=mode, flip="random"))
    images, labels = one_epoch(loader)
    padded = normalised(pad_nhwc(split.images, pad, mode))  # zeros: black, i.e. raw pixel 0
    mirrored = 0
    for image, label in zip(images, labels):
        candidates = [padded[label, :, y : y + 6, x : x + 6] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
        plain = any(torch.allclose(image, c, atol=1e-5) for c in candidates)
        flipped = any(torch.allclose(image, c.flip(2), atol=1e-5) for c in candidates)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 0 < mirrored < len(labels)


def test_alternate_flip_mirrors_each_image_on_alternate_epochs():
    split = make_split(16)
    loader = DeviceArrayLoader(split, FMT, 4, True, Augmentation(crop_padding=0, flip="alternate"), seed=3)
    by_epoch = []
    for n in range(3):
        images, labels = one_epoch(loader, n)
        by_epoch.append(images[labels.argsort()])
    originals = normalised(split.images)
    unflipped_first = 0
    for k in range(16):
        first = torch.allclose(by_epoch[0][k], originals[k], atol=1e-5)
        unflipped_first += first
        assert first or torch.allclose(by_epoch[0][k], originals[k].flip(2), atol=1e-5)
        assert torch.equal(by_epoch[1][k], by_epoch[0][k].flip(2))  # the other way round next epoch
        assert torch.equal(by_epoch[2][k], by_epoch[0][k])
    assert 0 < unflipped_first < 16  # a random start per image


def test_cutout_zeroes_one_square_per_image():
    images = torch.ones(64, 3, 12, 12)
    out = cutout(images, 4, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=1)  # (B, H, W): every channel zero
    assert (out[~zeroed[:, None].expand_as(out)] == 1).all()
    per_image = zeroed.flatten(1).sum(1)
    assert per_image.max() == 16 and per_image.min() >= 4  # a whole 4x4 square, or its part inside the border
    rows_hit = zeroed.any(dim=2)  # a square: zeroed rows are contiguous
    assert all(torch.diff(r.nonzero().flatten()).le(1).all() for r in rows_hit if r.any())


def test_resolution_dtype_and_layout():
    fmt = BatchFormat(torch.device("cpu"), MEAN, STD, channels_last=True, dtype=torch.bfloat16)
    split = make_split(8)
    train = DeviceArrayLoader(split, fmt, 4, True, Augmentation(), resolution=20)
    images, _ = next(iter(train))
    assert images.shape == (4, 3, 20, 20) and images.dtype == torch.bfloat16
    assert images.is_contiguous(memory_format=torch.channels_last)
    evaluation, _ = one_epoch(DeviceArrayLoader(split, fmt, 8, False, Augmentation(), resolution=16))
    expected = F.interpolate(normalised(split.images), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(evaluation.float(), expected, atol=0.05, rtol=0.02)  # bf16 rounding


def test_contiguous_layout_when_channels_last_is_off():
    images, _ = next(iter(DeviceArrayLoader(make_split(8), FMT, 4, True, Augmentation())))
    assert images.is_contiguous() and images.dtype == torch.float32


@pytest.mark.parametrize("flip", ["random", "alternate"])
def test_ranks_together_train_on_exactly_the_single_process_batches(flip):
    """Under torchrun each rank's batch is its slice of the global batch, with the crop, flip and cutout
    that image gets in a single process: the ranks' union is the single-process step, step for step."""
    split = make_split(50)
    augmentation = Augmentation(crop_padding=2, flip=flip, cutout=3)

    def epoch(shard):
        loader = DeviceArrayLoader(split, FMT, 12, True, augmentation, seed=5, shard=shard)
        loader.set_epoch(1)
        return list(loader)

    single, ranks = epoch(Shard()), [epoch(Shard(rank, 3)) for rank in range(3)]
    assert len(single) == 4 and all(len(r) == 4 for r in ranks)  # 50 // 12 global steps on every rank
    for step, (images, labels) in enumerate(single):
        assert [len(r[step][1]) for r in ranks] == [4, 4, 4]
        assert torch.equal(torch.cat([r[step][1] for r in ranks]), labels)
        assert torch.equal(torch.cat([r[step][0] for r in ranks]), images)


def test_ranks_score_contiguous_parts_of_the_evaluation_split():
    split = make_split(50)
    parts = [one_epoch(DeviceArrayLoader(split, FMT, 16, False, NO_AUGMENT, shard=Shard(rank, 3))) for rank in range(3)]
    assert [len(labels) for _, labels in parts] == [16, 17, 17]
    whole_images, whole_labels = one_epoch(DeviceArrayLoader(split, FMT, 16, False, NO_AUGMENT))
    assert torch.equal(torch.cat([labels for _, labels in parts]), whole_labels)
    assert torch.equal(torch.cat([images for images, _ in parts]), whole_images)


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ValueError, match="batch_size 10 does not split evenly over 3 ranks"):
        DeviceArrayLoader(make_split(50), FMT, 10, True, Augmentation(), shard=Shard(0, 3))
