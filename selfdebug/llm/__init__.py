"""Models and prompting: prompts/extract (pure), tiny_model (local test model),
generate (vLLM inside Ray Data via ``ray.data.llm``), engine_pool (one vLLM pool shared by
several operators), teacher (OpenAI-compatible API).

Submodules are imported explicitly (``from selfdebug.llm.prompts import ...``): importing
this package stays cheap and pulls in neither vLLM nor Ray.
"""
