import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "serve"))
from serve_fixtures import llm_engine, llm_server, readable_llm_dir  # noqa: E402,F401
