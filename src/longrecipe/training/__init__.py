"""``train(cfg)``, optimizers and schedules, strategies, callbacks and telemetry.

Import ``longrecipe.training.train.train`` directly; this package stays import-light so that
``training/deepspeed.py`` (DeepSpeed strategies) can be imported without Lightning's trainer.
"""
