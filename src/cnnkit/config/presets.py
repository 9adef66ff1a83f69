"""The presets: named recipes, each a set of dotted overrides on top of the schema's defaults
(the tutorial's recipe), so that each one reads as a diff. ``cnnkit config --presets`` lists them;
the configuration reference shows every key's value in each."""

from __future__ import annotations

from typing import Any

# What `cnnkit train` uses without --preset.
DEFAULT_PRESET = "fast"
PRESETS: dict[str, dict[str, Any]] = {
    # airbench94's recipe (Keller Jordan), in Keras: whitened first layer, BatchNorm, Nesterov SGD
    # with per-example rates, warm-up then linear decay, label smoothing, lookahead, reflect-padded
    # crops, alternating flips, and test-time augmentation. All 50,000 images train (no
    # validation split), as in the original.
    "fast": {
        "model.name": "fast_cnn",
        "data.val_split": 0.0,
        "augment.rotation": 0.0,
        "augment.shift": 0.0,
        "augment.translate": 2,
        "augment.alternate_flip": True,
        "train.epochs": 10,
        "train.batch_size": 1024,
        "train.optimizer": "nesterov",
        "train.learning_rate": 11.5,  # per 1024 examples
        "train.weight_decay": 0.0153,  # per 1024 examples
        "train.momentum": 0.85,
        "train.schedule": "linear",
        "train.warmup": 0.23,
        "train.lr_end": 0.07,
        "train.label_smoothing": 0.2,
        "train.bias_lr_scale": 64.0,
        "train.lookahead": 5,
        "train.whiten_bias_epochs": 3,
        "train.tta": 2,
        "train.keep": "last",
        "train.eval_batch_size": 1000,
    },
    # The tutorial, exactly: Adam 1e-4, batch 64, 100 epochs, ImageDataGenerator-style augmentation,
    # evaluated with the weights of the last epoch.
    "seed": {"train.keep": "last"},
    # Transfer learning from ImageNet (keras.applications MobileNetV2 at 96x96): three epochs
    # of the head alone, then three fine-tuning the top of the backbone at a tenth of the rate.
    "transfer": {
        "model.name": "mobilenet_v2",
        "data.image_size": 96,
        "augment.rotation": 0.0,
        "train.epochs": 6,
        "train.batch_size": 32,
        "train.learning_rate": 1e-3,
        "train.freeze_epochs": 3,
        "train.finetune_layers": 40,
        "train.finetune_lr_scale": 0.1,
    },
    # Seconds, for trying things: a stratified sample of CIFAR-10 and two epochs.
    "smoke": {
        "data.train_subset": 2000,
        "data.test_subset": 500,
        "train.epochs": 2,
        "train.learning_rate": 1e-3,
    },
}


def list_presets() -> list[str]:
    """The preset names ``--preset`` takes (``cnnkit config --presets`` shows what each changes)."""
    return sorted(PRESETS)
