"""Train or evaluate a Detectron2 model with the tricks, like Detectron2's ``tools/train_net.py``.

    python -m d2_ext.train_net --config-file d2_ext/configs/faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml \\
        --scenes-root data/fashion_scenes [--num-gpus N] [--resume] [--eval-only] [KEY VALUE ...]

``--scenes-root`` (default ``$FASHION_SCENES_ROOT``) registers the fashion scenes as ``fashion_scenes_train`` /
``fashion_scenes_val`` (and ``*_sem_seg``), writing them first with ``plugins.data.scenes.generate_scenes``
if the folder holds none. Without a GPU, ``MODEL.DEVICE`` falls back to ``cpu``. A bad config (unknown key,
value out of range), a backbone checkpoint that does not fit, missing data or a non-finite loss exits with
status 2 and a one-line message; ``--debug`` shows the traceback instead.

Evaluation is Detectron2's ``tools/train_net.py``'s: ``--eval-only`` evaluates ``MODEL.WEIGHTS`` (or the last
checkpoint with ``--resume``), and with ``TEST.AUG.ENABLED`` also ``GeneralizedRCNNWithTTA`` (results
``"<task>_TTA"``, files in ``OUTPUT_DIR/inference_TTA``), as does the end of training; ``TEST.EXPECTED_RESULTS``
(``[[task, metric, value, tolerance], ...]``) are then checked by Detectron2's ``verify_results``, which exits
with status 1 when a value is off.

Several processes: ``--num-gpus N`` (Detectron2's ``launch``, CUDA only in v0.6), or ``torchrun
--nproc_per_node N -m d2_ext.train_net ...``, which also runs on the CPU (gloo). ``SOLVER.IMS_PER_BATCH`` is the
global batch either way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile

import torch
import torch.distributed as dist
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from plugins.runtime.distributed import setup_process_group, teardown_process_group

from .config import add_tricks_config, validate_tricks_config
from .data import register_fashion_scenes
from .recipe import apply_recipe, load_recipe
from .trainer import Trainer, verify_results

__all__ = ["SCENES_ENV_VAR", "build_parser", "load_config", "main"]

SCENES_ENV_VAR = "FASHION_SCENES_ROOT"
logger = logging.getLogger("d2_ext")


def build_parser():
    """Detectron2's ``default_argument_parser`` plus the fashion-scenes and ``--debug`` flags."""
    parser = default_argument_parser()
    parser.prog = "python -m d2_ext.train_net"
    scenes = parser.add_argument_group("fashion scenes")
    scenes.add_argument(
        "--scenes-root",
        default=os.environ.get(SCENES_ENV_VAR, ""),
        metavar="DIR",
        help=f"register the fashion scenes under DIR, generating them if absent "
        f"(default: ${SCENES_ENV_VAR}, else none)",
    )
    scenes.add_argument(
        "--scenes-train", type=int, default=2000, help="train scenes to generate (default 2000)"
    )
    scenes.add_argument("--scenes-val", type=int, default=500, help="val scenes to generate (default 500)")
    scenes.add_argument("--scenes-size", type=int, default=128, help="scene side in pixels (default 128)")
    scenes.add_argument("--scenes-seed", type=int, default=0, help="seed of the generated scenes (default 0)")
    parser.add_argument("--recipe", default=None, metavar="NAME_OR_YAML",
                        help="lay a plugins.recipe.Recipe (preset or yaml) over the config: TRICKS.RECIPE; KEY VALUE "
                             "pairs on the command line still win (d2_ext.recipe lists what each field sets)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of config errors")
    return parser


