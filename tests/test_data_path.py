import torch

from transfer_core.data import Augmentation, BatchFormat, DeviceArrayLoader, augment_batch
from transfer_core.datasets import ArraySplit


def make_split(n=50, size=8):
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8)
    return ArraySplit(images, torch.arange(n) % 5)


FMT = BatchFormat(torch.device("cpu"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_training_drops_the_last_partial_batch_and_evaluation_keeps_it():
    split = make_split(50)
    train = DeviceArrayLoader(split, FMT, 16, True, Augmentation())
    evaluation = DeviceArrayLoader(split, FMT, 16, False, Augmentation())
    assert [len(y) for _, y in train] == [16, 16, 16] and len(train) == 3
    assert [len(y) for _, y in evaluation] == [16, 16, 16, 2] and len(evaluation) == 4


def test_evaluation_batches_are_the_normalised_images_in_order():
    split = make_split(10)
    images, labels = next(iter(DeviceArrayLoader(split, FMT, 10, False, Augmentation())))
    expected = (split.images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(images, expected)
    assert torch.equal(labels, split.labels)


def test_shuffling_and_augmentation_are_seeded_per_epoch():
    split = make_split(40)

    def epoch_batches(seed, epoch):
        loader = DeviceArrayLoader(split, FMT, 8, True, Augmentation(crop_padding=2, flip=True), seed=seed)
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    first = epoch_batches(0, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches(0, 0)))
    assert not torch.equal(first[0], epoch_batches(0, 1)[0])
    assert not torch.equal(first[0], epoch_batches(1, 0)[0])


def test_crop_and_flip_move_pixels_without_inventing_them():
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    flipped = augment_batch(images, Augmentation(crop_padding=0, flip=True), generator)
    for original, out in zip(images, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(2))
    cropped = augment_batch(images, Augmentation(crop_padding=2, flip=False), generator)
    assert cropped.shape == images.shape
    # reflect padding: every output value comes from the same image
    for original, out in zip(images, cropped):
        assert set(out.flatten().tolist()) <= set(original.flatten().tolist())


def test_channels_last_batches():
    fmt = BatchFormat(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3, channels_last=True)
    images, _ = next(iter(DeviceArrayLoader(make_split(8), fmt, 4, True, Augmentation())))
    assert images.is_contiguous(memory_format=torch.channels_last)
