"""`train`: train one detector (optionally distilled) with progress bars and a metrics table.

Every default comes from where the trainer declares it (`trainables.hyper`), so `train` and a
sweep trial with the same knobs train the same model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from trainables.hyper import TeacherSpec, TrainConfig, TrainKnobs


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="default",
                   help="'default' (the generated embedded set), a COCO-format directory "
                        "(data synth layout, or COCO 2017: annotations/ + train2017/ + val2017/) or a "
                        "YOLO-format data.yaml")
    p.add_argument("--train-subset", type=int, default=None, help="seeded subset of training images")
    p.add_argument("--val-subset", type=int, default=None, help="seeded subset of val images (thesis: 500/1000)")


def add_parser(sub) -> None:
    from trainables.kd.registry import KD_METHODS
    from trainables.models.family import ACTIVATIONS

    p = sub.add_parser("train", help="train a detector on a COCO-format data set")
    add_data_args(p)
    p.add_argument("--model", default=TrainKnobs.student, help="model size: n, s, m, l, x")
    p.add_argument("--epochs", type=int, default=TrainKnobs.epochs)
    p.add_argument("--img-size", type=int, default=TrainKnobs.img_size)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr-schedule", choices=["linear", "cosine"], default=TrainConfig.lr_schedule)
    p.add_argument("--init", default=TrainKnobs.student_init, help="'scratch' or a checkpoint to start from")
    p.add_argument("--freeze-backbone", action="store_true")
    p.add_argument("--activation", choices=ACTIVATIONS, default=TrainKnobs.activation,
                   help="the student's activation after every conv")
    p.add_argument("--seed", type=int, default=TrainKnobs.seed)
    p.add_argument("--device", default=TrainConfig.device, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=TrainConfig.workers, help="data loader processes")
    p.add_argument("--kd", default=TrainKnobs.kd_method, help=f"distillation method: {', '.join(KD_METHODS)}")
    p.add_argument("--teacher", default=None,
                   help="teacher: a model size (trained once and cached) or a checkpoint path")
    p.add_argument("--teacher-epochs", type=int, default=TeacherSpec.epochs, help="epochs of a teacher given by size")
    p.add_argument("--kd-factor", type=float, default=TrainKnobs.kd_factor, help="distillation factor")
    p.add_argument("--kd-off-last", type=int, default=TrainKnobs.kd_off_last_epochs,
                   help="switch distillation off for the last K epochs")
    p.add_argument("--kd-param", action="append", default=[], metavar="KNOB=VALUE",
                   help="a knob of the KD method itself, e.g. fm_nms=false (output), cwd_tau=2 (cwd); repeatable")
    p.add_argument("--prune-ratio", type=float, default=TrainKnobs.prune_ratio,
                   help="structured pruning: the share of channels removed before training (0: off)")
    p.add_argument("--prune-method", default=TrainKnobs.prune_method, help="l1, group-norm or bn-scale")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/train/<model>-e<epochs>)")
    p.set_defaults(run=run)


def load_data(args: argparse.Namespace):
    """(train, val) CocoDatasets for the --data argument."""
    from detection.coco import CocoDataset
    from orchestrator.datasets import embedded_default, splits_in

    root = embedded_default() if args.data == "default" else Path(args.data)
    splits = splits_in(root, train_subset=getattr(args, "train_subset", None), val_subset=args.val_subset)
    return CocoDataset(splits.train), CocoDataset(splits.val)


def _teacher(name: str, epochs: int) -> TeacherSpec:
    from trainables.models.family import SIZES

    return TeacherSpec(model=name, epochs=epochs) if name in SIZES else TeacherSpec(checkpoint=Path(name))


def run(args: argparse.Namespace) -> int:
    from common.errors import UserError
    from orchestrator._knobs import check_flag, parse_kd_params
    from orchestrator.console import console, progress, stdout
    from orchestrator.datasets import cache_dir
    from orchestrator.reports import history_table
    from trainables.kd.registry import KDConfigError
    from trainables.student import resolve_teacher, train_student

    knobs = TrainKnobs(student=args.model, student_init=args.init, freeze_backbone=args.freeze_backbone,
                       activation=args.activation, epochs=args.epochs, img_size=args.img_size, seed=args.seed, kd_method=args.kd,
                       teacher=args.teacher, kd_factor=args.kd_factor, kd_off_last_epochs=args.kd_off_last,
                       kd_params=parse_kd_params(args.kd, args.kd_param),
                       prune_ratio=check_flag("prune_ratio", args.prune_ratio, "--prune-ratio"),
                       prune_method=check_flag("prune_method", args.prune_method, "--prune-method"))
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs} (epochs: 0 is for sweeps that only export and "
                         f"time a checkpoint; `export --checkpoint` does that for one)")
    if knobs.distills and not args.teacher:
        raise KDConfigError(f"--kd {args.kd} needs --teacher (a model size or a checkpoint path)")
    train_data, val_data = load_data(args)
    base = TrainConfig(batch_size=args.batch_size, lr_schedule=args.lr_schedule, device=args.device,
                       torch_threads=args.threads, workers=args.workers)
    kd = f"-{args.kd}" if knobs.distills else ""
    out = args.out or Path("runs/train") / f"{args.model}{kd}-e{args.epochs}-{args.img_size}px-s{args.seed}"
    console.print(f"training YOLO-{args.model} on {len(train_data)} images for {args.epochs} epochs"
                  f"{f' with {args.kd} KD from teacher {args.teacher}' if kd else ''} -> {out}")
    with progress() as bar:
        teacher = None
        if knobs.distills:
            t_task = bar.add_task(f"teacher {args.teacher}", total=None, info="cached or training")
            teacher = resolve_teacher(_teacher(args.teacher, args.teacher_epochs), args.img_size, train_data, val_data, base, cache_dir(),
                                      on_epoch=lambda r, _c: bar.update(t_task, completed=r.epoch, total=r.epochs,
                                                                        info=f"mAP {r.metrics.get('map50_95', 0):.3f}"))
            bar.update(t_task, info=str(teacher))
        epochs = bar.add_task("epochs", total=args.epochs, info="")
        batches = bar.add_task("batches", total=None, info="")

        def on_batch(epoch, i, n, losses):
            bar.update(batches, completed=i, total=n,
                       info=f"epoch {epoch} " + " ".join(f"{k} {v:.4f}" for k, v in losses.items()))

        def on_epoch(result, _checkpoint):
            m = result.metrics
            bar.update(epochs, completed=result.epoch, info=f"mAP {m['map50_95']:.3f}" if m else "")

        result = train_student(knobs, train_data, val_data, out, base=base, teacher_checkpoint=teacher,
                               on_batch=on_batch, on_epoch=on_epoch)
    stdout.print(history_table(result.history, title=f"YOLO-{args.model}: {result.checkpoint}"))
    return 0
