"""Read stage: what a model is, without reading its weights.

In: a source spec (a Hub organisation, search or id list through ``hub.HubSource``; a local
directory in Hub layout or the HF cache through ``sources.DirSource`` / ``HfCacheSource``).
Out: one ``ModelRecord`` per model (card fields from ``card``, config, file list, safetensors
tensor table from ``safetensors``) or a ``Failure``; and, per record, a ``RangeReader``
(``ranges.LocalReader`` or ``remote.HubReader``) that the sketch stage reads planned byte
ranges through. New weight formats (pickle, GGUF, packed quantised layouts) add a header
reader here. Nothing in this stage samples, compares or writes the graph.
"""