def load_config(args, datasets_registered: bool = True):
    """Detectron2's defaults + ``cfg.TRICKS`` + ``--config-file`` + the ``KEY VALUE`` overrides, the recipe of
    ``TRICKS.RECIPE`` / ``--recipe`` laid over them (``d2_ext.apply_recipe``; the overrides still win), validated.

    ``datasets_registered=False`` (the command's early check) checks the recipe without resolving its epochs,
    which needs the registered training set's size (or ``TRICKS.ITERS_PER_EPOCH``)."""
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.merge_from_file(args.config_file)
    opts = (["TRICKS.RECIPE", args.recipe] if getattr(args, "recipe", None) else []) + list(args.opts or [])
    cfg.merge_from_list(opts)
    if cfg.TRICKS.RECIPE and not datasets_registered and cfg.TRICKS.ITERS_PER_EPOCH == 0:
        load_recipe(cfg.TRICKS.RECIPE)
    else:
        apply_recipe(cfg, opts)
    validate_tricks_config(cfg)
    _check_solver_and_classes(cfg)
    _check_test(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("no CUDA device: MODEL.DEVICE %s -> cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def _check_solver_and_classes(cfg) -> None:
    """ValueError naming ``SOLVER.BASE_LR`` / ``SOLVER.IMS_PER_BATCH`` / ``MODEL.ROI_HEADS.NUM_CLASSES`` when out of
    range (they fail late otherwise, the last one with an IndexError inside the box head)."""
    lr, batch = cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"cfg.SOLVER.BASE_LR={lr!r} is not accepted; accepted: a finite number > 0")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(
            f"cfg.SOLVER.IMS_PER_BATCH={batch!r} is not accepted; accepted: an int >= 1 (the global batch)"
        )
    classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(
            f"cfg.MODEL.ROI_HEADS.NUM_CLASSES={classes!r} is not accepted; accepted: an int >= 1 (foreground classes)"
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_test(cfg) -> None:
    """ValueError naming ``TEST.AUG.*`` / ``TEST.EXPECTED_RESULTS`` when Detectron2 would fail on them later (an
    assertion in ``GeneralizedRCNNWithTTA``, a KeyError or an unpacking error in ``verify_results``)."""
    aug = cfg.TEST.AUG
    if aug.ENABLED:
        if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
            raise ValueError(
                f"cfg.TEST.AUG.ENABLED=True is not accepted with MODEL.META_ARCHITECTURE="
                f"{cfg.MODEL.META_ARCHITECTURE!r}; accepted: 'GeneralizedRCNN' (Detectron2's TTA)"
            )
        for key in ("KEYPOINT_ON", "LOAD_PROPOSALS"):
            if cfg.MODEL[key]:
                raise ValueError(
                    f"cfg.TEST.AUG.ENABLED=True is not accepted with MODEL.{key}=True; accepted: "
                    f"MODEL.{key} False (Detectron2's TTA does not support it)"
                )
        sizes = tuple(aug.MIN_SIZES) if isinstance(aug.MIN_SIZES, list | tuple) else ()
        if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
            raise ValueError(f"cfg.TEST.AUG.MIN_SIZES={aug.MIN_SIZES!r} is not accepted; accepted: ints > 0")
        if isinstance(aug.MAX_SIZE, bool) or not isinstance(aug.MAX_SIZE, int) or aug.MAX_SIZE < 1:
            raise ValueError(f"cfg.TEST.AUG.MAX_SIZE={aug.MAX_SIZE!r} is not accepted; accepted: an int > 0")
    expected = cfg.TEST.EXPECTED_RESULTS
    for entry in expected:
        ok = isinstance(entry, list | tuple) and len(entry) == 4
        ok = ok and all(isinstance(v, str) for v in entry[:2]) and all(_is_number(v) for v in entry[2:])
        if not ok or entry[3] < 0:
            raise ValueError(
                f"cfg.TEST.EXPECTED_RESULTS entry {entry!r} is not accepted; accepted: "
                "[task, metric, expected value, tolerance >= 0], e.g. ['bbox', 'AP', 38.5, 0.2]"
            )
    if len(expected) and not len(cfg.DATASETS.TEST):
        raise ValueError(
            "cfg.TEST.EXPECTED_RESULTS is set with an empty DATASETS.TEST; accepted: a test dataset "
            "to evaluate, or no EXPECTED_RESULTS"
        )


def _check_output_dir(cfg) -> None:
    """OSError naming ``OUTPUT_DIR`` if it cannot be created, or (on rank 0, the only writer) written."""
    try:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        if int(os.environ.get("RANK", "0")) == 0:
            tempfile.NamedTemporaryFile(dir=cfg.OUTPUT_DIR, prefix=".write-test-").close()
    except OSError as error:
        raise OSError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR!r}: cannot write there ({error.strerror or error})"
        ) from None


