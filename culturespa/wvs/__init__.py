"""The reference data CultureSPA works from: the World Values Survey (questions, topics, answer shares, cultures)
and the question record every stage shares; ``fetch`` puts the data in place (``make data``)."""
