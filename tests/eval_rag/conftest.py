from ..serve.serve_fixtures import http, llm_engine, llm_server, readable_llm_dir  # noqa: F401
