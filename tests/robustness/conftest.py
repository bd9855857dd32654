from ..run.test_run import squad_files  # noqa: F401  (the run tests' data fixture)
from ..serve.serve_fixtures import llm_engine, llm_server, readable_llm_dir  # noqa: F401
