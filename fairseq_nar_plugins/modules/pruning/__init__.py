"""Dynamic block pruning (DEER, paper 002 section 3.3) and the export of a pruned model at one size.

* :mod:`.block_pruning`: learnable importance scores, masks at several sizes, the regulariser (``--prune``);
* :mod:`.pruned_export`: physically smaller backbone weights at one size (``scripts/export_pruned.py``).

Used by deer.
"""
