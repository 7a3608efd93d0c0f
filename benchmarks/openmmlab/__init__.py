"""OpenMMLab runners: `task.framework=mmdet` (detection) and `task.framework=mmseg` (segmentation).

These train through mmengine's own `Runner` (mmdet 3.3 / mmseg 1.2 models, data pipelines and loops) with the
`sema` hook (`sema.integrations.mmengine.SwitchEMAHook`) doing the weight averaging, on the same procedural data
as the torchvision path, and return the same result.json record as the engine (docs/ARCHITECTURE.md).

    mmdet_runner.run_mmdet(cfg, run_dir)   # RetinaNet / FCOS / Mask R-CNN (task.model retinanet_*, fcos_*, ...)
    mmseg_runner.run_mmseg(cfg, run_dir)   # FCN / DeepLabV3 on ResNetV1c (task.model fcn_* / deeplabv3_*)
    common.py                              # optimizer + schedule mapping, the history hook, the result record

An interrupted run resumes when rerun, as the engine's runs do: from <run_dir>/mmengine/last_epoch.pth, written at
every epoch end (common.py says how); a failed run starts over, a completed one is skipped by the engine.

Install OpenMMLab first (mmcv must be compiled): bash scripts/install_openmmlab.sh .venv
Everything here imports mmengine/mmdet/mmseg inside functions, so importing this package costs nothing.
"""
