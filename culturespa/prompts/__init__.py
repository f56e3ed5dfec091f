"""Prompt construction from the templates in ``conf/templates``: one place renders every chat culturespa sends."""