def _ensure_scenes(args) -> None:
    annotations = os.path.join(args.scenes_root, "annotations", "instances_train.json")
    if os.path.isfile(annotations):
        return
    from plugins.data.scenes import generate_scenes  # deferred: only needed to write new scenes

    generate_scenes(
        args.scenes_root,
        train=args.scenes_train,
        val=args.scenes_val,
        image_size=args.scenes_size,
        seed=args.scenes_seed,
    )


@contextlib.contextmanager
def _earlier_config_kept_on_failure(output_dir: str):
    """``default_setup`` overwrites ``OUTPUT_DIR/config.yaml``; if setting up then fails (a backbone that does
    not fit, missing data), put the earlier run's file back, atomically, so a failed command loses nothing."""
    path = os.path.join(output_dir, "config.yaml")
    earlier = None
    if comm.is_main_process() and os.path.isfile(path):
        with open(path, "rb") as f:
            earlier = f.read()
    try:
        yield
    except BaseException:
        if earlier is not None:
            with open(path + ".tmp", "wb") as f:
                f.write(earlier)
            os.replace(path + ".tmp", path)
        raise


def main(args):
    """Run in every worker: register the data, build the config, then train or evaluate."""
    if args.scenes_root:
        register_fashion_scenes(args.scenes_root)
    cfg = load_config(args)
    with _earlier_config_kept_on_failure(cfg.OUTPUT_DIR):
        default_setup(cfg, args)
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="d2_ext")
        if args.eval_only:
            model = Trainer.build_model(cfg)
            DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
                cfg.MODEL.WEIGHTS, resume=args.resume
            )
        else:
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=args.resume)
    if args.eval_only:  # as Detectron2's tools/train_net.py
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    return trainer.train()  # TTA and verify_results at its end: d2_ext.Trainer


def cli(argv=None) -> None:
    """Command-line entry point: check the config, write the scenes if needed, then launch ``main``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("--config-file is required")
    try:
        cfg = load_config(args, datasets_registered=False)
    except (
        KeyError,
        ValueError,
        OSError,
        AssertionError,
    ) as error:  # yacs asserts on unknown KEY VALUE pairs
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        parser.exit(2, f"{parser.prog}: error: bad config {args.config_file}: {message}\n")
    try:
        _check_output_dir(cfg)
        if args.scenes_root:
            _ensure_scenes(args)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
            _init_torchrun()
            main(args)
        else:
            launch(
                main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args,),
            )
    except (ValueError, KeyError, OSError) as error:  # a backbone that does not fit, missing or bad data
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    except FloatingPointError as error:  # Detectron2 checks losses and boxes before the optimizer step
        if args.debug:
            raise
        parser.exit(
            2,
            f"{parser.prog}: error: non-finite values in training ({str(error).splitlines()[0]}): "
            f"training stopped before that update; {_last_checkpoint(cfg)}. Lower SOLVER.BASE_LR "
            "or check the data.\n",
        )
    finally:
        teardown_process_group()


def _last_checkpoint(cfg) -> str:
    path = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if not os.path.isfile(path):
        return "no checkpoint was written"
    with open(path) as handle:
        return f"the last checkpoint, {os.path.join(cfg.OUTPUT_DIR, handle.read().strip())}, keeps the last good state"


def _init_torchrun() -> None:
    """The process group of a ``torchrun`` launch (:func:`plugins.runtime.distributed.setup_process_group`: env://,
    gloo without CUDA) and Detectron2's local group."""
    setup_process_group()
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    for machine in range(dist.get_world_size() // local_size):  # every process creates every group
        group = dist.new_group(list(range(machine * local_size, (machine + 1) * local_size)))
        if machine == dist.get_rank() // local_size:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()


if __name__ == "__main__":
    cli(sys.argv[1:])
