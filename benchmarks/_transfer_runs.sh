# Sourced by benchmarks/transfer_domain.sh and transfer_curve.sh: the study's Detectron2 Faster R-CNN and
# MMSegmentation FCN transfer runs (plugins.reproduce.study: batch 4, warmup 10 %, detector steps at 75 % and
# 90 %, poly FCN, seed 0), each skipped when its output exists.
#   d2_transfer OUT SCENES BACKBONE ITERS LR MEAN STD LOG
#   seg_transfer OUT SCENES BACKBONE ITERS LR MEAN STD LOG       (MEAN / STD: "[r, g, b]" on 0..255)
d2_transfer() {
  local out="$1" scenes="$2" backbone="$3" iters="$4" lr="$5" mean="$6" std="$7" log="$8"
  [ -f "$out/metrics.json" ] || .venv/bin/python -m d2_ext.train_net \
      --config-file d2_ext/configs/faster_rcnn_timm_R_26n_D_FPN_baseline_fashion_scenes.yaml --scenes-root "$scenes" \
      OUTPUT_DIR "$out" TRICKS.TIMM.CHECKPOINT "$backbone" SOLVER.MAX_ITER "$iters" \
      SOLVER.STEPS "($((iters * 3 / 4)),$((iters * 9 / 10)))" SOLVER.WARMUP_ITERS $((iters / 10)) \
      SOLVER.IMS_PER_BATCH 4 SOLVER.BASE_LR "$lr" SOLVER.CHECKPOINT_PERIOD 100000 TEST.EVAL_PERIOD 0 \
      DATALOADER.NUM_WORKERS 0 MODEL.PIXEL_MEAN "$mean" MODEL.PIXEL_STD "$std" SEED 0 > "$log" 2>&1
}
seg_transfer() {
  local out="$1" scenes="$2" backbone="$3" iters="$4" lr="$5" mean="$6" std="$7" log="$8"
  [ -n "$(find "$out" -name scalars.json 2>/dev/null)" ] || FASHION_SCENES_ROOT="$scenes/" .venv/bin/python -m \
      mm_ext.train mm_ext/configs/fcn_timm-r26nd-d8_baseline_fashion-scenes.py --work-dir "$out" --cfg-options \
      model.backbone.checkpoint="$backbone" train_cfg.max_iters="$iters" train_cfg.val_interval="$iters" \
      train_dataloader.batch_size=4 optim_wrapper.optimizer.lr="$lr" default_hooks.checkpoint.interval="$iters" \
      param_scheduler.0.end="$iters" "model.data_preprocessor.mean=${mean// /}" \
      "model.data_preprocessor.std=${std// /}" randomness.seed=0 > "$log" 2>&1
}
