"""embedpipe indexes in RAG frameworks: `langchain.py` (pip install 'embedpipe[langchain]') and
`llama_index.py` (pip install 'embedpipe[llamaindex]'), over every sink. `common.py` holds what
both share; only the adapter module you import imports its framework."""
