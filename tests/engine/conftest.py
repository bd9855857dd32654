from ..export.fixtures import g3_dir, g3_export, g3_lora_run, g3_readable_dir  # noqa: F401
from ..serve.serve_fixtures import http, llm_engine, llm_server, readable_llm_dir  # noqa: F401
