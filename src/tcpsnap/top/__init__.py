"""``tcpsnap top``: the TCP table live in the terminal, or any moment of a recording.

- ``model``: the table as numpy arrays (marks from the compiled diff, filter, stable
  order, per-process groups) and the text of each line; no terminal;
- ``sources``: live snapshots in a worker thread (recorded too with ``--record``), or a
  recording's snapshots (replay);
- ``app``: the Textual view (needs the ``tui`` extra: ``pip install 'tcpsnap[tui]'``).
"""
