from .fixtures import g3_dir, g3_export, g3_lora_run, g3_readable_dir  # noqa: F401
