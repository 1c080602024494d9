"""selfdebug: teach code LLMs to debug their own code (LeDex), every stage on Ray."""

__version__ = "0.1.0"
PIPELINE_VERSION = __version__
