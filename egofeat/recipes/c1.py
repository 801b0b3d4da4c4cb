"""The EPIC-KITCHENS C1 baselines (TSN, TRN, TSM) as recipes for heads on stored frame features.

Facts from epic-kitchens/C1-Action-Recognition-TSN-TRN-TSM (commit e8e1a79): the RGB configs
(``configs/{tsn,trn,tsm}_rgb.yaml``), the model (``src/models/tsn.py``, ``src/ops/trn.py``), the
training system (``src/systems.py``, ``src/train.py``) and the frame sampler
(``src/datasets/tsn_dataset.py``). The backbone (ResNet-50, partial BN, multi-scale crops) is
the store's encoder here: these recipes train what sits on top of it, on frozen features.
"""

from __future__ import annotations

from egofeat.recipes import Recipe, Setting, register_recipe

REPO = "epic-kitchens/C1-Action-Recognition-TSN-TRN-TSM"
FROZEN = ("egofeat trains the head on frozen features; C1 fine-tunes the ImageNet/Kinetics "
          "ResNet-50 under it")


def _config(model: str, key: str) -> str:
    return f"{REPO} configs/{model}_rgb.yaml ({key})"


def _training(model: str, batch_size: int) -> tuple[Setting, ...]:
    """The optimisation of the C1 configs (the same for the three models but the batch size)."""
    return (
        Setting("trainer.optimizer", "sgd", _config(model, "learning.optimizer.type")),
        Setting("trainer.momentum", 0.9, _config(model, "learning.optimizer.momentum")),
        Setting("trainer.lr", 0.01, _config(model, "learning.lr"), note=FROZEN),
        Setting("trainer.weight_decay", 5e-4, _config(model, "learning.optimizer.weight_decay")),
        Setting("trainer.decay_all_parameters", False, f"{REPO} src/models/tsn.py (get_optim_policies: "
                "decay_mult 0 for biases and BN)",
                note="C1 also doubles the learning rate of biases (lr_mult 2); egofeat has one rate"),
        Setting("trainer.schedule", "step", _config(model, "learning.lr_scheduler.type: StepLR")),
        Setting("trainer.decay_epochs", (20, 40), _config(model, "learning.lr_scheduler.epochs")),
        Setting("trainer.decay_rate", 0.1, _config(model, "learning.lr_scheduler.gamma")),
        Setting("trainer.step_on_epochs", True, f"{REPO} src/systems.py (MultiStepLR, stepped once per epoch)"),
        Setting("trainer.warmup_epochs", 0, _config(model, "learning: no warm-up")),
        Setting("trainer.epochs", 80, _config(model, "trainer.max_epochs")),
        Setting("trainer.batch_size", batch_size, _config(model, "learning.batch_size")),
        Setting("trainer.grad_clip", 20.0, _config(model, "trainer.gradient_clip_val")),
        Setting("trainer.patience", None, f"{REPO} src/train.py (ModelCheckpoint(monitor=None): no early stop)"),
        Setting("trainer.restore_best", False, f"{REPO} src/train.py (ModelCheckpoint(monitor=None): the last "
                "epoch's weights are the result)"),
        Setting("trainer.seed", 42, _config(model, "seed")),
        Setting("trainer.tasks", ("verb", "noun"), f"{REPO} src/systems.py (one 397-way layer split into "
                "97 verbs and 300 nouns; loss = mean of the two cross-entropies)",
                note="egofeat has one linear layer per task: the same function as one layer split in two"),
    )


def _frames(model: str) -> tuple[Setting, ...]:
    return (
        Setting("head.bins", 8, _config(model, "data.frame_count"),
                note="C1 draws a random frame in each of 8 segments of the native frames; egofeat draws one "
                     "of the K frames stored per bin (extract with --frames 8 --sampling oversampled "
                     "--per-bin K; with K = 1 every epoch sees the same 8 frames)"),
        Setting("head.dropout", 0.7, _config(model, "model.dropout"),
                note="in C1 it replaces the backbone's last layer, before the per-frame new_fc"),
        Setting("head.init_std", 0.001, f"{REPO} src/models/tsn.py (_initialise_layer: new_fc weights "
                "N(0, 0.001), bias 0)"),
    )


register_recipe(Recipe(
    name="tsn-c1",
    command="train",
    summary="TSN as the EPIC-KITCHENS C1 baseline: 8 segments, dropout 0.7, average consensus, SGD 80 epochs",
    reference=f"{REPO} configs/tsn_rgb.yaml",
    settings=(
        Setting("head.name", "tsn", _config("tsn", "model.type: TSN; consensus_type avg in src/systems.py")),
        *_frames("tsn"),
        *_training("tsn", 128),
    ),
))

register_recipe(Recipe(
    name="trn-c1",
    command="train",
    summary="Multi-scale TRN as the EPIC-KITCHENS C1 baseline: 8 segments, 256-d bottleneck, 3 relations per scale",
    reference=f"{REPO} configs/trn_rgb.yaml",
    settings=(
        Setting("head.name", "trn", _config("trn", "model.type: MTRN")),
        *_frames("trn"),
        Setting("head.bottleneck", 256, _config("trn", "model.backbone_dim")),
        Setting("head.hidden", 256, f"{REPO} src/ops/trn.py (RelationModuleMultiScale num_bottleneck)"),
        Setting("head.max_subsets", 3, f"{REPO} src/ops/trn.py (subsample_num)"),
        Setting("head.eval_subsets", 3, f"{REPO} src/ops/trn.py (subsample_num; np.random.choice in every "
                "forward pass, evaluation included)",
                note="C1 draws the 3 relations of each scale anew at every evaluation pass (its scores are "
                     "random); egofeat draws them once from head.eval_seed, so a checkpoint scores the same "
                     "everywhere (same count and distribution)"),
        *_training("trn", 128),
    ),
))

register_recipe(Recipe(
    name="tsm-c1-features",
    command="train",
    summary="The nearest feature-level form of the C1 TSM baseline: a shift-MLP over frozen features, "
            "not TSM (whose shift acts inside the backbone's residual blocks)",
    reference=f"{REPO} configs/tsm_rgb.yaml",
    settings=(
        Setting("head.name", "tsm", _config("tsm", "model.type: TSM"),
                note="TSM shifts 1/8 + 1/8 of the channels of every ResNet block's residual branch "
                     "(src/ops/temporal_shift.py); frozen final features have no such maps, so egofeat "
                     "shifts a projection of them inside residual MLP blocks (a TSM-style head)"),
        *_frames("tsm"),
        Setting("head.fold_div", 8, _config("tsm", "model.shift_div")),
        Setting("head.block_dropout", 0.5, "egofeat: egofeat/heads/models.py (TSMHead's shift-MLP blocks)",
                note="C1's TSM has no such blocks; this is egofeat's default inside them"),
        *_training("tsm", 64),
    ),
))
