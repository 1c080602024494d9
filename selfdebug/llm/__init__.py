"""Models and prompting: prompts/extract (pure), tiny_model (local test model), config (the
``engine`` and ``sampling`` sections), engine_pool (`EnginePool`: vLLM engines as Ray actors,
for Ray Data stages and plain callers), weights (in-place weight reloads), generate (a
``ray.data.llm`` batch stage for a separate model), teacher (OpenAI-compatible API).

Submodules are imported explicitly (``from selfdebug.llm.prompts import ...``): importing
this package stays cheap and pulls in neither vLLM nor Ray.
"""
