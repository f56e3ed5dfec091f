"""Step 1 of CultureSPA: generate survey questions per WVS topic (``generate``), read pools (``pool``), filter them (``filter``, ``paper_filter``, ``options``, ``near_dup``)."""
