"""One module per runtime: each writes its artefact (fp32 and the reduced precisions it has, with the runtime's own
toolkit), reads back what the file holds, and builds the one runner that the export's check, ``eval``/``predict``
(:class:`swiftformer.artefacts.ArtefactModel`) and ``bench`` all run the artefact through.

Every runtime module has

- ``write(fused, example, out, precision="fp32", calibration=None, dynamic_batch=False) -> Path``: the fused model
  at ``example``'s shape, in ``precision`` (int8 calibrated on the ``calibration`` images);
- ``runner(path, threads=None, precision="fp32") -> Run``: images to logits, with the session settings every caller
  shares (``threads=None``: the runtime's default);
- ``stored_precision(path) -> str | None``: the precision the file itself holds (``None``: it does not say);

and where its runtime has them: ``embed_info``/``embedded_info`` (metadata kept inside the artefact),
``max_batch`` (the batch a program was planned for), ``run_as_checked`` (how to compile it as the check did),
``refusals`` (the exceptions its runtime raises for a file or input it refuses).

:mod:`swiftformer.formats` is the index, one row per format pointing at its module; :mod:`swiftformer.export`
stages, checks and moves an artefact whatever its runtime. A new runtime is a module here, a row there and a test.
"""
