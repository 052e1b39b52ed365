"""The project's generated demo data and what the CPU demo run shows with it.

- ``scenes/``: the scenes by name (``shapes``: coloured shapes, the demo;
  ``glyphs``: letter textures, the inverse-scaling study), each drawing one
  example and writing its caption;
- ``generate``: a scene's data set as webdataset tar shards (cached, replaced
  atomically; ``python -m clipa_t5x.demo.generate``);
- ``data``: ``DemoData``, one data set at one location (its files, sources,
  class names), which ``tasks/demo.py`` registers SeqIO Tasks over;
- ``picture`` and ``resolutions``: the demo run's ``after_run`` hooks, the
  examples picture and the resolution table.

Nothing under ``clipa_t5x.data`` imports this package.
"""
