"""Step 2 of CultureSPA: answer questions culture-unaware, culture-aware or with cross-culture thinking.

The one resumable answer loop (``loop``, ``records``, ``chunks``, ``shards``) serves both the answers stage (``stage``,
``merge``) and evaluation; the loop imports ``infer``, ``prompts``, ``data`` and ``errors``, never a stage module.
"""
