"""masterkey's research wing: the paper's experiments, their analysis plans and statistics, and the result cards.

It sits on top of the library core (the bank format, Hub I/O, extraction, mapping, injection, the keys and their
fitting, training, bank publishing) and may import any of it; the core never imports the wing
(``tests/test_layers.py`` keeps it so).

- :mod:`masterkey.research.experiments`: the grid runner, one module per experiment, statistics, tables, plots;
- :mod:`masterkey.research.plans`: analysis plans committed before any test result, and the Holm correction;
- :mod:`masterkey.research.verdicts`: each planned experiment's verdict, worded by its plan's rules;
- :mod:`masterkey.research.cards` and :mod:`masterkey.research.pages`: the Hub cards and the results pages, built
  from the experiments' results.
"""
