"""The LangGraph coding loop shared by the in-process and the container agents."""
