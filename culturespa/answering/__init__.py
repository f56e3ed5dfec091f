"""One resumable answer loop, shared by the answers stage (``generate/answers.py``) and evaluation.

``records``: the answer-record schema and its one builder; ``chunks``: the fixed resume chunks that make a resumed
file bitwise the uninterrupted one; ``shards``: the split of a file's questions into ``answers.shard=i/n``;
``loop``: fill one answers file through the engine, resuming its part file. It sits between the stages and the engine:
it imports ``infer``, ``prompts``, ``data`` and ``errors``, never a stage package.
"""
