"""One reader per annotation format, each ending in :func:`masklab.data.target.make_target`."""
