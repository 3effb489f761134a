"""``node-agent fleet``: the operator's commands for the whole farm, a Batch pool and
its Flamenco Manager at once (status, prune, heal, scale).

Operator-side only: installed with the ``fleet`` extra (``azure-batch``,
``azure-identity``), never shipped in the node's application package
(``packaging/build`` leaves this package out), and never imported on the node's path
(``node_agent.cli`` imports it only when the operator runs ``node-agent fleet``).

Pure modules decide: ``model`` (what was observed, and which worker is a node's),
``status``, ``cleanup`` (prune and heal) and ``scaling``. Thin edges do the I/O:
``batch`` (the Batch service, through the SDK), ``flamenco`` (the Manager),
``observe`` (one snapshot of both), ``scaler`` (a scaling round and its memory) and
``command`` (the command line).
"""
