"""Multimodal distillation (Radevski et al., ICCV 2023) as a recipe for `egofeat distill`.

Facts from gorjanradevski/multimodal-distillation (commit 5444c66): the config defaults
(``src/utils/setup.py``), the distillation loop (``src/patient_distill.py``), its schedule
(``src/utils/train_utils.py``), the loss (``src/modelling/distiller.py``), the student
(``src/modelling/models.py``) and the checkpoint selection (``src/utils/evaluation.py``). The
settings are the student run's (the layout of `egofeat distill --config`).
"""

from __future__ import annotations

from egofeat.recipes import Recipe, Setting, register_recipe

REPO = "gorjanradevski/multimodal-distillation"
SETUP = f"{REPO} src/utils/setup.py"
LOOP = f"{REPO} src/patient_distill.py"

register_recipe(Recipe(
    name="mmdistill-iccv23",
    command="distill",
    summary="Multimodal distillation: pure KL to the teachers' mean logits, AdamW 1e-4, 2 warm-up epochs "
            "then linear decay, clip 5, the best epoch by val action accuracy",
    reference=f"{REPO} src/patient_distill.py",
    settings=(
        Setting("head.name", "linear", f"{REPO} src/modelling/models.py (SwinModel: one nn.Linear per "
                "task on the mean-pooled backbone)",
                note="the original fine-tunes the whole Kinetics-pretrained Swin-T student; egofeat trains "
                     "the linear layers on frozen features of the student's stream"),
        Setting("head.dropout", 0.0, f"{REPO} src/modelling/models.py (no dropout before the heads)"),
        Setting("task.temperature", 1.0, f"{SETUP} (_C.TEMPERATURE)"),
        Setting("task.w_distill", 1.0, f"{SETUP} (_C.LOSS_WEIGHTS.DISTILLATION)"),
        Setting("task.w_gt", 0.0, f"{SETUP} (_C.LOSS_WEIGHTS.GROUND_TRUTH)"),
        Setting("task.weighting", "mean", f"{SETUP} (_C.DISTILLATION_WEIGHTING_SCHEME None: uniform "
                "teacher weights)",
                note="'dataset' is the reference's full-dataset scheme: egofeat calibrates it on the train "
                     "rows every teacher kept out (train them with data.reserve), as the reference uses the "
                     "rows outside its RGB teacher's train_indices.json"),
        Setting("task.tau_w", 1.0, f"{SETUP} (_C.WEIGHTS_TEMPERATURE)"),
        Setting("trainer.optimizer", "adamw", f"{LOOP} (optim.AdamW)"),
        Setting("trainer.lr", 1e-4, f"{SETUP} (_C.LEARNING_RATE)",
                note="the rate fine-tunes a pretrained Swin-T; a head trained from scratch on frozen "
                     "features may need a larger one (the demo sets 1e-3)"),
        Setting("trainer.weight_decay", 1e-4, f"{SETUP} (_C.WEIGHT_DECAY)"),
        Setting("trainer.decay_all_parameters", True, f"{LOOP} (AdamW(student.parameters(), "
                "weight_decay=...): biases and norms decay too)"),
        Setting("trainer.schedule", "linear", f"{REPO} src/utils/train_utils.py "
                "(get_linear_schedule_with_warmup)"),
        Setting("trainer.warmup_epochs", 2.0, f"{SETUP} (_C.WARMUP_EPOCHS)",
                note="the reference counts len(train) // batch_size steps per epoch, egofeat the batches "
                     "it runs (the last one partial): its warm-up and decay end a few steps later"),
        Setting("trainer.warmup_lr", 0.0, f"{REPO} src/utils/train_utils.py (the rate rises from 0)"),
        Setting("trainer.min_lr_ratio", 0.0, f"{REPO} src/utils/train_utils.py (linear decay to 0 at the "
                "last step)"),
        Setting("trainer.step_on_epochs", False, f"{LOOP} (scheduler.step() after every batch)"),
        Setting("trainer.grad_clip", 5.0, f"{SETUP} (_C.CLIP_VAL)"),
        Setting("trainer.epochs", 20, f"{SETUP} (_C.EPOCHS)"),
        Setting("trainer.batch_size", 12, f"{SETUP} (_C.BATCH_SIZE)"),
        Setting("trainer.monitor", "val_action_top1", f"{REPO} src/utils/evaluation.py (EvaluatorEpic.is_best: "
                "action_acc, verb and noun both right)"),
        Setting("trainer.patience", None, f"{LOOP} (every epoch runs; no early stop)"),
        Setting("trainer.restore_best", True, f"{LOOP} (model_checkpoint.pt is saved when is_best())"),
        Setting("trainer.tasks", ("verb", "noun"), f"{SETUP} (_C.TOTAL_ACTIONS.VERB / NOUN for EPIC-KITCHENS)"),
    ),
))
