"""fairseq-nar-plugins."""
