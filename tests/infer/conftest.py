from ..serve.serve_fixtures import llm_engine, llm_server, readable_llm_dir  # noqa: F401
