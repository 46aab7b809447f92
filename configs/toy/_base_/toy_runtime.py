# What every toy config sets the same way, whichever toolbox runs it (mmdet, mmseg, mmpretrain).
# Listed after that toolbox's default_runtime.py, and holding none of its keys: mmengine refuses
# a key that two bases both set, so default_hooks, env_cfg, the visualizer, the log settings
# and randomness stay the toolbox's, as each config adjusts them.
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite
# (mmelsa/engine/runner.py); mmdet's, mmseg's and mmpretrain's own tools build it from this key
# too.
runner_type = 'SafeRunner'
# Validate before training: the untrained model's metrics are the contrast in the toy summary
# and the first point of its curves (tools/analysis_tools/toy_report.py).
custom_hooks = [dict(type='ValidateBeforeTrainHook')]
