"""EgoVLP's video-text objectives as recipes for `egofeat train --head retrieval`.

Facts from showlab/EgoVLP (its configs ``configs/ft/epic.json`` and ``configs/pt/egoclip.json``,
``model/loss.py``, ``model/model.py``, ``run/train_*.py``, ``data_loader/EpicKitchens_MIR_dataset.py``
and ``README.md``) and facebookresearch/EgoVLPv2 (``EgoVLPv2/configs/pt/egoclip.json``). EgoVLP
fine-tunes its video and text towers; egofeat trains the projections on frozen features, so
the recipes carry the settings of the objective, the projections and the optimiser loop.
"""

from __future__ import annotations

from egofeat.recipes import Recipe, Setting, register_recipe

REPO = "showlab/EgoVLP"
LOSS = f"{REPO} model/loss.py"
MODEL = f"{REPO} model/model.py"
FROZEN = ("the rate fine-tunes EgoVLP's video and text towers; egofeat trains only the projections "
          "on frozen features")


def _projections() -> tuple[Setting, ...]:
    return (
        Setting("head.name", "retrieval", f"{MODEL} (FrozenInTime: a video and a text tower, each with a "
                "projection into one space)",
                note="the towers are the store's encoders; egofeat trains the projections"),
        Setting("head.embed_dim", 256, f"{MODEL} (projection 'minimal': nn.Linear(768, 256))"),
        Setting("head.video_head", "linear", f"{MODEL} (vid_proj: nn.Linear)"),
        Setting("head.text_head", "relu-linear", f"{MODEL} (txt_proj: nn.ReLU, nn.Linear)"),
    )


def _optimiser(run: str, config: str) -> tuple[Setting, ...]:
    return (
        Setting("trainer.optimizer", "adamw", f"{REPO} run/{run} (transformers.AdamW)"),
        Setting("trainer.lr", 3e-5, f"{REPO} {config} (optimizer.args.lr)", note=FROZEN),
        Setting("trainer.weight_decay", 0.0, f"{REPO} {config} (none given: transformers.AdamW's default 0)",
                note="transformers.AdamW's eps is 1e-6, torch's (egofeat's) 1e-8"),
        Setting("trainer.schedule", "constant", f"{REPO} {config} (no lr_scheduler)"),
        Setting("trainer.warmup_epochs", 0.0, f"{REPO} {config} (no lr_scheduler)"),
        Setting("trainer.grad_clip", None, f"{REPO} trainer/ (no gradient clipping)"),
        Setting("trainer.patience", None, f"{REPO} base/base_trainer.py (Multi_BaseTrainer_dist: the early "
                "stop is commented out)",
                note="EgoVLP keeps the epoch of the lowest val loss; egofeat the best val MIR mAP "
                     "(the retrieval task's monitor)"),
    )


register_recipe(Recipe(
    name="egovlp-mimm",
    command="train",
    summary="EgoVLP+ EK-100 MIR fine-tuning objective: adaptive MI-MM (margin 0.4 x relevancy), "
            "positives above relevancy 0.1",
    reference=f"{REPO} README.md (EgoVLP+: Adaptive-MI-MM + Dual-softmax); configs/ft/epic.json",
    settings=(
        *_projections(),
        Setting("head.loss", "mimm", f"{REPO} configs/ft/epic.json (loss.type MaxMarginRankingLoss)"),
        Setting("head.adaptive_margin", True, f"{REPO} README.md (EgoVLP+: fine-tuning w/ Adaptive-MI-MM); "
                "model/loss.py (AdaptiveMaxMarginRankingLoss: margin x relevancy of the positive)",
                note="EgoVLP's released configs/ft/epic.json trains the plain MI-MM (margin 0.2; "
                     "trainer/trainer_epic.py keeps the weighted call commented out); the adaptive form is "
                     "its EgoVLP+ challenge entry, and EgoVLPv2's configs/ft/epic.json (margin 0.2)"),
        Setting("head.margin", 0.4, f"{LOSS} (AdaptiveMaxMarginRankingLoss margin=0.4)",
                note="egofeat's default is the plain MI-MM margin 0.2"),
        Setting("head.positive_threshold", 0.1, f"{REPO} data_loader/EpicKitchens_MIR_dataset.py "
                "(self.relevancy = 0.1)"),
        *_optimiser("train_epic.py", "configs/ft/epic.json"),
        Setting("trainer.epochs", 100, f"{REPO} configs/ft/epic.json (trainer.epochs)"),
        Setting("trainer.batch_size", 32, f"{REPO} configs/ft/epic.json (batch_size 4 per GPU x n_gpu 8, "
                "all-gathered before the loss)"),
    ),
))

register_recipe(Recipe(
    name="egovlp-egonce",
    command="train",
    summary="EgoVLP pretraining objective: EgoNCE (action-aware positives, same-chunk negatives), "
            "temperature 0.05",
    reference=f"{REPO} configs/pt/egoclip.json; model/loss.py (EgoNCE)",
    settings=(
        *_projections(),
        Setting("head.loss", "egonce", f"{REPO} configs/pt/egoclip.json (loss.type EgoNCE)"),
        Setting("head.temperature", 0.05, f"{LOSS} (EgoNCE temperature=0.05)"),
        Setting("head.same_video_negatives", True, "facebookresearch/EgoVLPv2 EgoVLPv2/configs/pt/egoclip.json "
                "(neg_param 60)",
                note="EgoVLP's own configs/pt/egoclip.json sets neg_param false, though its code supports "
                     "the scene-aware negatives its paper describes"),
        Setting("head.chunk_sec", 60.0, "facebookresearch/EgoVLPv2 EgoVLPv2/configs/pt/egoclip.json "
                "(neg_param 60: negatives from the same 60 s chunk)"),
        *_optimiser("train_egoclip.py", "configs/pt/egoclip.json"),
        Setting("trainer.epochs", 10, f"{REPO} configs/pt/egoclip.json (trainer.epochs)"),
        Setting("trainer.batch_size", 128, f"{REPO} configs/pt/egoclip.json (batch_size 16 per GPU x n_gpu 8, "
                "all-gathered before the loss)"),
    ),
))
